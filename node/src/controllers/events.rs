//! Events: what a controller did or could not do, recorded as `v1` Events
//! on the object (what `kubectl describe` and `kubectl get events` show).
//! Repeats of the same event within its lifetime bump `count` instead of
//! creating another object, as client-go's recorder does.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{Metadata, Resource};
use parking_lot::Mutex;
use skiff_sdk::client::{Api, Client, PatchType};

/// (object uid, reason, message) → the event's name, namespace and count.
type Seen = HashMap<(String, String, String), (String, String, i32)>;

/// Records events as one component (`deployment-controller`, `kubelet`...).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    seen: Arc<Mutex<Seen>>,
}

/// A reference to `obj` for an event's `involvedObject`.
pub fn reference<K: Resource + Metadata<Ty = ObjectMeta>>(obj: &K) -> ObjectReference {
    let m = obj.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    pub fn new(client: &Client, component: &str) -> Recorder {
        Recorder {
            client: client.clone(),
            component: component.to_string(),
            host: None,
            seen: Arc::default(),
        }
    }

    /// Events from a node's agent name the node.
    pub fn on_host(mut self, host: &str) -> Recorder {
        self.host = Some(host.to_string());
        self
    }

    pub async fn normal(&self, obj: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(obj, "Normal", reason, message.into()).await
    }

    pub async fn warning(&self, obj: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(obj, "Warning", reason, message.into()).await
    }

    /// Records one event; failures are logged, never returned: an event is
    /// never worth failing the action it describes.
    pub async fn record(&self, obj: ObjectReference, kind: &str, reason: &str, message: String) {
        let ns = obj
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(&self.client, &ns);
        let now = now();
        let id = (
            obj.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.clone(),
        );
        let previous = self.seen.lock().get(&id).cloned();
        if let Some((name, event_ns, count)) = previous {
            let patch = serde_json::json!({
                "count": count + 1,
                "lastTimestamp": Time(now),
            });
            let events: Api<Event> = Api::namespaced(&self.client, &event_ns);
            if events.patch(&name, PatchType::Merge, &patch).await.is_ok() {
                self.seen.lock().insert(id, (name, event_ns, count + 1));
                return;
            }
        }
        let base = obj.name.clone().unwrap_or_else(|| "object".into());
        let name = format!("{base}.{:x}", now.as_nanosecond() as u64);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: obj,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(kind.to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            action: Some(reason.to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            ..Default::default()
        };
        match api.create(&event).await {
            Ok(_) => {
                let mut seen = self.seen.lock();
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(id, (name, ns, 1));
            }
            Err(e) => tracing::debug!(component = %self.component, "recording event: {e}"),
        }
    }
}

/// The current time as the API types carry it.
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    Timestamp::from_nanosecond(nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}
