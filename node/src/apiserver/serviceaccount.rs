//! What lets a pod talk to the API from inside the cluster, as Kubernetes
//! sets it up:
//!
//! - every namespace has a `default` ServiceAccount and the
//!   `kube-root-ca.crt` ConfigMap (the CA that signs the API's serving
//!   certificate). They are made when the namespace is created (here, at
//!   once, so a pod created right after its namespace is not refused), and
//!   kept by the controller in `controllers::serviceaccounts`;
//! - the ServiceAccount admission plugin: a pod runs as `default` unless it
//!   names an account, the account must exist, and unless
//!   `automountServiceAccountToken` says no, the pod gets the
//!   `kube-api-access-xxxxx` projected volume (a token bound to the pod,
//!   the CA bundle and the namespace) mounted read-only at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every container.

use serde_json::{Value, json};

use super::resources;
use super::status::ApiError;
use super::storage::Objects;

pub const DEFAULT_ACCOUNT: &str = "default";
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
/// What the kubelet asks for; the API server makes such a pod-bound token
/// valid for a year.
pub const TOKEN_SECONDS: i64 = 3607;
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The `default` ServiceAccount of `ns`.
pub fn default_account(ns: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": DEFAULT_ACCOUNT, "namespace": ns},
    })
}

/// The `kube-root-ca.crt` ConfigMap of `ns`.
pub fn root_ca_configmap(ns: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOT_CA_CONFIGMAP,
            "namespace": ns,
            "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
        },
        "data": {"ca.crt": ca_pem},
    })
}

/// Creates what a new namespace starts with, where it is absent.
pub async fn ensure_namespace_defaults(
    objects: &Objects,
    ns: &str,
    ca_pem: &str,
) -> anyhow::Result<()> {
    let accounts = resources::find("", "v1", "serviceaccounts").expect("served");
    let configmaps = resources::find("", "v1", "configmaps").expect("served");
    super::handlers::create_if_absent(objects, accounts, default_account(ns)).await?;
    super::handlers::create_if_absent(objects, configmaps, root_ca_configmap(ns, ca_pem)).await
}

/// The ServiceAccount admission plugin, on a pod being created in `ns`.
pub async fn admit(
    objects: &Objects,
    ns: &str,
    name: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    let spec = &mut pod["spec"];
    let account = [&spec["serviceAccountName"], &spec["serviceAccount"]]
        .into_iter()
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
        .unwrap_or(DEFAULT_ACCOUNT)
        .to_string();
    spec["serviceAccountName"] = json!(account);
    spec["serviceAccount"] = json!(account);
    let res = resources::find("", "v1", "serviceaccounts").expect("served");
    let key = res.key(Some(ns), &account);
    // The local view first, a quorum read before refusing (as for the
    // namespace).
    let Some(sa) = objects.get_known(&key).await? else {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
            ),
        ));
    };
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or(sa.object["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec);
    }
    Ok(())
}

/// Adds the token volume and its mount to every container that has nothing
/// at the mount path already (Kubernetes' `mountServiceAccountToken`).
fn mount_token(spec: &mut Value) {
    let existing = spec["volumes"].as_array().and_then(|vs| {
        vs.iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(VOLUME_PREFIX))
            .map(String::from)
    });
    let volume = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", super::handlers::random_suffix()));
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        // (`get_mut`: indexing would add a `null` for a missing list)
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let mounted = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if mounted {
                continue;
            }
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            c["volumeMounts"]
                .as_array_mut()
                .expect("an array")
                .push(json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
            needed = true;
        }
    }
    if existing.is_some() || !needed {
        return;
    }
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    spec["volumes"].as_array_mut().expect("an array").push(json!({
        "name": volume,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [
                {"name": "a", "image": "a"},
                {"name": "b", "image": "b", "volumeMounts": [
                    {"name": "mine", "mountPath": TOKEN_MOUNT_PATH},
                ]},
            ],
            "volumes": [{"name": "mine", "emptyDir": {}}],
        }})
    }

    #[test]
    fn every_container_without_its_own_mount_gets_the_token_volume() {
        let mut p = pod();
        mount_token(&mut p["spec"]);
        let vols = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        let name = vols[1]["name"].as_str().unwrap();
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        let sources = vols[1]["projected"]["sources"].as_array().unwrap();
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        for c in ["initContainers", "containers"] {
            let first = &p["spec"][c][0]["volumeMounts"][0];
            assert_eq!(first["name"], name);
            assert_eq!(first["readOnly"], true);
            assert_eq!(first["mountPath"], TOKEN_MOUNT_PATH);
        }
        // The container that mounts something there itself keeps it.
        let b = p["spec"]["containers"][1]["volumeMounts"]
            .as_array()
            .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["name"], "mine");
    }

    #[test]
    fn a_pod_that_has_the_volume_already_keeps_it() {
        let mut p = pod();
        mount_token(&mut p["spec"]);
        let once = p.clone();
        mount_token(&mut p["spec"]);
        assert_eq!(p, once);
        // A copy of a created pod (`kubectl get -o yaml` then create)
        // reuses its volume rather than adding a second.
        let mut copy = once.clone();
        copy["spec"]["containers"][0]["volumeMounts"] = json!([]);
        mount_token(&mut copy["spec"]);
        assert_eq!(copy["spec"]["volumes"].as_array().unwrap().len(), 2);
        assert_eq!(
            copy["spec"]["containers"][0]["volumeMounts"][0]["name"],
            once["spec"]["volumes"][1]["name"]
        );
    }

    #[test]
    fn nothing_is_added_when_every_container_mounts_the_path() {
        let mut p = json!({"spec": {"containers": [
            {"name": "b", "image": "b", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]},
        ], "volumes": [{"name": "mine", "emptyDir": {}}]}});
        let before = p.clone();
        mount_token(&mut p["spec"]);
        assert_eq!(p, before);
    }
}
