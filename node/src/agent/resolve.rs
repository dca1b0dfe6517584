//! A container's configuration, resolved for the runtime: its environment
//! (`env` with `valueFrom`, `envFrom`, `$(VAR)` references) and its volumes
//! materialised as directories on the node.
//!
//! Volumes live under `DATA/pods/<uid>/volumes/<name>`:
//! - `emptyDir`: a directory (also for `medium: Memory`; `sizeLimit` is not
//!   enforced);
//! - `configMap`, `secret`, `downwardAPI`, `projected` (of those three and
//!   `serviceAccountToken`, a token bound to the pod from the API's
//!   TokenRequest): files written from the objects at every container
//!   start, mounted read-only as Kubernetes does;
//! - `hostPath`: only a directory, and only mounted `readOnly: true` —
//!   a guest must not write into the host through a pod spec;
//! - anything else (persistent volumes, CSI, ...) is refused with a message
//!   naming the volume.
//!
//! WASI mounts are preopened directories, so a `subPath` must name a
//! directory too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, PersistentVolume,
    PersistentVolumeClaim, Pod, ResourceFieldSelector, Secret, ServiceAccount, Volume,
};
use skiff_sched::Quantity;
use skiff_sdk::client::{Api, Client};
use skiff_sdk::runtime::Mount;

/// Why a container cannot be configured; the message goes into its
/// waiting state and an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Env or mounts name something missing or invalid
    /// (`CreateContainerConfigError`).
    #[error("{0}")]
    Config(String),
    /// A volume could not be set up (`FailedMount`).
    #[error("{0}")]
    Mount(String),
}

/// Reads the ConfigMaps and Secrets a pod refers to, each once per
/// resolution.
pub struct Lookup {
    client: Client,
    namespace: String,
    configmaps: HashMap<String, Option<Arc<ConfigMap>>>,
    secrets: HashMap<String, Option<Arc<Secret>>>,
}

impl Lookup {
    pub fn new(client: &Client, namespace: &str) -> Lookup {
        Lookup {
            client: client.clone(),
            namespace: namespace.to_string(),
            configmaps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    /// The directory on this node of the volume claim `name` is bound to:
    /// a `hostPath` or `local` PersistentVolume (what the local-path
    /// provisioner makes). An unbound claim is an error to retry.
    async fn claimed_dir(&mut self, name: &str) -> Result<PathBuf, String> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(&self.client, &self.namespace);
        let claim = claims
            .get_opt(name)
            .await
            .map_err(|e| format!("getting persistentvolumeclaim {name:?}: {e}"))?
            .ok_or_else(|| format!("persistentvolumeclaim {name:?} not found"))?;
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty() && bound)
            .ok_or_else(|| format!("persistentvolumeclaim {name:?} is not bound yet"))?;
        let volumes: Api<PersistentVolume> = Api::all(&self.client);
        let pv = volumes
            .get(&volume)
            .await
            .map_err(|e| format!("getting persistentvolume {volume:?}: {e}"))?;
        let spec = pv.spec.unwrap_or_default();
        let p = match (spec.host_path, spec.local) {
            (Some(hp), _) => {
                let p = PathBuf::from(&hp.path);
                // As containerd makes a missing bind source: a volume with
                // no type, or `DirectoryOrCreate`, is made if absent.
                if matches!(hp.type_.as_deref(), None | Some("" | "DirectoryOrCreate"))
                    && !p.exists()
                {
                    mkdir(&p)?;
                }
                p
            }
            (None, Some(local)) => PathBuf::from(&local.path),
            (None, None) => {
                return Err(format!(
                    "persistentvolume {volume:?}: only hostPath and local volumes are supported on this node"
                ));
            }
        };
        if !p.is_dir() {
            return Err(format!(
                "persistentvolume {volume:?}: {} is not a directory on this node",
                p.display()
            ));
        }
        Ok(p)
    }

