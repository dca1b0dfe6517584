#!/usr/bin/env python3
"""Generate node/src/apiserver/proto/table.rs: the Kubernetes protobuf
schema (tag -> JSON name, wire kind, message type) for the kinds skiff
decodes from `application/vnd.kubernetes.protobuf` request bodies.

Inputs (read-only, from the cargo registry):
  * k8s-pb 0.9.0       — prost-generated structs: tags, wire kinds, types;
  * k8s-openapi 0.29.0 — the JSON field names (`"volumeID" => Field::Key_volume_id`).

Only the message types reachable from ROOTS are emitted.

Usage: scripts/gen-proto-table.py [--check]   (run from the repo root)
"""

import glob
import os
import re
import sys

HOME = os.path.expanduser("~")


def find_crate(name):
    hits = sorted(glob.glob(os.path.join(HOME, ".cargo/registry/src/*", name)))
    if not hits:
        sys.exit(f"gen-proto-table: {name} is not in ~/.cargo/registry/src (run `cargo fetch`)")
    return hits[-1]


PB = os.path.join(find_crate("k8s-pb-0.9.0"), "src")
OPENAPI = os.path.join(find_crate("k8s-openapi-0.29.0"), "src", "v1_33")
OUT = "node/src/apiserver/proto/table.rs"

CORE = "api/core/v1"
APPS = "api/apps/v1"
BATCH = "api/batch/v1"
META = "apimachinery/pkg/apis/meta/v1"

# (apiVersion, kind) -> (k8s-pb module, struct). apiVersion None: any.
ROOTS = [
    ("v1", "Namespace", CORE, "Namespace"),
    ("v1", "Pod", CORE, "Pod"),
    ("v1", "Service", CORE, "Service"),
    ("v1", "Endpoints", CORE, "Endpoints"),
    ("v1", "ConfigMap", CORE, "ConfigMap"),
    ("v1", "Secret", CORE, "Secret"),
    ("v1", "ServiceAccount", CORE, "ServiceAccount"),
    ("v1", "Node", CORE, "Node"),
    ("v1", "Event", CORE, "Event"),
    ("v1", "PersistentVolumeClaim", CORE, "PersistentVolumeClaim"),
    ("v1", "PersistentVolume", CORE, "PersistentVolume"),
    ("storage.k8s.io/v1", "StorageClass", "api/storage/v1", "StorageClass"),
    ("v1", "Binding", CORE, "Binding"),
    ("apps/v1", "Deployment", APPS, "Deployment"),
    ("apps/v1", "ReplicaSet", APPS, "ReplicaSet"),
    ("apps/v1", "DaemonSet", APPS, "DaemonSet"),
    ("apps/v1", "StatefulSet", APPS, "StatefulSet"),
    ("batch/v1", "Job", BATCH, "Job"),
    ("batch/v1", "CronJob", BATCH, "CronJob"),
    ("networking.k8s.io/v1", "Ingress", "api/networking/v1", "Ingress"),
    ("networking.k8s.io/v1", "IngressClass", "api/networking/v1", "IngressClass"),
    ("discovery.k8s.io/v1", "EndpointSlice", "api/discovery/v1", "EndpointSlice"),
    ("rbac.authorization.k8s.io/v1", "Role", "api/rbac/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "api/rbac/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "api/rbac/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "api/rbac/v1", "ClusterRoleBinding"),
    ("coordination.k8s.io/v1", "Lease", "api/coordination/v1", "Lease"),
    ("node.k8s.io/v1", "RuntimeClass", "api/node/v1", "RuntimeClass"),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        "api/authorization/v1",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        "api/authorization/v1",
        "SelfSubjectRulesReview",
    ),
    ("authentication.k8s.io/v1", "TokenRequest", "api/authentication/v1", "TokenRequest"),
    ("autoscaling/v1", "Scale", "api/autoscaling/v1", "Scale"),
    ("policy/v1", "PodDisruptionBudget", "api/policy/v1", "PodDisruptionBudget"),
    ("policy/v1", "Eviction", "api/policy/v1", "Eviction"),
    ("scheduling.k8s.io/v1", "PriorityClass", "api/scheduling/v1", "PriorityClass"),
    # client-go encodes DeleteOptions under the resource's group version.
    (None, "DeleteOptions", META, "DeleteOptions"),
]

# Well-known apimachinery types whose JSON form is not an object.
SPECIAL = {
    (META, "Time"): "Time",
    (META, "MicroTime"): "MicroTime",
    (META, "Duration"): "Duration",
    (META, "FieldsV1"): "FieldsV1",
    ("apimachinery/pkg/api/resource", "Quantity"): "Quantity",
    ("apimachinery/pkg/util/intstr", "IntOrString"): "IntOrString",
    ("apimachinery/pkg/runtime", "RawExtension"): "RawExtension",
}

