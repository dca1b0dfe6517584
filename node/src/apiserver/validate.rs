//! Decoding, defaulting and validation of objects, as the Kubernetes API
//! server does them.
//!
//! Decoding goes through the `k8s-openapi` type of the kind, so a field of
//! the wrong type is refused with its path, and the stored form is the
//! typed form re-serialized. Fields the type does not know are reported per
//! `fieldValidation` (Strict: 400; Warn: a warning; Ignore: dropped).

use k8s_openapi::api;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::status::{ApiError, Cause};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<FieldValidation, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde names a missing field at its parent; Kubernetes names the
        // field itself.
        if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            return if path == "." {
                format!("{field}: Required value")
            } else {
                format!("{path}.{field}: Required value")
            };
        }
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// Decodes `obj` as the kind `res` serves; returns the normalized object and
/// warnings (unknown fields under `Warn`).
pub fn decode(
    res: &Resource,
    obj: &Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    use api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    let r = match res.kind {
        "Namespace" => roundtrip::<core::Namespace>(obj),
        "Pod" => roundtrip::<core::Pod>(obj),
        "Service" => roundtrip::<core::Service>(obj),
        "Endpoints" => roundtrip::<core::Endpoints>(obj),
        "ConfigMap" => roundtrip::<core::ConfigMap>(obj),
        "Secret" => roundtrip::<core::Secret>(obj),
        "ServiceAccount" => roundtrip::<core::ServiceAccount>(obj),
        "Node" => roundtrip::<core::Node>(obj),
        "Event" => roundtrip::<core::Event>(obj),
        "PersistentVolumeClaim" => roundtrip::<core::PersistentVolumeClaim>(obj),
        "PersistentVolume" => roundtrip::<core::PersistentVolume>(obj),
        "StorageClass" => roundtrip::<api::storage::v1::StorageClass>(obj),
        "Deployment" => roundtrip::<apps::Deployment>(obj),
        "ReplicaSet" => roundtrip::<apps::ReplicaSet>(obj),
        "ControllerRevision" => roundtrip::<apps::ControllerRevision>(obj),
        "DaemonSet" => roundtrip::<apps::DaemonSet>(obj),
        "StatefulSet" => roundtrip::<apps::StatefulSet>(obj),
        "Job" => roundtrip::<batch::Job>(obj),
        "CronJob" => roundtrip::<batch::CronJob>(obj),
        "Ingress" => roundtrip::<api::networking::v1::Ingress>(obj),
        "IngressClass" => roundtrip::<api::networking::v1::IngressClass>(obj),
        "EndpointSlice" => roundtrip::<api::discovery::v1::EndpointSlice>(obj),
        "Role" => roundtrip::<api::rbac::v1::Role>(obj),
        "RoleBinding" => roundtrip::<api::rbac::v1::RoleBinding>(obj),
        "ClusterRole" => roundtrip::<api::rbac::v1::ClusterRole>(obj),
        "ClusterRoleBinding" => roundtrip::<api::rbac::v1::ClusterRoleBinding>(obj),
        "Lease" => roundtrip::<api::coordination::v1::Lease>(obj),
        "RuntimeClass" => roundtrip::<api::node::v1::RuntimeClass>(obj),
        "PodDisruptionBudget" => roundtrip::<api::policy::v1::PodDisruptionBudget>(obj),
        "PriorityClass" => {
            // An absent value is Go's zero, not an error, in Kubernetes.
            let mut obj = obj.clone();
            if obj["value"].is_null() {
                obj["value"] = json!(0);
            }
            roundtrip::<api::scheduling::v1::PriorityClass>(&obj)
        }
        other => return Err(ApiError::internal(format!("no decoder for kind {other}"))),
    };
    let typed = r.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            res.kind, res.version, res.kind
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &typed, "", &mut unknown);
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match fv {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            }
            FieldValidation::Ignore => {}
        }
    }
    Ok((typed, warnings))
}

/// Paths present in `input` that the typed form dropped (nulls aside).
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(tv) => unknown_fields(v, tv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && label_value_ok(name)
}

/// Kinds whose names must be DNS labels rather than subdomains.
fn needs_label_name(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Service")
}

