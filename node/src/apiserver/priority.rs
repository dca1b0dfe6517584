//! Kubernetes' Priority admission and the PriorityClass rules around it:
//! a pod's `spec.priority` and `spec.preemptionPolicy` come from its
//! PriorityClass — or the cluster's global default class, or 0 — and not
//! from the pod's author; at most one class is the global default; the two
//! system classes every cluster has cannot be deleted or imitated.

use serde_json::{Value, json};

use super::resources::{self, Resource};
use super::status::{ApiError, Cause};
use super::storage::{Objects, Stored};

/// The highest value a user's PriorityClass may have.
pub const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;

/// Kubernetes' system classes: (name, value, description).
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

fn classes() -> &'static Resource {
    resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("priorityclasses served")
}

/// The system classes, as the cluster starts with them.
pub fn system_classes() -> impl Iterator<Item = Value> {
    SYSTEM_CLASSES.iter().map(|(name, value, description)| {
        json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        })
    })
}

/// A PriorityClass on its own: `system-` names are the system classes'
/// only, a user's value is at most [`HIGHEST_USER_DEFINABLE`].
pub fn validate(class: &Value, causes: &mut Vec<Cause>) {
    let name = class["metadata"]["name"].as_str().unwrap_or("");
    let value = class["value"].as_i64().unwrap_or(0);
    if name.starts_with("system-") {
        let global = class["globalDefault"].as_bool().unwrap_or(false);
        let error = match SYSTEM_CLASSES.iter().find(|c| c.0 == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some(c) if c.1 != value => {
                Some(format!("value of {name} PriorityClass must be {}", c.1))
            }
            Some(_) if global => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(e) = error {
            causes.push(Cause::forbidden(
                "metadata.name",
                format!(
                    "Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: {e}"
                ),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE {
        causes.push(Cause::forbidden(
            "value",
            format!(
                "Forbidden: maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"
            ),
        ));
    }
    if let Some(p) = class["preemptionPolicy"].as_str()
        && !matches!(p, "Never" | "PreemptLowerPriority")
    {
        causes.push(Cause::not_supported(
            "preemptionPolicy",
            format!(
                "Unsupported value: \"{p}\": supported values: \"Never\", \"PreemptLowerPriority\""
            ),
        ));
    }
}

/// What an update may not change: the value and the preemption policy.
pub fn validate_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if old["value"] != new["value"] {
        // (Kubernetes' path, capital V and all.)
        causes.push(Cause::forbidden(
            "Value",
            "Forbidden: may not be changed in an update.",
        ));
    }
    if old["preemptionPolicy"] != new["preemptionPolicy"] {
        causes.push(Cause::invalid(
            "preemptionPolicy",
            format!(
                "Invalid value: {}: field is immutable",
                new["preemptionPolicy"]
            ),
        ));
    }
    causes
}

/// A system class cannot be deleted.
pub fn check_delete(name: &str) -> Result<(), ApiError> {
    if SYSTEM_CLASSES.iter().any(|c| c.0 == name) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: this is a system priority class and cannot be deleted"
            ),
        ));
    }
    Ok(())
}

/// The global default class: of several (two writers racing), the lowest
/// value, as Kubernetes picks. Read from this member's state, as the
/// admission plugin reads its informer.
async fn default_class(objects: &Objects) -> Result<Option<Stored>, ApiError> {
    let all = objects.list_local(&classes().prefix(None)).await?;
    Ok(all
        .into_iter()
        .filter(|c| c.object["globalDefault"].as_bool() == Some(true))
        .min_by_key(|c| c.object["value"].as_i64().unwrap_or(0)))
}

/// Creating or updating a class: a second global default is refused.
pub async fn admit_class(objects: &Objects, class: &Value) -> Result<(), ApiError> {
    if class["globalDefault"].as_bool() != Some(true) {
        return Ok(());
    }
    let name = class["metadata"]["name"].as_str().unwrap_or("");
    match default_class(objects).await? {
        Some(d) if d.object["metadata"]["name"] != name => Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: PriorityClass {} is already marked as default. Only one default can exist",
                d.object["metadata"]["name"].as_str().unwrap_or("")
            ),
        )),
        _ => Ok(()),
    }
}

/// A new pod's priority and preemption policy, from the class it names,
/// else the global default class (whose name it then takes), else 0 and
/// `PreemptLowerPriority`. A pod that states either differently is
/// refused, as Kubernetes refuses it.
pub async fn admit_pod(objects: &Objects, name: &str, pod: &mut Value) -> Result<(), ApiError> {
    let forbidden = |why: String| {
        ApiError::new(
            403,
            "Forbidden",
            format!("pods \"{name}\" is forbidden: {why}"),
        )
    };
    let named = pod["spec"]["priorityClassName"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let class = match named {
        // The local view first, a quorum read before refusing.
        Some(n) => match objects.get_known(&classes().key(None, &n)).await? {
            Some(c) => Some(c.object),
            None => {
                return Err(forbidden(format!(
                    "no PriorityClass with name {n} was found"
                )));
            }
        },
        None => {
            let d = default_class(objects).await?.map(|c| c.object);
            if let Some(d) = &d {
                pod["spec"]["priorityClassName"] = d["metadata"]["name"].clone();
            }
            d
        }
    };
    let priority = class
        .as_ref()
        .map_or(0, |c| c["value"].as_i64().unwrap_or(0));
    let policy = class
        .as_ref()
        .and_then(|c| c["preemptionPolicy"].as_str())
        .unwrap_or("PreemptLowerPriority")
        .to_string();
    if let Some(p) = pod["spec"]["priority"].as_i64()
        && p != priority
    {
        return Err(forbidden(format!(
            "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(p) = pod["spec"]["preemptionPolicy"].as_str()
        && p != policy
    {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    pod["spec"]["priority"] = json!(priority);
    pod["spec"]["preemptionPolicy"] = json!(policy);
    Ok(())
}
