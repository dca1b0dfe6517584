//! What Kubernetes' Node authorizer and NodeRestriction admission keep a
//! node to, checked before RBAC for every request of a node
//! (`system:node:<name>` in `system:nodes`): the `system:node` role lets a
//! kubelet read and write pods, nodes, leases and secrets in general; this
//! narrows it to its own.
//!
//! - Node and Lease (`kube-node-lease`): it changes or deletes only its own.
//! - Pods: it writes the status of, and deletes, only pods bound to it.
//! - Secrets and ConfigMaps: it may only `get` one that a pod bound to it
//!   uses (volumes, projected sources, env and envFrom, image pull
//!   secrets), or a Secret an Ingress serves TLS with (its ingress
//!   gateway); no list or watch.
//!
//! A refusal is 403 with Kubernetes' wording and the reason
//! ("no relationship found between node 'n1' and this object").

use serde_json::Value;

use super::auth::User;
use super::rbac::Attributes;
use super::resources;
use super::status::ApiError;
use super::storage::Objects;

/// The node a user is, if it is one (and not also an administrator).
fn node_of(user: &User) -> Option<&str> {
    if user.is_master() || !user.groups.iter().any(|g| g == "system:nodes") {
        return None;
    }
    user.name.strip_prefix("system:node:")
}

pub async fn check(objects: &Objects, user: &User, a: &Attributes<'_>) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let writes = matches!(a.verb, "update" | "patch" | "delete");
    let refuse = |why: String| {
        let what = match a.subresource {
            Some(s) => format!("{}/{s}", a.resource),
            None => a.resource.to_string(),
        };
        let mut e = ApiError::forbidden(&user.name, a.verb, a.group, &what, a.namespace);
        e.message = format!("{}: {why}", e.message);
        Err(e)
    };
    match (a.group, a.resource) {
        ("", "nodes") if writes && a.name != Some(node) => refuse(format!(
            "node '{node}' cannot modify node '{}'",
            a.name.unwrap_or("")
        )),
        ("coordination.k8s.io", "leases") if writes && a.name != Some(node) => {
            refuse(format!("node '{node}' can only modify its own lease"))
        }
        ("", "pods")
            if (writes && a.subresource == Some("status"))
                || (a.verb == "delete" && a.subresource.is_none()) =>
        {
            let (Some(ns), Some(name)) = (a.namespace, a.name) else {
                return refuse(format!("node '{node}' can only change pods bound to it"));
            };
            let pods = resources::find("", "v1", "pods").expect("pods served");
            match objects.get(&pods.key(Some(ns), name)).await? {
                Some(p) if p.object["spec"]["nodeName"].as_str() != Some(node) => {
                    refuse(format!("node '{node}' can only change pods bound to it"))
                }
                // A pod that is gone is the handler's 404.
                _ => Ok(()),
            }
        }
        ("", kind @ ("secrets" | "configmaps")) => {
            let (Some(ns), Some(name), "get") = (a.namespace, a.name, a.verb) else {
                return refuse(format!(
                    "node '{node}' can only get the {kind} that its pods use, one by one"
                ));
            };
            if used_by_node(objects, node, ns, kind, name).await?
                || (kind == "secrets" && ingress_tls(objects, ns, name).await?)
            {
                Ok(())
            } else {
                refuse(format!(
                    "no relationship found between node '{node}' and this object"
                ))
            }
        }
        _ => Ok(()),
    }
}

/// Whether an Ingress in `ns` serves TLS with the Secret `name`: every
/// node's ingress gateway may read it (as Traefik's account reads them).
async fn ingress_tls(objects: &Objects, ns: &str, name: &str) -> Result<bool, ApiError> {
    let res = resources::find("networking.k8s.io", "v1", "ingresses").expect("ingresses served");
    let (items, _, _) = objects.list(&res.prefix(Some(ns)), None, 0, 0).await?;
    Ok(items.iter().any(|i| {
        i.object["spec"]["tls"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["secretName"] == name))
    }))
}

/// Whether a pod bound to `node` in `ns` uses the Secret or ConfigMap
/// (`kind`) `name`.
async fn used_by_node(
    objects: &Objects,
    node: &str,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<bool, ApiError> {
    let pods = resources::find("", "v1", "pods").expect("pods served");
    let (items, _, _) = objects.list(&pods.prefix(Some(ns)), None, 0, 0).await?;
    Ok(items.iter().any(|p| {
        p.object["spec"]["nodeName"].as_str() == Some(node)
            && references(&p.object["spec"], kind).any(|n| n == name)
    }))
}

/// The names of the Secrets (`kind` "secrets") or ConfigMaps a pod spec
/// refers to.
fn references<'a>(spec: &'a Value, kind: &str) -> impl Iterator<Item = &'a str> {
    let secret = kind == "secrets";
    let (volume, volume_name, env_ref, from_ref) = if secret {
        ("secret", "secretName", "secretKeyRef", "secretRef")
    } else {
        ("configMap", "name", "configMapKeyRef", "configMapRef")
    };
    let list = |v: &'a Value| v.as_array().into_iter().flatten();
    let volumes = list(&spec["volumes"]).flat_map(move |v| {
        let direct = v[volume][volume_name].as_str();
        let projected =
            list(&v["projected"]["sources"]).filter_map(move |s| s[volume]["name"].as_str());
        direct.into_iter().chain(projected)
    });
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| list(&spec[k]))
        .flat_map(move |c| {
            let env = list(&c["env"]).filter_map(move |e| e["valueFrom"][env_ref]["name"].as_str());
            let from = list(&c["envFrom"]).filter_map(move |e| e[from_ref]["name"].as_str());
            env.chain(from)
        });
    let pull = list(&spec["imagePullSecrets"])
        .filter(move |_| secret)
        .filter_map(|s| s["name"].as_str());
    volumes.chain(containers).chain(pull)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_of_reference_is_found() {
        let spec = json!({
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol-secret"}},
                {"name": "b", "configMap": {"name": "vol-cm"}},
                {"name": "c", "projected": {"sources": [
                    {"secret": {"name": "proj-secret"}},
                    {"configMap": {"name": "proj-cm"}},
                ]}},
            ],
            "initContainers": [{"envFrom": [{"secretRef": {"name": "init-from"}}]}],
            "containers": [{
                "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "Z", "value": "plain"},
                ],
                "envFrom": [{"configMapRef": {"name": "from-cm"}}],
            }],
            "imagePullSecrets": [{"name": "pull"}],
        });
        let mut secrets: Vec<&str> = references(&spec, "secrets").collect();
        secrets.sort();
        assert_eq!(
            secrets,
            [
                "env-secret",
                "init-from",
                "proj-secret",
                "pull",
                "vol-secret"
            ]
        );
        let mut cms: Vec<&str> = references(&spec, "configmaps").collect();
        cms.sort();
        assert_eq!(cms, ["env-cm", "from-cm", "proj-cm", "vol-cm"]);
    }
}