    async fn configmap(&mut self, name: &str) -> Result<Option<Arc<ConfigMap>>, String> {
        if let Some(c) = self.configmaps.get(name) {
            return Ok(c.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(&self.client, &self.namespace);
        let got = api
            .get_opt(name)
            .await
            .map_err(|e| format!("getting configmap {name:?}: {e}"))?
            .map(Arc::new);
        self.configmaps.insert(name.to_string(), got.clone());
        Ok(got)
    }

    async fn secret(&mut self, name: &str) -> Result<Option<Arc<Secret>>, String> {
        if let Some(s) = self.secrets.get(name) {
            return Ok(s.clone());
        }
        let api: Api<Secret> = Api::namespaced(&self.client, &self.namespace);
        let got = api
            .get_opt(name)
            .await
            .map_err(|e| format!("getting secret {name:?}: {e}"))?
            .map(Arc::new);
        self.secrets.insert(name.to_string(), got.clone());
        Ok(got)
    }

    /// A token for the pod's ServiceAccount, bound to the pod (the
    /// kubelet's TokenRequest for a projected `serviceAccountToken`).
    async fn token(
        &mut self,
        pod: &Pod,
        audience: Option<&str>,
        expiration: Option<i64>,
    ) -> Result<String, String> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let meta = &pod.metadata;
        let mut spec = serde_json::json!({
            "expirationSeconds": expiration.unwrap_or(3600),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta.name,
                "uid": meta.uid,
            },
        });
        if let Some(a) = audience.filter(|a| !a.is_empty()) {
            spec["audiences"] = serde_json::json!([a]);
        }
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": spec,
        });
        let api: Api<ServiceAccount> = Api::namespaced(&self.client, &self.namespace);
        let got = api
            .create_sub(Some(&self.namespace), account, "token", &body)
            .await
            .map_err(|e| format!("requesting a token for service account {account:?}: {e}"))?;
        got["status"]["token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("the token request for {account:?} returned no token"))
    }

    /// The key/value pairs of a ConfigMap (`data` and `binaryData`).
    async fn configmap_data(
        &mut self,
        name: &str,
        optional: bool,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        match self.configmap(name).await? {
            Some(cm) => {
                let mut out: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect();
                for (k, v) in cm.binary_data.iter().flatten() {
                    out.insert(k.clone(), v.0.clone());
                }
                Ok(Some(out))
            }
            None if optional => Ok(None),
            None => Err(format!("configmap {name:?} not found")),
        }
    }

    async fn secret_data(
        &mut self,
        name: &str,
        optional: bool,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        match self.secret(name).await? {
            Some(s) => {
                let mut out: BTreeMap<String, Vec<u8>> = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                for (k, v) in s.string_data.iter().flatten() {
                    out.insert(k.clone(), v.clone().into_bytes());
                }
                Ok(Some(out))
            }
            None if optional => Ok(None),
            None => Err(format!("secret {name:?} not found")),
        }
    }
}

/// What `fieldRef` and `resourceFieldRef` read besides the pod.
#[derive(Debug, Clone, Copy)]
pub struct Downward {
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
    /// The node's allocatable cpu and memory: what a container without a
    /// limit may use.
    pub node_cpu_millis: i64,
    pub node_memory: i64,
}

/// A `fieldRef` value.
fn field(pod: &Pod, d: &Downward, f: &ObjectFieldSelector) -> Result<String, String> {
    let m = &pod.metadata;
    let path = f.field_path.as_str();
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    let map_text = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&m.labels),
        "metadata.annotations" => map_text(&m.annotations),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" | "status.hostIPs" => d.host_ip.to_string(),
        "status.podIP" | "status.podIPs" => d.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        _ => {
            if let Some(k) = keyed("metadata.labels['") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = keyed("metadata.annotations['") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {path:?}"));
            }
        }
    })
}