# Go's protobuf marshaller writes every non-pointer field, zero or not;
# JSON (`omitempty`) leaves zeros out. Which ints and bools are pointers
# (where 0 and false mean something: `replicas: 0`) is not in the protos,
# so by default zeros are kept, and these non-pointer fields, which
# kubectl's generators leave zero, drop them. (Empty strings are always
# dropped, by the decoder.)
OMIT_ZERO = {
    (META, "ObjectMeta"): ["generation"],
    (CORE, "ContainerPort"): ["hostPort"],
    (CORE, "Container"): ["stdin", "stdinOnce", "tty"],
    (CORE, "EphemeralContainerCommon"): ["stdin", "stdinOnce", "tty"],
    (CORE, "PodSpec"): ["hostNetwork", "hostPID", "hostIPC"],
    (CORE, "ServicePort"): ["nodePort"],
    (CORE, "ServiceSpec"): ["healthCheckNodePort", "publishNotReadyAddresses"],
    (CORE, "VolumeMount"): ["readOnly"],
    (CORE, "Probe"): [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ],
    (APPS, "DeploymentSpec"): ["minReadySeconds", "paused"],
    (APPS, "ReplicaSetSpec"): ["minReadySeconds"],
    (APPS, "DaemonSetSpec"): ["minReadySeconds"],
    (APPS, "StatefulSetSpec"): ["minReadySeconds"],
    (APPS, "DeploymentStatus"): [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ],
    (APPS, "ReplicaSetStatus"): [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ],
    (APPS, "DaemonSetStatus"): [
        "currentNumberScheduled",
        "numberMisscheduled",
        "desiredNumberScheduled",
        "numberReady",
        "observedGeneration",
        "updatedNumberScheduled",
        "numberAvailable",
        "numberUnavailable",
    ],
    (APPS, "StatefulSetStatus"): [
        "observedGeneration",
        "replicas",
        "readyReplicas",
        "currentReplicas",
        "updatedReplicas",
        "availableReplicas",
    ],
    (BATCH, "JobStatus"): ["active", "succeeded", "failed"],
    ("api/networking/v1", "ServiceBackendPort"): ["number"],
    ("api/authorization/v1", "SubjectAccessReviewStatus"): ["allowed", "denied"],
}

SCALAR = {
    "string": "Str",
    "bool": "Bool",
    "int32": "I32",
    "int64": "I64",
    "double": "F64",
    'bytes = "vec"': "Bytes",
}

ATTR = re.compile(r'#\[prost\((.*)\)\]')
FIELD = re.compile(r'pub (?:r#)?(\w+):\s*(.*),$', re.S)


def module_of(path, root):
    rel = os.path.relpath(os.path.dirname(path), root)
    return rel.replace(os.sep, "/")


def resolve(module, rust_type):
    """`super::super::x::Y` seen from `module` -> (module, 'Y')."""
    parts = rust_type.split("::")
    mod = module.split("/")
    i = 0
    while parts[i] == "super":
        mod.pop()
        i += 1
    rest = parts[i:]
    return ("/".join(mod + rest[:-1]), rest[-1])


def strip_wrappers(t):
    for w in (
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
    ):
        while t.startswith(w):
            t = t[len(w) : -1].rstrip(",")
    return t


def parse_pb():
    """{(module, struct): [(tag, rust_field, attr, type_text)]}"""
    msgs = {}
    for path in glob.glob(os.path.join(PB, "**/mod.rs"), recursive=True):
        module = module_of(path, PB)
        lines = open(path, encoding="utf-8").read().split("\n")
        cur = None
        i = 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                cur = []
                msgs[(module, m.group(1))] = cur
            elif line == "}":
                cur = None
            elif cur is not None:
                a = ATTR.search(line)
                if a:
                    decl = ""
                    i += 1
                    while True:
                        decl += lines[i].strip()
                        if decl.endswith(",") and decl.count("<") == decl.count(">"):
                            break
                        i += 1
                    f = FIELD.match(decl)
                    if not f:
                        sys.exit(f"gen-proto-table: cannot parse {decl!r} in {path}")
                    attr = a.group(1)
                    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                    cur.append((tag, f.group(1), attr, f.group(2).replace(" ", "")))
            i += 1
    return msgs


def parse_openapi():
    """{(module, lowercased struct): {rust_field: json_name}}"""
    names = {}
    for path in glob.glob(os.path.join(OPENAPI, "**/*.rs"), recursive=True):
        text = open(path, encoding="utf-8").read()
        s = re.search(r"^pub struct (\w+)", text, re.M)
        if not s:
            continue
        fields = {}
        for js, rf in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text):
            fields[norm(rf)] = js
        names[(module_of(path, OPENAPI), s.group(1).lower())] = fields
    return names


def norm(rust_field):
    """prost's snake case of `podCIDRs` is `pod_cid_rs`, k8s-openapi's is
    `pod_cidrs`: compare without underscores."""
    return rust_field.replace("_", "").lower()