fn validate_meta(res: &Resource, obj: &Value, causes: &mut Vec<Cause>) {
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if needs_label_name(res.kind) {
        if !is_dns1123_label(name) {
            causes.push(Cause::invalid(
                "metadata.name",
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
            ));
        }
    } else if !is_dns1123_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if !label_key_ok(k) {
                causes.push(Cause::invalid("metadata.labels", format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.'")));
            }
            match v.as_str() {
                Some(s) if label_value_ok(s) => {}
                _ => causes.push(Cause::invalid(
                    "metadata.labels",
                    format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                )),
            }
        }
    }
    if let Some(ann) = meta["annotations"].as_object() {
        let size: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > 256 * 1024 {
            causes.push(Cause::invalid(
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
}

fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec["containers"].as_array();
    match containers {
        None => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{path}.containers"))),
        Some(_) => {}
    }
    let mut names = std::collections::HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
                Some(n) if !is_dns1123_label(n) => causes.push(Cause::invalid(format!("{p}.name"), format!("Invalid value: \"{n}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"))),
                Some(n) => {
                    if !names.insert(n.to_string()) {
                        causes.push(Cause::duplicate(format!("{p}.name"), format!("Duplicate value: \"{n}\"")));
                    }
                }
            }
            if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required(format!("{p}.image")));
            }
            for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let n = port["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    causes.push(Cause::invalid(
                        format!("{p}.ports[{j}].containerPort"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
        }
    }
    if let Some(rp) = spec["restartPolicy"].as_str()
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        causes.push(Cause::not_supported(format!("{path}.restartPolicy"), format!("Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\"")));
    }
    let ephemeral = spec["ephemeralContainers"]
        .as_array()
        .filter(|l| !l.is_empty());
    if path != "spec" && ephemeral.is_some() {
        causes.push(Cause::forbidden(
            format!("{path}.ephemeralContainers"),
            "Forbidden: ephemeral containers not allowed in pod template",
        ));
    }
    for (i, c) in ephemeral.into_iter().flatten().enumerate() {
        validate_ephemeral_container(
            c,
            &format!("{path}.ephemeralContainers[{i}]"),
            spec,
            &mut names,
            causes,
        );
    }
}

/// The volume sources a PersistentVolume may name (one of them).
const VOLUME_SOURCES: [&str; 20] = [
    "hostPath",
    "local",
    "nfs",
    "iscsi",
    "fc",
    "csi",
    "rbd",
    "cephfs",
    "cinder",
    "glusterfs",
    "flexVolume",
    "flocker",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "azureDisk",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "portworxVolume",
    "scaleIO",
];

/// Kubernetes' `ValidatePersistentVolumeSpec`, the parts that matter here.
fn validate_persistent_volume(spec: &Value, causes: &mut Vec<Cause>) {
    if spec["accessModes"].as_array().is_none_or(|a| a.is_empty()) {
        causes.push(Cause::required("spec.accessModes"));
    }
    for (i, m) in spec["accessModes"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let m = m.as_str().unwrap_or("");
        if !matches!(
            m,
            "ReadWriteOnce" | "ReadOnlyMany" | "ReadWriteMany" | "ReadWriteOncePod"
        ) {
            causes.push(Cause::not_supported(
                format!("spec.accessModes[{i}]"),
                format!("Unsupported value: \"{m}\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""),
            ));
        }
    }
    if spec["capacity"]["storage"].is_null() {
        causes.push(Cause::required("spec.capacity"));
    }
    let sources: Vec<&str> = VOLUME_SOURCES
        .into_iter()
        .filter(|s| !spec[*s].is_null())
        .collect();
    match sources.as_slice() {
        [] => causes.push(Cause::required_with("spec", "must specify a volume type")),
        [_] => {}
        [_, more @ ..] => causes.push(Cause::forbidden(
            format!("spec.{}", more[0]),
            "Forbidden: may not specify more than 1 volume type",
        )),
    }
    if let Some(p) = spec["hostPath"]["path"].as_str()
        && (p.is_empty() || p.split('/').any(|c| c == ".."))
    {
        causes.push(Cause::invalid(
            "spec.hostPath.path",
            format!("Invalid value: \"{p}\": must be an absolute path without '..'"),
        ));
    }
    if let Some(p) = spec["persistentVolumeReclaimPolicy"].as_str()
        && !matches!(p, "Retain" | "Delete" | "Recycle")
    {
        causes.push(Cause::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            format!(
                "Unsupported value: \"{p}\": supported values: \"Delete\", \"Recycle\", \"Retain\""
            ),
        ));
    }
}