/// A `resourceFieldRef` value: the limit (or request), in units of the
/// divisor, rounded up; a missing limit is the node's allocatable amount.
fn resource(
    pod: &Pod,
    own: &Container,
    d: &Downward,
    r: &ResourceFieldSelector,
) -> Result<String, String> {
    let c = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => own,
        Some(name) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|c| c.name == name)
            .ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?,
    };
    let (kind, what) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resourceFieldRef resource {:?}", r.resource))?;
    let res = c.resources.clone().unwrap_or_default();
    let list = match kind {
        "limits" => res.limits,
        "requests" => res.requests,
        _ => {
            return Err(format!(
                "unsupported resourceFieldRef resource {:?}",
                r.resource
            ));
        }
    };
    let parse = |q: &str| Quantity::parse(q).map_err(|e| e.to_string());
    let divisor = r.divisor.as_ref().map_or("1", |q| q.0.as_str());
    let (amount, unit) = match what {
        "cpu" => {
            let amount = match list.as_ref().and_then(|l| l.get("cpu")) {
                Some(q) => parse(&q.0)?.milli_value().map_err(|e| e.to_string())?,
                None if kind == "limits" => d.node_cpu_millis,
                None => 0,
            };
            (
                amount,
                parse(divisor)?.milli_value().map_err(|e| e.to_string())?,
            )
        }
        "memory" | "ephemeral-storage" => {
            let amount = match list.as_ref().and_then(|l| l.get(what)) {
                Some(q) => parse(&q.0)?.value().map_err(|e| e.to_string())?,
                None if kind == "limits" && what == "memory" => d.node_memory,
                None => 0,
            };
            (amount, parse(divisor)?.value().map_err(|e| e.to_string())?)
        }
        _ => {
            return Err(format!(
                "unsupported resourceFieldRef resource {:?}",
                r.resource
            ));
        }
    };
    if unit <= 0 {
        return Err(format!(
            "resourceFieldRef divisor {divisor:?} must be positive"
        ));
    }
    Ok(((amount + unit - 1) / unit).to_string())
}

