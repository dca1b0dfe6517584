//! Patch-strategy metadata: which lists merge, and by which key.
//!
//! Kubernetes keeps this in Go struct tags (`patchStrategy:"merge"
//! patchMergeKey:"name"`) that the strategic merge patch walker reads by
//! reflection. skiff has no Go structs, so the tags live here as a static
//! table: one [`TypeMeta`] per Go struct that has, or leads to, a field with a
//! strategy. Fields absent from a table behave as untagged fields do in
//! Kubernetes: objects merge key by key, lists are replaced whole.
//!
//! The table was taken from the struct tags of `k8s.io/api` (core/v1, apps/v1,
//! batch/v1, policy/v1, autoscaling/v2, meta/v1) as of Kubernetes 1.32. Lists
//! that Kubernetes marks `listType=atomic` or leaves untagged (tolerations,
//! readinessGates, envFrom, resizePolicy, taints, ingress rules, ...) are
//! deliberately absent: the default, replace, is their strategy.
//!
//! [`for_kind`] picks the root schema for an object. Kinds it does not know,
//! custom resources above all, get no table: the real API server answers a
//! strategic merge patch on a custom resource with 415 Unsupported Media Type,
//! and kubectl, knowing that, sends JSON merge patches for them. A server that
//! prefers to accept the patch anyway can walk it with [`OPAQUE`], which gives
//! JSON merge patch semantics (objects merge, lists replace, null deletes) while
//! still honouring `$patch` directives.

use std::fmt;

/// What a field's `patchStrategy` tag says, less `retainKeys`, which
/// [`FieldPatch::retain_keys`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchStrategy {
    /// No tag: a list is replaced by the patch's list, an object is merged key
    /// by key.
    #[default]
    Default,
    /// `merge`: a list of objects merges item by item on the field's merge
    /// key; a list of primitives merges as a set.
    Merge,
    /// `replace`: the patch's value replaces the field whole, objects included.
    Replace,
}

/// The patch metadata of one field, as the walker sees it.
#[derive(Clone, Copy)]
pub struct FieldPatch<'a> {
    pub strategy: PatchStrategy,
    /// `retainKeys` is part of the strategy: a client building a patch sends
    /// `$retainKeys` for this object (or for each item of this list). Applying
    /// a patch honours `$retainKeys` wherever it appears, so the walker does
    /// not need this; it is kept for patch generation and for documentation.
    pub retain_keys: bool,
    /// `patchMergeKey`: the field identifying an item of a merging list of
    /// objects.
    pub merge_key: Option<&'a str>,
    /// Schema of the field's value: the nested object, or each list item.
    pub schema: &'a dyn PatchSchema,
}

impl fmt::Debug for FieldPatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldPatch")
            .field("strategy", &self.strategy)
            .field("retain_keys", &self.retain_keys)
            .field("merge_key", &self.merge_key)
            .field("schema", &self.schema.name())
            .finish()
    }
}

/// A source of patch metadata for the fields of one kind of JSON object.
///
/// The static tables of this module implement it; a schema built from a CRD's
/// OpenAPI (`x-kubernetes-patch-strategy`) could too.
pub trait PatchSchema: Send + Sync {
    /// The name of the type, for messages.
    fn name(&self) -> &str;
    /// Metadata for the field `name`. Unknown fields get the default strategy
    /// and an opaque schema, as untagged fields do.
    fn field(&self, name: &str) -> FieldPatch<'_>;
}

/// The schema of an object of unknown type: every field untagged, all the way
/// down.
#[derive(Debug, Clone, Copy)]
pub struct Opaque;

/// The one [`Opaque`] schema.
pub static OPAQUE: Opaque = Opaque;

impl PatchSchema for Opaque {
    fn name(&self) -> &str {
        "opaque"
    }

    fn field(&self, _name: &str) -> FieldPatch<'_> {
        FieldPatch {
            strategy: PatchStrategy::Default,
            retain_keys: false,
            merge_key: None,
            schema: &OPAQUE,
        }
    }
}