/// Kubernetes' `ValidateStorageClass`: a provisioner, and known policies.
fn validate_storage_class(class: &Value, causes: &mut Vec<Cause>) {
    if class["provisioner"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("provisioner"));
    }
    if let Some(p) = class["reclaimPolicy"].as_str()
        && !matches!(p, "Retain" | "Delete")
    {
        causes.push(Cause::not_supported(
            "reclaimPolicy",
            format!("Unsupported value: \"{p}\": supported values: \"Delete\", \"Retain\""),
        ));
    }
    if let Some(m) = class["volumeBindingMode"].as_str()
        && !matches!(m, "Immediate" | "WaitForFirstConsumer")
    {
        causes.push(Cause::not_supported(
            "volumeBindingMode",
            format!("Unsupported value: \"{m}\": supported values: \"Immediate\", \"WaitForFirstConsumer\""),
        ));
    }
}

/// What an ephemeral container (`kubectl debug`) may not have: it runs once,
/// beside the pod's containers, with no ports, probes or resources of its
/// own (Kubernetes' `validateEphemeralContainers`).
const NOT_FOR_EPHEMERAL: [&str; 8] = [
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "lifecycle",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
];

fn validate_ephemeral_container(
    c: &Value,
    p: &str,
    spec: &Value,
    names: &mut std::collections::HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    match c["name"].as_str() {
        None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
        Some(n) if !is_dns1123_label(n) => causes.push(Cause::invalid(
            format!("{p}.name"),
            format!("Invalid value: \"{n}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"),
        )),
        Some(n) => {
            if !names.insert(n.to_string()) {
                causes.push(Cause::duplicate(format!("{p}.name"), format!("Duplicate value: \"{n}\"")));
            }
        }
    }
    if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
        causes.push(Cause::required(format!("{p}.image")));
    }
    let set = |v: &Value| match v {
        Value::Null => false,
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    };
    for field in NOT_FOR_EPHEMERAL {
        if set(&c[field]) {
            causes.push(Cause::forbidden(
                format!("{p}.{field}"),
                "Forbidden: cannot be set for an Ephemeral Container",
            ));
        }
    }
    for (j, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if set(&m["subPath"]) {
            causes.push(Cause::forbidden(
                format!("{p}.volumeMounts[{j}].subPath"),
                "Forbidden: cannot be set for an Ephemeral Container",
            ));
        }
    }
    if let Some(target) = c["targetContainerName"].as_str().filter(|t| !t.is_empty()) {
        let known = ["containers", "initContainers"]
            .iter()
            .flat_map(|l| spec[*l].as_array().into_iter().flatten())
            .any(|x| x["name"].as_str() == Some(target));
        if !known {
            causes.push(Cause {
                field: format!("{p}.targetContainerName"),
                message: format!("Not found: \"{target}\""),
                kind: "FieldValueNotFound",
            });
        }
    }
}

