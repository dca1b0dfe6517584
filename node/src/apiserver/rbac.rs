//! RBAC: Role/ClusterRole rules granted through RoleBinding and
//! ClusterRoleBinding, evaluated for every request as Kubernetes' RBAC
//! authorizer does. `system:masters` is allowed everything.

use serde_json::Value;

use super::auth::User;
use super::handlers::Target;
use super::resources;
use super::status::ApiError;
use super::storage::Objects;

/// What a request wants to do.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

pub async fn authorize(
    objects: &Objects,
    user: &User,
    verb: &str,
    t: &Target,
) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb,
        group: t.res.group,
        resource: t.res.plural,
        subresource: t.sub.as_deref(),
        namespace: t.namespace.as_deref(),
        name: t.name.as_deref(),
    };
    // A node first: kept to its own objects whatever RBAC grants.
    super::noderestriction::check(objects, user, &attrs).await?;
    if allowed(objects, user, &attrs).await? {
        return Ok(());
    }
    let what = match attrs.subresource {
        Some(s) => format!("{}/{s}", attrs.resource),
        None => attrs.resource.to_string(),
    };
    Err(ApiError::forbidden(
        &user.name,
        verb,
        attrs.group,
        &what,
        attrs.namespace,
    ))
}

fn subject_matches(s: &Value, user: &User, binding_ns: Option<&str>) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str() {
        Some("User") => name == user.name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s["namespace"].as_str().or(binding_ns).unwrap_or("");
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn has(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == want))
}

fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => a.name.is_some_and(|n| names.iter().any(|x| x == n)),
        _ => true,
    };
    has(&rule["verbs"], a.verb)
        && has(&rule["apiGroups"], a.group)
        && (has(&rule["resources"], &resource)
            || rule["resources"].as_array().is_some_and(|l| {
                l.iter().any(|r| {
                    r.as_str().is_some_and(|r| {
                        r == format!("{}/*", a.resource)
                            || (a.subresource.is_some()
                                && r == format!("*/{}", a.subresource.unwrap_or("")))
                    })
                })
            }))
        && names_ok
}

async fn role_rules(
    objects: &Objects,
    role_ref: &Value,
    binding_ns: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let name = role_ref["name"].as_str().unwrap_or("");
    let (res, ns) = match role_ref["kind"].as_str() {
        Some("ClusterRole") => (
            resources::find("rbac.authorization.k8s.io", "v1", "clusterroles"),
            None,
        ),
        Some("Role") => (
            resources::find("rbac.authorization.k8s.io", "v1", "roles"),
            binding_ns,
        ),
        _ => return Ok(Vec::new()),
    };
    let res = res.expect("rbac resources served");
    Ok(match objects.get(&res.key(ns, name)).await? {
        Some(s) => s.object["rules"].as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    })
}

/// Whether `user` may do `a`. Bindings are read from the store for each
/// decision (no cache yet).
pub async fn allowed(objects: &Objects, user: &User, a: &Attributes<'_>) -> Result<bool, ApiError> {
    if user.is_master() {
        return Ok(true);
    }
    let mut allowed = false;
    visit_rules(objects, user, a.namespace, |rule| {
        allowed = rule_allows(rule, a);
        allowed
    })
    .await?;
    Ok(allowed)
}

/// Every rule granted to `user` cluster-wide and in `namespace`, for
/// SelfSubjectRulesReview (`kubectl auth can-i --list`).
pub async fn rules_for(
    objects: &Objects,
    user: &User,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    if user.is_master() {
        return Ok(vec![
            serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
        ]);
    }
    let mut rules = Vec::new();
    visit_rules(objects, user, namespace, |rule| {
        rules.push(rule.clone());
        false
    })
    .await?;
    Ok(rules)
}

/// Calls `f` with each rule of each role bound to `user` (cluster-wide,
/// then in `namespace`) until it returns true.
async fn visit_rules(
    objects: &Objects,
    user: &User,
    namespace: Option<&str>,
    mut f: impl FnMut(&Value) -> bool,
) -> Result<(), ApiError> {
    let crb =
        resources::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").expect("served");
    let rb = resources::find("rbac.authorization.k8s.io", "v1", "rolebindings").expect("served");
    let mut scopes = vec![(crb.prefix(None), None)];
    if let Some(ns) = namespace {
        scopes.push((rb.prefix(Some(ns)), Some(ns)));
    }
    for (prefix, ns) in scopes {
        let (bindings, _, _) = objects.list(&prefix, None, 0, 0).await?;
        for b in bindings {
            let b = b.object;
            if b["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| subject_matches(s, user, ns)))
            {
                for rule in role_rules(objects, &b["roleRef"], ns).await? {
                    if f(&rule) {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule =
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        let a = |verb, resource, sub, name| Attributes {
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: Some("dev"),
            name,
        };
        assert!(rule_allows(&rule, &a("get", "pods", None, Some("x"))));
        assert!(rule_allows(
            &rule,
            &a("get", "pods", Some("log"), Some("x"))
        ));
        assert!(!rule_allows(&rule, &a("delete", "pods", None, Some("x"))));
        assert!(!rule_allows(&rule, &a("get", "secrets", None, Some("x"))));
        assert!(!rule_allows(
            &rule,
            &a("get", "pods", Some("exec"), Some("x"))
        ));
        let named = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"], "resourceNames": ["only"]});
        assert!(rule_allows(&named, &a("get", "pods", None, Some("only"))));
        assert!(!rule_allows(&named, &a("get", "pods", None, Some("other"))));
        assert!(!rule_allows(&named, &a("list", "pods", None, None)));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let u = User {
            name: "system:serviceaccount:dev:bot".into(),
            groups: vec!["system:serviceaccounts".into()],
        };
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "bot"}),
            &u,
            Some("dev")
        ));
        assert!(!subject_matches(
            &json!({"kind": "ServiceAccount", "name": "bot"}),
            &u,
            Some("prod")
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "system:serviceaccounts"}),
            &u,
            None
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": "bot"}),
            &u,
            None
        ));
    }
}
