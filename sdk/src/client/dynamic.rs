//! Untyped access to any served resource, for callers that learn their
//! kinds at run time (manifests, the `skiff` CLI): [`ApiResource`]s come
//! from [`Discovery`], objects are JSON values.
//!
//! The typed [`super::Api`] is the better fit when the kind is known at
//! compile time; both go through the same [`Client`].

use bytes::{Bytes, BytesMut};
use http::{Method, Request, header};
use http_body_util::BodyExt;
use serde_json::Value;

use super::{Body, Client, DeleteParams, Error, ListParams, PatchType, collect};

/// What `kubectl` asks for to print a table: the server renders the rows.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// One served resource, as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiResource {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Lowercase plural: the URL segment.
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub categories: Vec<String>,
}

impl ApiResource {
    /// `v1`, `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pod`, `deployment.apps`: how kubectl names the kind when it reports
    /// on an object (`deployment.apps/web created`).
    pub fn kind_group(&self) -> String {
        let kind = self.kind.to_lowercase();
        if self.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", self.group)
        }
    }

    /// `pods`, `deployments.apps`: how the server names the resource in its
    /// messages.
    pub fn plural_group(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The collection path; `namespace` is ignored for cluster-scoped
    /// resources, and `None` means every namespace.
    pub fn collection(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }
}

/// Access to one resource, in one namespace or (lists and watches) all.
#[derive(Debug, Clone)]
pub struct DynamicApi {
    client: Client,
    res: ApiResource,
    namespace: Option<String>,
}

impl DynamicApi {
    /// `namespace` is ignored for cluster-scoped resources; `None` lists
    /// and watches every namespace.
    pub fn new(client: &Client, res: &ApiResource, namespace: Option<&str>) -> DynamicApi {
        DynamicApi {
            client: client.clone(),
            res: res.clone(),
            namespace: namespace.filter(|_| res.namespaced).map(str::to_string),
        }
    }

    pub fn resource(&self) -> &ApiResource {
        &self.res
    }

    fn item(&self, name: &str) -> String {
        format!("{}/{name}", self.res.collection(self.namespace.as_deref()))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        ct: &str,
        body: Bytes,
    ) -> Result<Value, Error> {
        self.client.request(method, path, ct, body).await
    }

    pub async fn get(&self, name: &str) -> Result<Value, Error> {
        self.call(
            Method::GET,
            &self.item(name),
            "application/json",
            Bytes::new(),
        )
        .await
    }