/// Patch metadata of one Go struct: its fields that carry a strategy or lead
/// to one.
pub struct TypeMeta {
    pub name: &'static str,
    pub fields: &'static [FieldMeta],
}

/// One row of a [`TypeMeta`].
#[derive(Clone, Copy)]
pub struct FieldMeta {
    /// The JSON name of the field.
    pub name: &'static str,
    pub strategy: PatchStrategy,
    pub retain_keys: bool,
    pub merge_key: Option<&'static str>,
    /// The type of the nested object or of each list item, when it has fields
    /// of its own in this table; `None` means opaque.
    pub ty: Option<&'static TypeMeta>,
}

impl fmt::Debug for TypeMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeMeta")
            .field("name", &self.name)
            .field("fields", &self.fields)
            .finish()
    }
}

impl fmt::Debug for FieldMeta {
    // Only the name of the nested type: printing it whole would print the
    // whole table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldMeta")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("retain_keys", &self.retain_keys)
            .field("merge_key", &self.merge_key)
            .field("ty", &self.ty.map(|t| t.name))
            .finish()
    }
}

impl TypeMeta {
    /// The row for `name`, if the table has one.
    pub fn get(&self, name: &str) -> Option<&'static FieldMeta> {
        self.fields.iter().find(|f| f.name == name)
    }
}

impl PatchSchema for TypeMeta {
    fn name(&self) -> &str {
        self.name
    }

    fn field(&self, name: &str) -> FieldPatch<'_> {
        match self.get(name) {
            Some(f) => FieldPatch {
                strategy: f.strategy,
                retain_keys: f.retain_keys,
                merge_key: f.merge_key,
                schema: match f.ty {
                    Some(t) => t,
                    None => &OPAQUE,
                },
            },
            None => OPAQUE.field(name),
        }
    }
}

// Row builders, so that the tables below read like the Go tags they copy.

/// An untagged field whose value has tagged fields further down.
const fn nested(name: &'static str, ty: &'static TypeMeta) -> FieldMeta {
    FieldMeta {
        name,
        strategy: PatchStrategy::Default,
        retain_keys: false,
        merge_key: None,
        ty: Some(ty),
    }
}

/// `patchStrategy:"merge" patchMergeKey:"<key>"` on a list of objects.
const fn merge_by(
    name: &'static str,
    key: &'static str,
    ty: Option<&'static TypeMeta>,
) -> FieldMeta {
    FieldMeta {
        name,
        strategy: PatchStrategy::Merge,
        retain_keys: false,
        merge_key: Some(key),
        ty,
    }
}

/// `patchStrategy:"merge,retainKeys" patchMergeKey:"<key>"`.
const fn merge_retain_by(name: &'static str, key: &'static str) -> FieldMeta {
    FieldMeta {
        name,
        strategy: PatchStrategy::Merge,
        retain_keys: true,
        merge_key: Some(key),
        ty: None,
    }
}

/// `patchStrategy:"merge"` on a list of primitives: a set union.
const fn merge_set(name: &'static str) -> FieldMeta {
    FieldMeta {
        name,
        strategy: PatchStrategy::Merge,
        retain_keys: false,
        merge_key: None,
        ty: None,
    }
}

/// `patchStrategy:"retainKeys"` on an object (a union whose unset members are
/// cleared).
const fn retain_keys(name: &'static str) -> FieldMeta {
    FieldMeta {
        name,
        strategy: PatchStrategy::Default,
        retain_keys: true,
        merge_key: None,
        ty: None,
    }
}

// meta/v1

/// `metav1.ObjectMeta`. `labels` and `annotations` are plain maps (merged key
/// by key); `managedFields` is untagged.
pub static OBJECT_META: TypeMeta = TypeMeta {
    name: "ObjectMeta",
    fields: &[
        merge_set("finalizers"),
        merge_by("ownerReferences", "uid", None),
    ],
};