/// Kubernetes' PodDisruptionBudget checks: one of minAvailable and
/// maxUnavailable, each a non-negative integer or a percentage of at most
/// 100%.
fn validate_disruption_budget(spec: &Value, causes: &mut Vec<Cause>) {
    if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
        causes.push(Cause::invalid(
            "spec",
            "Invalid value: minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for field in ["minAvailable", "maxUnavailable"] {
        let path = format!("spec.{field}");
        match &spec[field] {
            Value::Null => {}
            Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => causes.push(Cause::invalid(
                path,
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            )),
            Value::String(s) => match s.strip_suffix('%').map(str::parse::<u32>) {
                Some(Ok(p)) if p <= 100 => {}
                Some(Ok(_)) => causes.push(Cause::invalid(
                    path,
                    format!("Invalid value: \"{s}\": must be no more than 100%"),
                )),
                _ => causes.push(Cause::invalid(
                    path,
                    format!(
                        "Invalid value: \"{s}\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
                    ),
                )),
            },
            _ => {}
        }
    }
}

fn validate_selector_matches(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let sel = &spec["selector"];
    if sel.is_null() {
        causes.push(Cause::required(format!("{path}.selector")));
        return;
    }
    let labels = spec["template"]["metadata"]["labels"].as_object();
    if let Some(ml) = sel["matchLabels"].as_object() {
        for (k, v) in ml {
            if labels.and_then(|l| l.get(k)) != Some(v) {
                causes.push(Cause::invalid(
                    format!("{path}.template.metadata.labels"),
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        labels.map_or(json!({}), |l| Value::Object(l.clone()))
                    ),
                ));
                return;
            }
        }
    }
    if sel["matchLabels"].as_object().is_none_or(Map::is_empty)
        && sel["matchExpressions"].as_array().is_none_or(Vec::is_empty)
    {
        causes.push(Cause::invalid(
            format!("{path}.selector"),
            "Invalid value: \"null\": empty selector is invalid for deployment",
        ));
    }
}

/// What Kubernetes' Job strategy does at create: unless
/// `spec.manualSelector` is true, the pod template gets the `job-name` and
/// `controller-uid` labels (legacy and `batch.kubernetes.io/` forms) and
/// `spec.selector` selects the Job's uid, so the Job's pods are exactly the
/// pods it creates (`kubectl logs job/NAME` and `-l job-name=NAME` rely on
/// it). A selector the user set without `manualSelector` must be the
/// generated one. Runs after the uid is assigned.
pub fn generate_job_selector(obj: &mut Value) -> Result<(), ApiError> {
    const UID: &str = "batch.kubernetes.io/controller-uid";
    const NAME: &str = "batch.kubernetes.io/job-name";
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let mut causes = Vec::new();
    let spec = &mut obj["spec"];
    if spec["manualSelector"] == json!(true) {
        if spec["selector"].is_null() {
            causes.push(Cause::required("spec.selector"));
        }
    } else {
        let template = &mut spec["template"];
        if !template["metadata"].is_object() {
            template["metadata"] = json!({});
        }
        if !template["metadata"]["labels"].is_object() {
            template["metadata"]["labels"] = json!({});
        }
        let labels = template["metadata"]["labels"]
            .as_object_mut()
            .expect("labels is an object");
        for (k, v) in [
            ("job-name", &name),
            (NAME, &name),
            ("controller-uid", &uid),
            (UID, &uid),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
        for (k, v) in [(UID, &uid), (NAME, &name)] {
            if labels.get(k) != Some(&json!(v)) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    format!(
                        "Invalid value: {}: `{k}` must be \"{v}\"",
                        Value::Object(labels.clone())
                    ),
                ));
            }
        }
        if !spec["selector"].is_object() {
            spec["selector"] = json!({});
        }
        if !spec["selector"]["matchLabels"].is_object() {
            spec["selector"]["matchLabels"] = json!({});
        }
        let selector = spec["selector"].clone();
        let ml = spec["selector"]["matchLabels"]
            .as_object_mut()
            .expect("matchLabels is an object");
        ml.entry(UID).or_insert_with(|| json!(uid));
        // It must select exactly the pods labelled with the uid.
        if ml.len() != 1
            || ml.get(UID) != Some(&json!(uid))
            || selector["matchExpressions"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        {
            causes.push(Cause::invalid(
                "spec.selector",
                format!(
                    "Invalid value: {selector}: `selector` not auto-generated (set spec.manualSelector: true to choose your own)"
                ),
            ));
        }
    }
    if causes.is_empty() {
        validate_selector_matches(&obj["spec"], "spec", &mut causes);
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("batch", "Job", &name, causes))
    }
}