/// Kubernetes' `$(VAR)` expansion: a reference to a variable defined so
/// far is replaced, `$$` is a literal `$`, anything else stays as written.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in Kubernetes' order: the Services'
/// variables (`services`, see `etc::service_env`), `envFrom` sources, then
/// `env`, a later definition of a name replacing an earlier one (and
/// `$(NAME)` seeing what came before).
pub async fn env(
    l: &mut Lookup,
    pod: &Pod,
    c: &Container,
    d: &Downward,
    services: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, ResolveError> {
    let cfg = ResolveError::Config;
    let mut vars: Vec<(String, String)> = services;
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(slot) => slot.1 = v,
        None => vars.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            l.configmap_data(&r.name, r.optional.unwrap_or(false))
                .await
                .map_err(cfg)?
        } else if let Some(r) = &from.secret_ref {
            l.secret_data(&r.name, r.optional.unwrap_or(false))
                .await
                .map_err(cfg)?
        } else {
            None
        };
        for (k, v) in data.into_iter().flatten() {
            let name = format!("{prefix}{k}");
            // Kubernetes skips keys that are not valid variable names.
            if name.is_empty()
                || name.contains('=')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                continue;
            }
            set(&mut vars, name, String::from_utf8_lossy(&v).into_owned());
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(src) = &e.value_from {
            if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match l.configmap_data(&r.name, optional).await.map_err(cfg)? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(cfg(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key, l.namespace, r.name
                            )));
                        }
                    },
                    None => continue,
                }
            } else if let Some(r) = &src.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match l.secret_data(&r.name, optional).await.map_err(cfg)? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(cfg(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key, l.namespace, r.name
                            )));
                        }
                    },
                    None => continue,
                }
            } else if let Some(f) = &src.field_ref {
                field(pod, d, f).map_err(cfg)?
            } else if let Some(r) = &src.resource_field_ref {
                resource(pod, c, d, r).map_err(cfg)?
            } else {
                String::new()
            }
        } else {
            let known = vars.clone();
            expand(e.value.as_deref().unwrap_or(""), &|name| {
                known
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

/// A materialised volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDir {
    pub path: PathBuf,
    /// Kubernetes mounts these read-only whatever the mount says.
    pub read_only: bool,
    pub host_path: bool,
}

/// Sets up every volume of the pod under `root` (`DATA/pods/<uid>/volumes`).
pub async fn volumes(
    l: &mut Lookup,
    pod: &Pod,
    d: &Downward,
    root: &Path,
) -> Result<BTreeMap<String, VolumeDir>, ResolveError> {
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = volume(l, pod, d, root, v)
            .await
            .map_err(|e| ResolveError::Mount(format!("volume {:?}: {e}", v.name)))?;
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

async fn volume(
    l: &mut Lookup,
    pod: &Pod,
    d: &Downward,
    root: &Path,
    v: &Volume,
) -> Result<VolumeDir, String> {
    let path = root.join(&v.name);
    let owned = |read_only| VolumeDir {
        path: path.clone(),
        read_only,
        host_path: false,
    };
    if v.empty_dir.is_some() {
        mkdir(&path)?;
        return Ok(owned(false));
    }
    if let Some(claim) = &v.persistent_volume_claim {
        return Ok(VolumeDir {
            path: l.claimed_dir(&claim.claim_name).await?,
            read_only: claim.read_only.unwrap_or(false),
            host_path: false,
        });
    }
    if let Some(hp) = &v.host_path {
        let p = PathBuf::from(&hp.path);
        match hp.type_.as_deref().unwrap_or("") {
            "" | "Directory" => {}
            "DirectoryOrCreate" => mkdir(&p)?,
            other => {
                return Err(format!(
                    "hostPath type {other:?}: only directories can be mounted into a wasm guest"
                ));
            }
        }
        if !p.is_dir() {
            return Err(format!(
                "hostPath {} is not a directory on the node",
                p.display()
            ));
        }
        return Ok(VolumeDir {
            path: p,
            read_only: true,
            host_path: true,
        });
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(cm) = &v.config_map {
        if let Some(data) = l
            .configmap_data(&cm.name, cm.optional.unwrap_or(false))
            .await?
        {
            files.extend(project(&data, cm.items.as_deref(), "configmap", &cm.name)?);
        }
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        if let Some(data) = l.secret_data(&name, s.optional.unwrap_or(false)).await? {
            files.extend(project(&data, s.items.as_deref(), "secret", &name)?);
        }
    } else if let Some(da) = &v.downward_api {
        files.extend(downward_files(pod, d, da.items.as_deref())?);
    } else if let Some(p) = &v.projected {
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                if let Some(data) = l
                    .configmap_data(&cm.name, cm.optional.unwrap_or(false))
                    .await?
                {
                    files.extend(project(&data, cm.items.as_deref(), "configmap", &cm.name)?);
                }
            } else if let Some(s) = &src.secret {
                if let Some(data) = l.secret_data(&s.name, s.optional.unwrap_or(false)).await? {
                    files.extend(project(&data, s.items.as_deref(), "secret", &s.name)?);
                }
            } else if let Some(da) = &src.downward_api {
                files.extend(downward_files(pod, d, da.items.as_deref())?);
            } else if let Some(t) = &src.service_account_token {
                let token = l
                    .token(pod, t.audience.as_deref(), t.expiration_seconds)
                    .await?;
                files.push((t.path.clone(), token.into_bytes()));
            } else {
                return Err(
                    "only configMap, secret, downwardAPI and serviceAccountToken \
                            projections are supported on this node"
                        .into(),
                );
            }
        }
    } else {
        let kind = serde_json::to_value(v)
            .ok()
            .and_then(|j| {
                j.as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            })
            .unwrap_or_else(|| "unknown".into());
        return Err(format!("{kind} volumes are not supported on this node"));
    }
    write_files(&path, &files)?;
    Ok(owned(true))
}

/// The files of a ConfigMap or Secret volume: every key, or the `items`.
fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    kind: &str,
    name: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    match items {
        None => Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                data.get(&i.key)
                    .map(|v| (i.path.clone(), v.clone()))
                    .ok_or_else(|| format!("{kind} {name:?} has no key {:?}", i.key))
            })
            .collect(),
    }
}

fn downward_files(
    pod: &Pod,
    d: &Downward,
    items: Option<&[DownwardAPIVolumeFile]>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for i in items.into_iter().flatten() {
        let value = if let Some(f) = &i.field_ref {
            field(pod, d, f)?
        } else if let Some(r) = &i.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| c.name == name)
                .ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?;
            resource(pod, c, d, r)?
        } else {
            String::new()
        };
        out.push((i.path.clone(), value.into_bytes()));
    }
    Ok(out)
}

