//! API errors and their one conversion to the wire: a Kubernetes `Status`.

use serde_json::{Value, json};

/// A failed API request, as Kubernetes reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// One invalid field: its path, what is wrong, and the cause type
/// (`FieldValueInvalid`, `FieldValueRequired`, ...).
#[derive(Debug, Clone)]
pub struct Cause {
    pub field: String,
    pub message: String,
    pub kind: &'static str,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            message: message.into(),
            kind: "FieldValueInvalid",
        }
    }

    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            message: "Required value".into(),
            kind: "FieldValueRequired",
        }
    }

    /// A required value with Kubernetes' detail (`Required value: DETAIL`).
    pub fn required_with(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            message: format!("Required value: {detail}"),
            kind: "FieldValueRequired",
        }
    }

    pub fn not_supported(field: impl Into<String>, message: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            message: message.into(),
            kind: "FieldValueNotSupported",
        }
    }

    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            message: message.into(),
            kind: "FieldValueForbidden",
        }
    }

    pub fn duplicate(field: impl Into<String>, message: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            message: message.into(),
            kind: "FieldValueDuplicate",
        }
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        let what = qualified(group, plural);
        ApiError::new(404, "NotFound", format!("{what} \"{name}\" not found"))
            .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        let what = qualified(group, plural);
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{what} \"{name}\" already exists"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> ApiError {
        let what = qualified(group, plural);
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {what} \"{name}\": {why}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// A path the server does not serve, with the empty details a
    /// kube-apiserver sends (kubectl reads them: `kubectl debug` tells a
    /// missing subresource from a missing pod by their empty name).
    pub fn no_such_resource(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "NotFound", message).with_details(json!({}))
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 422 with one cause per bad field, as `kubectl` prints them.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let message = format!("{what} \"{name}\" is invalid: {}", list.join(", "));
        ApiError::new(422, "Invalid", message).with_details(json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes.iter().map(|c| json!({
                "reason": c.kind, "message": c.message, "field": c.field,
            })).collect::<Vec<_>>(),
        }))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> ApiError {
        let what = qualified(group, plural);
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{plural} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}"
            ),
        )
        .with_details(json!({"group": group, "kind": what}))
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    /// Server-side apply refused: fields another applier owns would change.
    /// `conflicts` are (manager, field path) pairs.
    pub fn apply_conflicts(conflicts: &[(String, String)]) -> ApiError {
        let n = conflicts.len();
        let message = if n == 1 {
            format!(
                "Apply failed with 1 conflict: conflict with \"{}\": {}",
                conflicts[0].0, conflicts[0].1
            )
        } else {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, f)| format!("- conflict with \"{m}\": {f}"))
                .collect();
            format!("Apply failed with {n} conflicts:\n{}", lines.join("\n"))
        };
        ApiError::new(409, "Conflict", message).with_details(json!({
            "causes": conflicts.iter().map(|(m, f)| json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{m}\""),
                "field": f,
            })).collect::<Vec<_>>(),
        }))
    }

    pub fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object on the wire.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl From<consensus::Error> for ApiError {
    fn from(e: consensus::Error) -> Self {
        use consensus::Error as E;
        match e {
            E::Compacted => ApiError::gone(format!("too old resource version: {e}")),
            E::FutureRevision => {
                ApiError::new(504, "Timeout", format!("Too large resource version: {e}"))
            }
            E::RequestTooLarge => ApiError::too_large("request is too large"),
            E::NoLeader | E::LeaderChanged | E::Timeout | E::Stopped => {
                ApiError::unavailable(format!("storage unavailable: {e}"))
            }
            other => ApiError::internal(format!("storage error: {other}")),
        }
    }
}

/// `pods` or `deployments.apps`, as Kubernetes names a resource in messages.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// A successful delete's Status.
pub fn success(details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