/// Semantic validation of a decoded object; 422 with every bad field.
pub fn validate(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    validate_meta(res, obj, &mut causes);
    let spec = &obj["spec"];
    match res.kind {
        "Pod" => validate_pod_spec(spec, "spec", &mut causes),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            validate_selector_matches(spec, "spec", &mut causes);
            validate_pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes);
            if let Some(r) = spec["replicas"].as_i64()
                && r < 0
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    format!("Invalid value: {r}: must be greater than or equal to 0"),
                ));
            }
        }
        "Job" => validate_pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes),
        "PodDisruptionBudget" => validate_disruption_budget(spec, &mut causes),
        "PersistentVolume" => validate_persistent_volume(spec, &mut causes),
        "StorageClass" => validate_storage_class(obj, &mut causes),
        "PriorityClass" => super::priority::validate(obj, &mut causes),
        "CronJob" => {
            if spec["schedule"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required("spec.schedule"));
            }
            validate_pod_spec(
                &spec["jobTemplate"]["spec"]["template"]["spec"],
                "spec.jobTemplate.spec.template.spec",
                &mut causes,
            );
        }
        "Service" => {
            let headless = spec["clusterIP"].as_str() == Some("None");
            let external = spec["type"].as_str() == Some("ExternalName");
            let ports = spec["ports"].as_array();
            if ports.is_none_or(Vec::is_empty) && !headless && !external {
                causes.push(Cause::required("spec.ports"));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let n = p["port"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].port"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
            let node_ports = matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"));
            let mut seen: Vec<(i64, &str)> = Vec::new();
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let Some(n) = p["nodePort"].as_i64().filter(|n| *n != 0) else {
                    continue;
                };
                let field = format!("spec.ports[{i}].nodePort");
                if !node_ports {
                    let t = spec["type"].as_str().unwrap_or("ClusterIP");
                    causes.push(Cause::forbidden(
                        field,
                        format!("Forbidden: may not be used when `type` is '{t}'"),
                    ));
                    continue;
                }
                let proto = p["protocol"].as_str().unwrap_or("TCP");
                if seen.contains(&(n, proto)) {
                    causes.push(Cause::duplicate(field, format!("Duplicate value: {n}")));
                }
                seen.push((n, proto));
            }
            if let Some(t) = spec["type"].as_str()
                && !matches!(
                    t,
                    "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
                )
            {
                causes.push(Cause::not_supported("spec.type", format!("Unsupported value: \"{t}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")));
            }
        }
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                for k in obj[field].as_object().into_iter().flat_map(Map::keys) {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
                        });
                    if !ok {
                        causes.push(Cause::invalid(format!("{field}[{k}]"), format!("Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
                    }
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        Err(ApiError::invalid(res.group, res.kind, name, causes))
    }
}

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), v);
    }
}

/// Seconds a pod stays bound to a NotReady or unreachable node before it is
/// evicted, unless it says otherwise: the DefaultTolerationSeconds
/// admission plugin (Kubernetes: 300 s; skiff: 30 s, `--default-toleration-seconds`).
static DEFAULT_TOLERATION_SECONDS: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(30);

pub fn set_default_toleration_seconds(secs: i64) {
    DEFAULT_TOLERATION_SECONDS.store(secs, std::sync::atomic::Ordering::Relaxed);
}