/// Any object whose only tagged fields are in its metadata.
pub static OBJECT: TypeMeta = TypeMeta {
    name: "Object",
    fields: &[nested("metadata", &OBJECT_META)],
};

/// A status whose only tagged field is `conditions`, merged by `type`
/// (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController,
/// Namespace, PersistentVolumeClaim, PodDisruptionBudget, Service,
/// HorizontalPodAutoscaler).
pub static CONDITIONS_STATUS: TypeMeta = TypeMeta {
    name: "ConditionsStatus",
    fields: &[merge_by("conditions", "type", None)],
};

// core/v1: pods

/// `Container`, and `EphemeralContainer`, which has the same tags. `envFrom`
/// and `resizePolicy` are untagged (replaced whole).
pub static CONTAINER: TypeMeta = TypeMeta {
    name: "Container",
    fields: &[
        merge_by("ports", "containerPort", None),
        merge_by("env", "name", None),
        merge_by("volumeMounts", "mountPath", None),
        merge_by("volumeDevices", "devicePath", None),
    ],
};

/// `PodSpec`. `tolerations` and `readinessGates` are untagged.
pub static POD_SPEC: TypeMeta = TypeMeta {
    name: "PodSpec",
    fields: &[
        merge_retain_by("volumes", "name"),
        merge_by("initContainers", "name", Some(&CONTAINER)),
        merge_by("containers", "name", Some(&CONTAINER)),
        merge_by("ephemeralContainers", "name", Some(&CONTAINER)),
        merge_by("imagePullSecrets", "name", None),
        merge_by("hostAliases", "ip", None),
        merge_by("topologySpreadConstraints", "topologyKey", None),
        merge_by("schedulingGates", "name", None),
        merge_retain_by("resourceClaims", "name"),
    ],
};

/// `PodStatus`. The container status lists are untagged.
pub static POD_STATUS: TypeMeta = TypeMeta {
    name: "PodStatus",
    fields: &[
        merge_by("conditions", "type", None),
        merge_by("podIPs", "ip", None),
        merge_by("hostIPs", "ip", None),
        merge_retain_by("resourceClaimStatuses", "name"),
    ],
};

pub static POD: TypeMeta = TypeMeta {
    name: "Pod",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("spec", &POD_SPEC),
        nested("status", &POD_STATUS),
    ],
};

pub static POD_TEMPLATE_SPEC: TypeMeta = TypeMeta {
    name: "PodTemplateSpec",
    fields: &[nested("metadata", &OBJECT_META), nested("spec", &POD_SPEC)],
};

/// The kind `PodTemplate`.
pub static POD_TEMPLATE: TypeMeta = TypeMeta {
    name: "PodTemplate",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("template", &POD_TEMPLATE_SPEC),
    ],
};

// Workloads: everything that embeds a pod template.

/// A spec whose only way down to tagged fields is `template` (ReplicaSet,
/// StatefulSet, DaemonSet, Job, ReplicationController). Their update
/// strategies are untagged, unlike Deployment's.
pub static TEMPLATE_SPEC: TypeMeta = TypeMeta {
    name: "TemplateSpec",
    fields: &[nested("template", &POD_TEMPLATE_SPEC)],
};

/// A workload: metadata, a spec with a pod template, a conditions status.
pub static WORKLOAD: TypeMeta = TypeMeta {
    name: "Workload",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("spec", &TEMPLATE_SPEC),
        nested("status", &CONDITIONS_STATUS),
    ],
};

/// `DeploymentSpec`: `strategy` is `patchStrategy:"retainKeys"`, so that
/// switching to `Recreate` can clear `rollingUpdate`.
pub static DEPLOYMENT_SPEC: TypeMeta = TypeMeta {
    name: "DeploymentSpec",
    fields: &[
        nested("template", &POD_TEMPLATE_SPEC),
        retain_keys("strategy"),
    ],
};

pub static DEPLOYMENT: TypeMeta = TypeMeta {
    name: "Deployment",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("spec", &DEPLOYMENT_SPEC),
        nested("status", &CONDITIONS_STATUS),
    ],
};

