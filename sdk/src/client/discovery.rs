//! What the server serves, from legacy discovery (`/api/v1`, `/apis`,
//! `/apis/G/V`), and kubectl's rules for naming a resource on the command
//! line (`po`, `pods`, `pod`, `Pod`, `deployments.apps`,
//! `deployments.v1.apps`).

use serde_json::Value;

use super::dynamic::ApiResource;
use super::{Client, Error};

/// The resources a server serves, preferred versions first.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    resources: Vec<ApiResource>,
}

impl Discovery {
    /// Reads the server's discovery documents.
    pub async fn run(client: &Client) -> Result<Discovery, Error> {
        let mut resources = Vec::new();
        let core = client.get_json("/api/v1").await?;
        resources.extend(parse_resource_list("", "v1", &core));
        let groups = client.get_json("/apis").await?;
        for g in groups["groups"].as_array().into_iter().flatten() {
            let name = g["name"].as_str().unwrap_or("");
            let preferred = g["preferredVersion"]["version"].as_str().unwrap_or("");
            let mut versions: Vec<&str> = g["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["version"].as_str())
                .collect();
            // The preferred version first: it is the one a bare name means.
            versions.sort_by_key(|v| *v != preferred);
            for v in versions {
                let list = client.get_json(&format!("/apis/{name}/{v}")).await?;
                resources.extend(parse_resource_list(name, v, &list));
            }
        }
        Ok(Discovery { resources })
    }

    /// A discovery of these resources (tests, or a cached copy).
    pub fn from_resources(resources: Vec<ApiResource>) -> Discovery {
        Discovery { resources }
    }

    pub fn resources(&self) -> &[ApiResource] {
        &self.resources
    }

    /// The resource a command-line name means, as kubectl resolves it:
    /// plural, singular, kind or short name, case-insensitive, optionally
    /// qualified by `.group` or `.version.group`.
    pub fn resolve(&self, name: &str) -> Option<&ApiResource> {
        let name = name.to_lowercase();
        let matches = |r: &ApiResource, n: &str| {
            r.plural == n
                || r.singular == n
                || r.kind.to_lowercase() == n
                || r.short_names.iter().any(|s| s == n)
        };
        // Unqualified names first (short names win over nothing: kubectl
        // expands them before anything else).
        if let Some(r) = self.resources.iter().find(|r| matches(r, &name)) {
            return Some(r);
        }
        let (first, rest) = name.split_once('.')?;
        // `deployments.v1.apps`
        if let Some((version, group)) = rest.split_once('.')
            && let Some(r) = self
                .resources
                .iter()
                .find(|r| r.version == version && r.group == group && matches(r, first))
        {
            return Some(r);
        }
        // `deployments.apps`
        self.resources
            .iter()
            .find(|r| r.group == rest && matches(r, first))
    }

    /// The resource of objects with this `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ApiResource> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }
}

/// The resources of one `APIResourceList`, less subresources.
pub fn parse_resource_list(group: &str, version: &str, list: &Value) -> Vec<ApiResource> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let plural = r["name"].as_str()?;
            if plural.contains('/') {
                return None;
            }
            let kind = r["kind"].as_str()?.to_string();
            let singular = r["singularName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_lowercase());
            Some(ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                kind,
                plural: plural.to_string(),
                singular,
                short_names: strings(&r["shortNames"]),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
                verbs: strings(&r["verbs"]),
                categories: strings(&r["categories"]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn discovery() -> Discovery {
        let mut all = parse_resource_list(
            "",
            "v1",
            &json!({"resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "shortNames": ["po"]},
                {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod"},
                {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node", "shortNames": ["no"]},
            ]}),
        );
        all.extend(parse_resource_list(
            "apps",
            "v1",
            &json!({"resources": [
                {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "shortNames": ["deploy"]},
            ]}),
        ));
        Discovery::from_resources(all)
    }

    #[test]
    fn names_resolve_like_kubectl() {
        let d = discovery();
        assert_eq!(d.resources().len(), 3, "subresources are left out");
        for n in ["po", "pod", "pods", "Pod", "PODS"] {
            assert_eq!(d.resolve(n).unwrap().plural, "pods", "{n}");
        }
        for n in [
            "deploy",
            "deployments.apps",
            "deployment.v1.apps",
            "Deployment",
        ] {
            assert_eq!(d.resolve(n).unwrap().kind, "Deployment", "{n}");
        }
        assert!(!d.resolve("no").unwrap().namespaced);
        assert!(d.resolve("deployments.batch").is_none());
        assert!(d.resolve("widgets").is_none());
        assert_eq!(
            d.by_kind("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert_eq!(d.by_kind("v1", "Node").unwrap().plural, "nodes");
        assert!(d.by_kind("apps/v2", "Deployment").is_none());
    }
}