/// Adds the not-ready and unreachable NoExecute tolerations to a new pod
/// that has none for those taints, as DefaultTolerationSeconds does.
fn default_tolerations(spec: &mut Value) {
    let secs = DEFAULT_TOLERATION_SECONDS.load(std::sync::atomic::Ordering::Relaxed);
    if !spec.is_object() {
        return;
    }
    let mut list = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let covers = |t: &Value, key: &str| {
        (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
            && (t["effect"].is_null() || t["effect"] == "" || t["effect"] == "NoExecute")
    };
    let mut added = false;
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !list.iter().any(|t| covers(t, key)) {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
            added = true;
        }
    }
    if added {
        spec["tolerations"] = Value::Array(list);
    }
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c["image"].as_str().unwrap_or("").to_string();
                let tag_latest = {
                    let last = image.rsplit('/').next().unwrap_or("");
                    !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"))
                };
                set_default(
                    c,
                    "imagePullPolicy",
                    json!(if tag_latest { "Always" } else { "IfNotPresent" }),
                );
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Kubernetes' defaults for a new object of `res` (the fields kubectl shows
/// back in `-o yaml`).
pub fn default(res: &Resource, obj: &mut Value) {
    match res.kind {
        "PersistentVolume" => {
            set_default(
                &mut obj["spec"],
                "persistentVolumeReclaimPolicy",
                json!("Retain"),
            );
            set_default(&mut obj["spec"], "volumeMode", json!("Filesystem"));
            set_default(obj, "status", json!({}));
            set_default(&mut obj["status"], "phase", json!("Pending"));
        }
        "PersistentVolumeClaim" => {
            set_default(&mut obj["spec"], "volumeMode", json!("Filesystem"));
            set_default(obj, "status", json!({}));
            set_default(&mut obj["status"], "phase", json!("Pending"));
        }
        "StorageClass" => {
            set_default(obj, "reclaimPolicy", json!("Delete"));
            set_default(obj, "volumeBindingMode", json!("Immediate"));
        }
        "PriorityClass" => {
            set_default(obj, "value", json!(0));
            set_default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        "Pod" => {
            default_pod_spec(&mut obj["spec"]);
            default_tolerations(&mut obj["spec"]);
            set_default(obj, "status", json!({}));
            set_default(&mut obj["status"], "phase", json!("Pending"));
        }
        "Deployment" => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(spec, "strategy", json!({}));
            set_default(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                set_default(
                    &mut spec["strategy"],
                    "rollingUpdate",
                    json!({"maxUnavailable": "25%", "maxSurge": "25%"}),
                );
            }
            default_pod_spec(&mut spec["template"]["spec"]);
        }
        "ReplicaSet" | "StatefulSet" => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            if res.kind == "StatefulSet" {
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
            }
            default_pod_spec(&mut spec["template"]["spec"]);
        }
        "DaemonSet" => {
            let spec = &mut obj["spec"];
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default_pod_spec(&mut spec["template"]["spec"]);
        }
        "Job" => {
            let spec = &mut obj["spec"];
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completions", json!(1));
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(
                &mut spec["template"]["spec"],
                "restartPolicy",
                json!("Never"),
            );
            default_pod_spec(&mut spec["template"]["spec"]);
        }
        "CronJob" => {
            let spec = &mut obj["spec"];
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            default_pod_spec(&mut spec["jobTemplate"]["spec"]["template"]["spec"]);
        }
        "Service" => {
            let spec = &mut obj["spec"];
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    set_default(p, "targetPort", port);
                }
            }
        }
        "Namespace" => {
            set_default(obj, "spec", json!({}));
            set_default(&mut obj["spec"], "finalizers", json!(["kubernetes"]));
            set_default(obj, "status", json!({}));
            set_default(&mut obj["status"], "phase", json!("Active"));
        }
        "Secret" => {
            set_default(obj, "type", json!("Opaque"));
            // stringData is write-only: merged into data, base64-encoded.
            if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                use base64::Engine;
                if let Some(sd) = sd.as_object() {
                    for (k, v) in sd {
                        let enc = base64::engine::general_purpose::STANDARD
                            .encode(v.as_str().unwrap_or("").as_bytes());
                        set_default(obj, "data", json!({}));
                        obj["data"][k] = json!(enc);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "uid": "u-1"}, "spec": spec})
    }

    #[test]
    fn a_jobs_selector_is_generated_from_its_uid_as_kubernetes_does() {
        let mut j = job(json!({"template": {"spec": {"containers": []}}}));
        generate_job_selector(&mut j).unwrap();
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"],
            json!({"job-name": "pi", "batch.kubernetes.io/job-name": "pi",
                   "controller-uid": "u-1", "batch.kubernetes.io/controller-uid": "u-1"})
        );

        // A selector of one's own needs manualSelector.
        let mut j = job(json!({"selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {}}}));
        let e = generate_job_selector(&mut j).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("spec.selector") && e.message.contains("not auto-generated"),
            "{}",
            e.message
        );
        let mut j = job(json!({"manualSelector": true,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {}}}));
        generate_job_selector(&mut j).unwrap();
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"app": "x"}}));
        let mut j = job(json!({"manualSelector": true, "template": {"spec": {}}}));
        let e = generate_job_selector(&mut j).unwrap_err();
        assert!(
            e.message.contains("spec.selector: Required value"),
            "{}",
            e.message
        );
    }
}