/// `JobTemplateSpec`, inside a CronJob.
pub static JOB_TEMPLATE_SPEC: TypeMeta = TypeMeta {
    name: "JobTemplateSpec",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("spec", &TEMPLATE_SPEC),
    ],
};

pub static CRON_JOB_SPEC: TypeMeta = TypeMeta {
    name: "CronJobSpec",
    fields: &[nested("jobTemplate", &JOB_TEMPLATE_SPEC)],
};

/// `CronJob`. Its status (`active`, an untagged list) has no tagged fields.
pub static CRON_JOB: TypeMeta = TypeMeta {
    name: "CronJob",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("spec", &CRON_JOB_SPEC),
    ],
};

// core/v1: the rest

/// `ServiceSpec`: `ports` merge by `port` (the API also lists `protocol` as a
/// list-map key, but the patch merge key is `port` alone).
pub static SERVICE_SPEC: TypeMeta = TypeMeta {
    name: "ServiceSpec",
    fields: &[merge_by("ports", "port", None)],
};

pub static SERVICE: TypeMeta = TypeMeta {
    name: "Service",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("spec", &SERVICE_SPEC),
        nested("status", &CONDITIONS_STATUS),
    ],
};

/// `NodeSpec`: `podCIDRs` merges as a set; `taints` is untagged.
pub static NODE_SPEC: TypeMeta = TypeMeta {
    name: "NodeSpec",
    fields: &[merge_set("podCIDRs")],
};

/// `NodeStatus`: `images`, `volumesInUse` and `volumesAttached` are untagged.
pub static NODE_STATUS: TypeMeta = TypeMeta {
    name: "NodeStatus",
    fields: &[
        merge_by("conditions", "type", None),
        merge_by("addresses", "type", None),
    ],
};

pub static NODE: TypeMeta = TypeMeta {
    name: "Node",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("spec", &NODE_SPEC),
        nested("status", &NODE_STATUS),
    ],
};

/// `Namespace`: `spec.finalizers` is untagged (unlike `metadata.finalizers`).
pub static NAMESPACE: TypeMeta = TypeMeta {
    name: "Namespace",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("status", &CONDITIONS_STATUS),
    ],
};

/// `PersistentVolumeClaim`.
pub static PERSISTENT_VOLUME_CLAIM: TypeMeta = TypeMeta {
    name: "PersistentVolumeClaim",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("status", &CONDITIONS_STATUS),
    ],
};

/// `ServiceAccount`: `secrets` merge by `name`; `imagePullSecrets` is untagged
/// here (unlike in PodSpec).
pub static SERVICE_ACCOUNT: TypeMeta = TypeMeta {
    name: "ServiceAccount",
    fields: &[
        nested("metadata", &OBJECT_META),
        merge_by("secrets", "name", None),
    ],
};

/// An object with a status whose conditions merge by `type`, and nothing else
/// tagged (PodDisruptionBudget, HorizontalPodAutoscaler v2).
pub static WITH_CONDITIONS: TypeMeta = TypeMeta {
    name: "WithConditions",
    fields: &[
        nested("metadata", &OBJECT_META),
        nested("status", &CONDITIONS_STATUS),
    ],
};