    /// `Ok(None)` for a 404.
    pub async fn get_opt(&self, name: &str) -> Result<Option<Value>, Error> {
        match self.get(name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every page of the list, items with their `apiVersion` and `kind`.
    pub async fn list(&self, params: &ListParams) -> Result<Vec<Value>, Error> {
        let mut params = params.clone();
        params.limit = params.limit.or(Some(500));
        let mut items = Vec::new();
        loop {
            let path = format!(
                "{}{}",
                self.res.collection(self.namespace.as_deref()),
                params.query(false)
            );
            let mut page = self
                .call(Method::GET, &path, "application/json", Bytes::new())
                .await?;
            for mut item in page["items"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default()
            {
                if let Some(o) = item.as_object_mut() {
                    o.entry("apiVersion")
                        .or_insert_with(|| self.res.api_version().into());
                    o.entry("kind")
                        .or_insert_with(|| self.res.kind.clone().into());
                }
                items.push(item);
            }
            match page["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                Some(c) => params.continue_token = Some(c.to_string()),
                None => return Ok(items),
            }
        }
    }

    /// A `meta.k8s.io/v1` Table of one object (`name`) or of the
    /// collection (every page, rows appended).
    pub async fn table(&self, name: Option<&str>, params: &ListParams) -> Result<Value, Error> {
        let mut params = params.clone();
        if name.is_none() {
            params.limit = params.limit.or(Some(500));
        }
        let mut table: Option<Value> = None;
        loop {
            let path = match name {
                Some(n) => self.item(n),
                None => format!(
                    "{}{}",
                    self.res.collection(self.namespace.as_deref()),
                    params.query(false)
                ),
            };
            let req = Request::builder()
                .method(Method::GET)
                .uri(&path)
                .header(header::ACCEPT, TABLE_ACCEPT)
                .body(Bytes::new())
                .map_err(|e| Error::Transport(e.to_string()))?;
            let resp = self.client.send(req).await?;
            let body = collect(resp.into_body(), 64 << 20).await?;
            let mut page: Value = serde_json::from_slice(&body).map_err(|e| Error::Decode {
                what: path.clone(),
                message: e.to_string(),
            })?;
            let cont = page["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            match &mut table {
                None => table = Some(page),
                Some(t) => {
                    let rows = page["rows"].as_array_mut().map(std::mem::take);
                    if let (Some(all), Some(rows)) = (t["rows"].as_array_mut(), rows) {
                        all.extend(rows);
                    }
                }
            }
            match cont {
                Some(c) if name.is_none() => params.continue_token = Some(c),
                _ => return Ok(table.unwrap_or_default()),
            }
        }
    }

    pub async fn create(&self, obj: &Value) -> Result<Value, Error> {
        let path = self.res.collection(self.namespace.as_deref());
        self.call(
            Method::POST,
            &path,
            "application/json",
            Bytes::from(obj.to_string()),
        )
        .await
    }

    /// Patches `name` (or its subresource `sub`: `scale`, `status`).
    pub async fn patch(
        &self,
        name: &str,
        sub: Option<&str>,
        kind: PatchType,
        patch: &Value,
    ) -> Result<Value, Error> {
        let mut path = self.item(name);
        if let Some(s) = sub {
            path = format!("{path}/{s}");
        }
        self.call(
            Method::PATCH,
            &path,
            kind.content_type(),
            Bytes::from(patch.to_string()),
        )
        .await
    }

    /// Deletes `name`: the server's answer (the object, or a Status), a 404
    /// as an error.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<Value, Error> {
        let body = serde_json::to_vec(params).map_err(|e| Error::Decode {
            what: "DeleteOptions".into(),
            message: e.to_string(),
        })?;
        self.call(
            Method::DELETE,
            &self.item(name),
            "application/json",
            Bytes::from(body),
        )
        .await
    }

    /// Starts a watch; with `table` each event's object is a Table of one
    /// row, as `kubectl get -w` asks.
    pub async fn watch(&self, params: &ListParams, table: bool) -> Result<RawWatch, Error> {
        let path = format!(
            "{}{}",
            self.res.collection(self.namespace.as_deref()),
            params.query(true)
        );
        let accept = if table {
            TABLE_ACCEPT
        } else {
            "application/json"
        };
        let req = Request::builder()
            .method(Method::GET)
            .uri(&path)
            .header(header::ACCEPT, accept)
            .body(Bytes::new())
            .map_err(|e| Error::Transport(e.to_string()))?;
        let resp = self.client.send(req).await?;
        Ok(RawWatch {
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }
}

/// The events of a watch as JSON: `(type, object)`.
pub struct RawWatch {
    body: Body,
    buf: BytesMut,
}

impl std::fmt::Debug for RawWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawWatch").finish_non_exhaustive()
    }
}

impl RawWatch {
    /// The next event; `Ok(None)` when the server ended the watch. An
    /// `ERROR` event is returned as [`Error::Api`].
    pub async fn next(&mut self) -> Result<Option<(String, Value)>, Error> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return decode_event(&line[..pos]).map(Some);
            }
            match self.body.frame().await {
                None => {
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    let rest = self.buf.split();
                    return decode_event(&rest).map(Some);
                }
                Some(Err(e)) => return Err(Error::Transport(format!("watch: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

fn decode_event(line: &[u8]) -> Result<(String, Value), Error> {
    let mut v: Value = serde_json::from_slice(line).map_err(|e| Error::Decode {
        what: "watch event".into(),
        message: e.to_string(),
    })?;
    let object = v["object"].take();
    match v["type"].as_str() {
        Some("ERROR") => Err(Error::Api(Box::new(
            serde_json::from_value(object).unwrap_or_default(),
        ))),
        Some(t) => Ok((t.to_string(), object)),
        None => Err(Error::Decode {
            what: "watch event".into(),
            message: "no type".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let deploy = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            namespaced: true,
            ..Default::default()
        };
        assert_eq!(deploy.kind_group(), "deployment.apps");
        assert_eq!(deploy.plural_group(), "deployments.apps");
        assert_eq!(
            deploy.collection(Some("web")),
            "/apis/apps/v1/namespaces/web/deployments"
        );
        assert_eq!(deploy.collection(None), "/apis/apps/v1/deployments");
        let node = ApiResource {
            version: "v1".into(),
            kind: "Node".into(),
            plural: "nodes".into(),
            ..Default::default()
        };
        assert_eq!(node.kind_group(), "node");
        assert_eq!(node.collection(Some("ignored")), "/api/v1/nodes");
    }
}