fn mkdir(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))
}

/// A relative path inside a volume: no `..`, not absolute.
fn inside(rel: &str) -> Result<&Path, String> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "path {rel:?} must be relative and must not contain '..'"
        ));
    }
    Ok(p)
}

/// Writes the files in place (a running guest keeps its open directory)
/// and removes the ones no longer there.
fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    mkdir(dir)?;
    let mut wanted = BTreeSet::new();
    for (rel, bytes) in files {
        let path = dir.join(inside(rel)?);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
        wanted.insert(path);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if !wanted.contains(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    Ok(())
}

/// The container's mounts from its `volumeMounts`.
pub fn mounts(
    c: &Container,
    vols: &BTreeMap<String, VolumeDir>,
) -> Result<Vec<Mount>, ResolveError> {
    let cfg = ResolveError::Config;
    let mut out = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let at = format!("volumeMounts[{i}]");
        let v = vols
            .get(&m.name)
            .ok_or_else(|| cfg(format!("{at}: no volume named {:?}", m.name)))?;
        let read_only = m.read_only.unwrap_or(false);
        if v.host_path && !read_only {
            return Err(cfg(format!(
                "{at}: hostPath volume {:?} must be mounted readOnly: true on a wasm node",
                m.name
            )));
        }
        let mut host_path = v.path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            host_path = host_path.join(inside(sub).map_err(|e| cfg(format!("{at}.subPath: {e}")))?);
            if !host_path.exists() && !v.read_only && !v.host_path {
                mkdir(&host_path).map_err(cfg)?;
            }
            if !host_path.is_dir() {
                return Err(cfg(format!(
                    "{at}.subPath {sub:?}: only directories can be mounted into a wasm guest"
                )));
            }
        }
        out.push(Mount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only: read_only || v.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn references_expand_as_kubernetes_does() {
        let vars = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("plain", &vars), "plain");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u", "labels": {"app": "w"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"memory": "64Mi"}}}]},
        }))
        .unwrap()
    }

    const D: Downward = Downward {
        pod_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 42, 1, 2))),
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        node_cpu_millis: 4000,
        node_memory: 1 << 30,
    };

    #[test]
    fn downward_values() {
        let p = pod();
        let f = |path: &str| {
            field(
                &p,
                &D,
                &ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                },
            )
        };
        assert_eq!(f("metadata.name").unwrap(), "web");
        assert_eq!(f("status.podIP").unwrap(), "127.42.1.2");
        assert_eq!(f("metadata.labels['app']").unwrap(), "w");
        assert_eq!(f("spec.nodeName").unwrap(), "n1");
        assert!(f("spec.nope").is_err());
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = |res: &str, div: Option<&str>| {
            resource(
                &p,
                c,
                &D,
                &ResourceFieldSelector {
                    resource: res.into(),
                    divisor: div
                        .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
                    container_name: None,
                },
            )
            .unwrap()
        };
        assert_eq!(r("limits.memory", Some("1Mi")), "64");
        assert_eq!(r("limits.cpu", None), "4");
        assert_eq!(r("limits.cpu", Some("1m")), "4000");
    }

    #[test]
    fn files_are_written_in_place_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("cfg");
        write_files(
            &v,
            &[("a".into(), b"1".to_vec()), ("sub/b".into(), b"2".to_vec())],
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(v.join("sub/b")).unwrap(), "2");
        write_files(&v, &[("a".into(), b"3".to_vec())]).unwrap();
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "3");
        assert!(!v.join("sub/b").exists());
        assert!(write_files(&v, &[("../evil".into(), vec![])]).is_err());
    }

    #[test]
    fn host_paths_must_be_mounted_read_only() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "image": "i",
            "volumeMounts": [{"name": "h", "mountPath": "/h"}],
        }))
        .unwrap();
        let mut vols = BTreeMap::new();
        vols.insert(
            "h".to_string(),
            VolumeDir {
                path: "/tmp".into(),
                read_only: true,
                host_path: true,
            },
        );
        let err = mounts(&c, &vols).unwrap_err();
        assert!(err.to_string().contains("readOnly"), "{err}");
    }
}