def lower_camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    pb = parse_pb()
    oa = parse_openapi()
    order = []
    index = {}

    def visit(key):
        if key in index:
            return index[key]
        if key not in pb:
            sys.exit(f"gen-proto-table: no message {key}")
        index[key] = len(order)
        order.append(key)
        if key not in SPECIAL:
            for tag, rf, attr, ty in pb[key]:
                if attr.startswith("message"):
                    visit(resolve(key[0], strip_wrappers(ty)))
                elif 'btree_map = "string, message"' in attr:
                    inner = ty[ty.index(",") + 1 : -1].rstrip(",")
                    visit(resolve(key[0], inner))
        return index[key]

    for _, _, mod, name in ROOTS:
        visit((mod, name))

    # Go embedded structs (`json:",inline"`) are a nested message in
    # protobuf but flattened in JSON: a message field missing from the
    # parent's k8s-openapi struct whose own fields are in it.
    inline = set()
    names = {}
    for key in order:
        if key not in SPECIAL:
            names[key] = dict(oa.get((key[0], key[1].lower()), {}))
    for key in order:
        parent = oa.get((key[0], key[1].lower()))
        if key in SPECIAL or parent is None:
            continue
        for tag, rf, attr, ty in pb[key]:
            if norm(rf) in parent or not attr.startswith("message"):
                continue
            sub = resolve(key[0], strip_wrappers(ty))
            subs = [norm(f[1]) for f in pb[sub]]
            if subs and sum(f in parent for f in subs) * 2 >= len(subs):
                inline.add((key, rf))
                if (sub[0], sub[1].lower()) not in oa:
                    names[sub].update(parent)

    fallbacks = []
    omitted = set()
    out = []
    out.append("// @generated by scripts/gen-proto-table.py from k8s-pb 0.9.0 and")
    out.append("// k8s-openapi 0.29.0 (v1_33). Do not edit; rerun the script.")
    out.append("")
    out.append("use super::{F, K, M, S};")
    out.append("")
    out.append("#[rustfmt::skip]")
    out.append("pub(super) static MSGS: &[M] = &[")
    for n, key in enumerate(order):
        mod, name = key
        pkg = "k8s.io." + mod.replace("/", ".") + "." + name
        special = SPECIAL.get(key, "None")
        if special != "None":
            out.append(f'    /* {n} */ M {{ name: "{pkg}", special: S::{special}, fields: &[] }},')
            continue
        jsnames = names[key]
        fields = []
        for tag, rf, attr, ty in sorted(pb[key]):
            js = jsnames.get(norm(rf))
            if (key, rf) in inline:
                sub = index[resolve(mod, strip_wrappers(ty))]
                fields.append(f'F({tag}, "", K::Inline({sub}), false, false)')
                continue
            if js is None:
                js = lower_camel(rf)
                fallbacks.append(f"{pkg}.{rf} -> {js}")
            kind_word = attr.split(",")[0].strip()
            repeated = "true" if ", repeated" in attr else "false"
            if kind_word == "message":
                k = f"K::Msg({index[resolve(mod, strip_wrappers(ty))]})"
            elif kind_word.startswith("btree_map"):
                v = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                if v == "string":
                    k = "K::MapStr"
                elif v == "bytes":
                    k = "K::MapBytes"
                elif v == "message":
                    inner = ty[ty.index(",") + 1 : -1].rstrip(",")
                    k = f"K::MapMsg({index[resolve(mod, inner)]})"
                else:
                    sys.exit(f"gen-proto-table: map value {v} in {pkg}.{rf}")
                repeated = "false"
            elif kind_word in SCALAR:
                k = "K::" + SCALAR[kind_word]
            else:
                sys.exit(f"gen-proto-table: wire kind {kind_word!r} in {pkg}.{rf}")
            omit = "false"
            if js in OMIT_ZERO.get(key, ()):
                if k not in ("K::I32", "K::I64", "K::Bool"):
                    sys.exit(f"gen-proto-table: OMIT_ZERO {pkg}.{js} is not an int or bool")
                omit = "true"
                omitted.add((key, js))
            fields.append(f'F({tag}, "{js}", {k}, {repeated}, {omit})')
        out.append(f'    /* {n} */ M {{ name: "{pkg}", special: S::None, fields: &[')
        for f in fields:
            out.append(f"        {f},")
        out.append("    ] },")
    out.append("];")
    out.append("")
    out.append("/// The message of a top-level object, by its `apiVersion` and `kind`.")
    out.append("pub(super) fn root(api_version: &str, kind: &str) -> Option<usize> {")
    out.append("    Some(match (api_version, kind) {")
    for av, kind, mod, name in ROOTS:
        pat = f'"{av}"' if av else "_"
        out.append(f'        ({pat}, "{kind}") => {index[(mod, name)]},')
    out.append("        _ => return None,")
    out.append("    })")
    out.append("}")
    text = "\n".join(out) + "\n"
    missing = {(k, f) for k, fs in OMIT_ZERO.items() for f in fs} - omitted
    if missing:
        sys.exit(f"gen-proto-table: OMIT_ZERO names no field: {sorted(missing)}")

    if "--check" in sys.argv:
        cur = open(OUT, encoding="utf-8").read() if os.path.exists(OUT) else ""
        if cur != text:
            sys.exit(f"gen-proto-table: {OUT} is stale; rerun scripts/gen-proto-table.py")
        return
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT}: {len(order)} messages", file=sys.stderr)
    for fb in fallbacks:
        print(f"  no k8s-openapi name, fell back: {fb}", file=sys.stderr)


if __name__ == "__main__":
    main()