/// The root schema for objects of `kind` in `api_version`, for the kinds whose
/// Go types kubectl knows (and so sends strategic merge patches for).
///
/// `None` for anything else, custom resources included: see the module docs
/// for what the API server should do then.
pub fn for_kind(api_version: &str, kind: &str) -> Option<&'static TypeMeta> {
    let meta = match (api_version, kind) {
        ("v1", "Pod") => &POD,
        ("v1", "PodTemplate") => &POD_TEMPLATE,
        ("v1", "ReplicationController") => &WORKLOAD,
        ("v1", "Service") => &SERVICE,
        ("v1", "Node") => &NODE,
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "PersistentVolumeClaim") => &PERSISTENT_VOLUME_CLAIM,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        (
            "v1",
            "ConfigMap" | "Secret" | "Endpoints" | "Event" | "PersistentVolume" | "LimitRange"
            | "ResourceQuota",
        ) => &OBJECT,
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        ("apps/v1", "ReplicaSet" | "StatefulSet" | "DaemonSet") => &WORKLOAD,
        ("apps/v1", "ControllerRevision") => &OBJECT,
        ("batch/v1", "Job") => &WORKLOAD,
        ("batch/v1", "CronJob") => &CRON_JOB,
        ("policy/v1", "PodDisruptionBudget") => &WITH_CONDITIONS,
        ("autoscaling/v2", "HorizontalPodAutoscaler") => &WITH_CONDITIONS,
        ("autoscaling/v1", "HorizontalPodAutoscaler") => &OBJECT,
        ("networking.k8s.io/v1", "Ingress" | "IngressClass" | "NetworkPolicy") => &OBJECT,
        ("coordination.k8s.io/v1", "Lease") => &OBJECT,
        ("discovery.k8s.io/v1", "EndpointSlice") => &OBJECT,
        ("events.k8s.io/v1", "Event") => &OBJECT,
        ("storage.k8s.io/v1", "StorageClass") => &OBJECT,
        (
            "rbac.authorization.k8s.io/v1",
            "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding",
        ) => &OBJECT,
        _ => return None,
    };
    Some(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path<'a>(root: &'a dyn PatchSchema, fields: &[&str]) -> FieldPatch<'a> {
        let (last, init) = fields.split_last().expect("a path");
        let mut schema = root;
        for f in init {
            schema = schema.field(f).schema;
        }
        schema.field(last)
    }

    #[test]
    fn deployment_reaches_container_env_through_the_template() {
        let d = for_kind("apps/v1", "Deployment").unwrap();
        let env = path(d, &["spec", "template", "spec", "containers", "env"]);
        assert_eq!(env.strategy, PatchStrategy::Merge);
        assert_eq!(env.merge_key, Some("name"));
        let ports = path(d, &["spec", "template", "spec", "containers", "ports"]);
        assert_eq!(ports.merge_key, Some("containerPort"));
        let strategy = path(d, &["spec", "strategy"]);
        assert!(strategy.retain_keys);
        assert_eq!(strategy.strategy, PatchStrategy::Default);
    }

    #[test]
    fn cronjob_reaches_pod_spec_through_job_template() {
        let c = for_kind("batch/v1", "CronJob").unwrap();
        let vols = path(
            c,
            &["spec", "jobTemplate", "spec", "template", "spec", "volumes"],
        );
        assert_eq!(vols.merge_key, Some("name"));
        assert!(vols.retain_keys);
    }

    #[test]
    fn untagged_lists_and_unknown_fields_default() {
        let pod = for_kind("v1", "Pod").unwrap();
        let tol = path(pod, &["spec", "tolerations"]);
        assert_eq!(tol.strategy, PatchStrategy::Default);
        assert_eq!(tol.merge_key, None);
        let unknown = path(pod, &["spec", "noSuchField", "deeper"]);
        assert_eq!(unknown.strategy, PatchStrategy::Default);
        assert_eq!(unknown.schema.name(), "opaque");
    }

    #[test]
    fn finalizers_merge_as_a_set_and_owner_references_by_uid() {
        let cm = for_kind("v1", "ConfigMap").unwrap();
        let fin = path(cm, &["metadata", "finalizers"]);
        assert_eq!((fin.strategy, fin.merge_key), (PatchStrategy::Merge, None));
        let owners = path(cm, &["metadata", "ownerReferences"]);
        assert_eq!(owners.merge_key, Some("uid"));
    }

    #[test]
    fn unknown_kinds_and_versions_have_no_table() {
        assert!(for_kind("example.com/v1", "Widget").is_none());
        assert!(for_kind("apps/v1beta1", "Deployment").is_none());
        assert!(for_kind("v1", "Deployment").is_none());
    }
}
