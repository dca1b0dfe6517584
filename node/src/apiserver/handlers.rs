//! The generic resource handlers: get, list, watch, create, update, patch,
//! delete and deletecollection for every kind in the resource table, plus
//! the `status` and `scale` subresources.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_sdk::selector::{FieldSelector, LabelSelector};

use super::auth::User;
use super::resources::{self, Resource};
use super::status::{self, ApiError, Cause};
use super::storage::{Objects, Precondition, Stored};
use super::validate::{self, FieldValidation};
use super::{Body, MAX_BODY, json as json_resp, table, watch};

/// What a resource URL names.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

impl Target {
    pub fn parse(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
        let find =
            |plural: &str| resources::find(group, version, plural).ok_or_else(not_found_path);
        let t = match rest {
            ["namespaces", ns, plural, tail @ ..]
                if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
            {
                let res = find(plural)?;
                let (name, sub) = match tail {
                    [] => (None, None),
                    [name] => (Some(name.to_string()), None),
                    [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
                    _ => return Err(not_found_path()),
                };
                Target {
                    res,
                    namespace: Some(ns.to_string()),
                    name,
                    sub,
                }
            }
            [plural, tail @ ..] => {
                let res = find(plural)?;
                let (name, sub) = match tail {
                    [] => (None, None),
                    [name] if !res.namespaced => (Some(name.to_string()), None),
                    [name, sub] if !res.namespaced => {
                        (Some(name.to_string()), Some(sub.to_string()))
                    }
                    _ => return Err(not_found_path()),
                };
                Target {
                    res,
                    namespace: None,
                    name,
                    sub,
                }
            }
            [] => return Err(not_found_path()),
        };
        if let Some(ns) = &t.namespace
            && !validate::is_dns1123_label(ns)
        {
            return Err(ApiError::bad_request(format!(
                "invalid namespace name {ns:?}"
            )));
        }
        Ok(t)
    }

    fn key(&self) -> String {
        self.res.key(
            self.namespace.as_deref(),
            self.name.as_deref().unwrap_or(""),
        )
    }

    pub fn key_of(&self) -> String {
        self.key()
    }
}

pub fn query(req: &Request<Body>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(q) = req.uri().query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(percent_decode(k), percent_decode(v));
        }
    }
    out
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_body(req: Request<Body>) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > MAX_BODY
    {
        return Err(ApiError::too_large(format!(
            "request body of {len} bytes is over the limit of {MAX_BODY}"
        )));
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::too_large(format!(
                    "request body is over the limit of {MAX_BODY} bytes"
                ))
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok((parts, bytes))
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    rfc3339(secs)
}

/// Seconds since the epoch as `2006-01-02T15:04:05Z`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch of an RFC 3339 timestamp (UTC `Z` only).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    // A version 4 UUID.
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][(b[8] & 3) as usize],
        &h[17..20],
        &h[20..32]
    )
}

pub(super) fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

fn wants_table(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn verb_of(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method, t.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

pub async fn dispatch(
    objects: &Objects,
    req: Request<Body>,
    t: Target,
    user: &User,
) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = verb_of(req.method(), &t, is_watch);
    super::rbac::authorize(objects, user, verb, &t).await?;
    let method = req.method().clone();
    let (parts, body) = read_body(req).await?;
    // client-go's typed clients send protobuf (and never fall back to
    // JSON): decoded here into the JSON the rest speaks.
    let body = super::proto::json_body(&parts.headers, body).map_err(ApiError::bad_request)?;
    if matches!(method, Method::POST | Method::PUT) && !body.is_empty() {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let media = ct.split(';').next().unwrap_or("").trim();
        if media != "application/json" && !media.is_empty() && !super::proto::is_protobuf(media) {
            return Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json (got {media})"
            )));
        }
    }
    match (method, t.name.is_some(), t.sub.as_deref()) {
        (Method::GET, false, None) if is_watch => {
            watch::serve(objects, &t, &q, wants_table(&parts)).await
        }
        (Method::GET, false, None) => list(objects, &t, &q, &parts).await,
        (Method::GET, true, None | Some("status")) => get(objects, &t, &parts).await,
        (Method::GET, true, Some(EPHEMERAL)) if t.res.kind == "Pod" => {
            get(objects, &t, &parts).await
        }
        (Method::GET, true, Some("scale")) if t.res.has_scale => get_scale(objects, &t).await,
        (Method::POST, false, None) => create(objects, &t, &q, &body).await,
        (Method::POST, true, Some("binding")) if t.res.kind == "Pod" => {
            bind(objects, &t, &body).await
        }
        (Method::POST, true, Some("eviction")) if t.res.kind == "Pod" => {
            evict(objects, &t, &body).await
        }
        (Method::PUT, true, sub @ (None | Some("status"))) => {
            let obj = parse_json(&body)?;
            update(objects, &t, &q, obj, Part::of(sub), None).await
        }
        (Method::PUT, true, Some(EPHEMERAL)) if t.res.kind == "Pod" => {
            let obj = parse_json(&body)?;
            update(objects, &t, &q, obj, Part::EphemeralContainers, None).await
        }
        (Method::PUT, true, Some("scale")) if t.res.has_scale => {
            put_scale(objects, &t, &body).await
        }
        (Method::PATCH, true, sub @ (None | Some("status") | Some("scale"))) => {
            patch(objects, &t, &q, &parts, &body, sub).await
        }
        (Method::PATCH, true, sub @ Some(EPHEMERAL)) if t.res.kind == "Pod" => {
            patch(objects, &t, &q, &parts, &body, sub).await
        }
        (Method::DELETE, true, None) => delete(objects, &t, &q, &body).await,
        (Method::DELETE, false, None) => delete_collection(objects, &t, &q).await,
        (m, _, Some(sub)) => Err(ApiError::no_such_resource(format!(
            "the server could not find the requested resource ({m} {} {sub})",
            t.res.plural
        ))),
        (m, _, None) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

/// Kubernetes' DefaultStorageClass admission: a claim that names no class
/// (no `storageClassName` at all; `""` asks for none) gets the default one,
/// the newest if several are marked.
async fn admit_default_storage_class(objects: &Objects, claim: &mut Value) -> Result<(), ApiError> {
    if !claim["spec"]["storageClassName"].is_null() {
        return Ok(());
    }
    let res = resources::find("storage.k8s.io", "v1", "storageclasses").expect("served");
    let default = objects
        .list_local(&res.prefix(None))
        .await?
        .into_iter()
        .filter(|c| c.object["metadata"]["annotations"][table::DEFAULT_CLASS] == "true")
        .max_by_key(|c| {
            (
                c.object["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                c.rev,
            )
        });
    if let Some(c) = default {
        claim["spec"]["storageClassName"] = c.object["metadata"]["name"].clone();
    }
    Ok(())
}

/// A kind's rule for what an update may change (old, new).
type UpdateRule = fn(&Value, &Value) -> Result<(), Cause>;

/// A pod's subresource for adding ephemeral containers (`kubectl debug`).
const EPHEMERAL: &str = "ephemeralcontainers";

/// The part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// All but its status (the object itself).
    Whole,
    /// Its status only (`/status`).
    Status,
    /// A pod's `spec.ephemeralContainers` only (`/ephemeralcontainers`).
    EphemeralContainers,
}

impl Part {
    fn of(sub: Option<&str>) -> Part {
        match sub {
            Some("status") => Part::Status,
            Some(EPHEMERAL) => Part::EphemeralContainers,
            _ => Part::Whole,
        }
    }
}

async fn load(objects: &Objects, t: &Target) -> Result<Stored, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    objects
        .get(&t.key())
        .await?
        .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, name))
}

async fn get(
    objects: &Objects,
    t: &Target,
    parts: &http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    let s = load(objects, t).await?;
    if wants_table(parts) {
        return Ok(json_resp(
            StatusCode::OK,
            &table::to_table(t.res, &[s.object], &s.rev.to_string(), None),
        ));
    }
    Ok(json_resp(StatusCode::OK, &s.object))
}

/// Label and field selectors of a list or watch.
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub fn from_query(q: &BTreeMap<String, String>) -> Result<Filter, ApiError> {
        let labels =
            match q.get("labelSelector").filter(|s| !s.is_empty()) {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let fields = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(
                FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?,
            ),
            None => None,
        };
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            let labels: BTreeMap<String, String> = obj["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if !l.matches(&labels) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            return f.matches(|path| field_value(obj, path));
        }
        true
    }
}

/// The value of a field selector path (`metadata.name`, `spec.nodeName`,
/// `involvedObject.kind`, ...), as a string.
fn field_value(obj: &Value, path: &str) -> Option<String> {
    let mut v = obj;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        other => Some(other.to_string()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

async fn list(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    parts: &http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    use base64::Engine;
    let filter = Filter::from_query(q)?;
    let limit: i64 = match q.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let prefix = t.res.prefix(t.namespace.as_deref());
    let (mut start, mut at) = (None, 0i64);
    if let Some(c) = q.get("continue").filter(|c| !c.is_empty()) {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
        let tok: ContinueToken = serde_json::from_slice(&raw)
            .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
        if !tok.start.starts_with(&prefix) {
            return Err(ApiError::bad_request(
                "continue key does not belong to this list",
            ));
        }
        start = Some(tok.start);
        at = tok.rv;
    } else if let Some(rv) = q
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0")
        && q.get("resourceVersionMatch").map(String::as_str) == Some("Exact")
    {
        at = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
    }
    let mut items = Vec::new();
    let mut rev;
    let mut next: Option<String> = None;
    loop {
        let page = if limit > 0 {
            (limit - items.len() as i64).max(1)
        } else {
            0
        };
        let (batch, r, more) = objects.list(&prefix, start.as_deref(), page, at).await.map_err(|e| {
            if e.code == 410 { ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.") } else { e }
        })?;
        rev = r;
        at = r;
        let last_key = batch.last().map(|s| key_of(t, &s.object));
        for s in batch {
            if filter.matches(&s.object) {
                items.push(s.object);
            }
        }
        if !more {
            break;
        }
        let after = format!("{}\0", last_key.unwrap_or_default());
        if limit > 0 && items.len() as i64 >= limit {
            next = Some(after);
            break;
        }
        start = Some(after);
    }
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(n) = next {
        let tok =
            serde_json::to_vec(&ContinueToken { rv: rev, start: n }).expect("token serializes");
        meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok));
    }
    if wants_table(parts) {
        return Ok(json_resp(
            StatusCode::OK,
            &table::to_table(
                t.res,
                &items,
                &rev.to_string(),
                meta.get("continue").and_then(Value::as_str),
            ),
        ));
    }
    let out = json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
        "metadata": meta,
        "items": items,
    });
    Ok(json_resp(StatusCode::OK, &out))
}

fn key_of(t: &Target, obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"].as_str();
    t.res
        .key(ns, obj["metadata"]["name"].as_str().unwrap_or(""))
}

fn check_type(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    let av = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    if av.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body (apiVersion and kind are required)",
        ));
    }
    if av != res.api_version() || kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) and kind ({kind}) do not match the resource {} of {}",
            res.plural,
            res.api_version()
        )));
    }
    Ok(())
}

async fn ensure_namespace(objects: &Objects, t: &Target) -> Result<(), ApiError> {
    if let Some(ns) = &t.namespace {
        let ns_res = resources::find("", "v1", "namespaces").expect("namespaces served");
        let key = ns_res.key(None, ns);
        // As Kubernetes' NamespaceLifecycle admission: the local view first
        // (no quorum round on every create), a quorum read before refusing
        // a namespace this member may not have seen created yet.
        match objects.get_known(&key).await? {
            None => return Err(ApiError::not_found("", "namespaces", ns)),
            Some(s) if s.object["status"]["phase"] == "Terminating" => {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        t.res.plural,
                        t.name.as_deref().unwrap_or("")
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Kubernetes' RuntimeClass admission: a pod naming a RuntimeClass that
/// does not exist is refused; one that exists gets the class's scheduling
/// constraints — its nodeSelector merged into the pod's (a different value
/// for the same key is refused), its tolerations added.
async fn admit_runtime_class(
    objects: &Objects,
    name: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    let Some(class) = pod["spec"]["runtimeClassName"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let rejected = |why: String| {
        ApiError::new(
            403,
            "Forbidden",
            format!("pods \"{name}\" is forbidden: pod rejected: {why}"),
        )
    };
    let res =
        resources::find("node.k8s.io", "v1", "runtimeclasses").expect("runtimeclasses served");
    // The local view first, a quorum read before refusing (as for the
    // namespace).
    let Some(rc) = objects.get_known(&res.key(None, &class)).await? else {
        return Err(rejected(format!("RuntimeClass \"{class}\" not found")));
    };
    let scheduling = &rc.object["scheduling"];
    if let Some(wanted) = scheduling["nodeSelector"].as_object() {
        if !pod["spec"]["nodeSelector"].is_object() {
            pod["spec"]["nodeSelector"] = json!({});
        }
        let selector = pod["spec"]["nodeSelector"]
            .as_object_mut()
            .expect("nodeSelector is an object");
        for (k, v) in wanted {
            match selector.get(k) {
                Some(have) if have != v => {
                    return Err(rejected(format!(
                        "conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}",
                        v.as_str().unwrap_or_default(),
                        have.as_str().unwrap_or_default()
                    )));
                }
                Some(_) => {}
                None => {
                    selector.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let Some(tolerations) = scheduling["tolerations"].as_array() {
        if !pod["spec"]["tolerations"].is_array() {
            pod["spec"]["tolerations"] = json!([]);
        }
        let have = pod["spec"]["tolerations"]
            .as_array_mut()
            .expect("tolerations is an array");
        for t in tolerations {
            if !have.contains(t) {
                have.push(t.clone());
            }
        }
    }
    Ok(())
}

/// Kubernetes' DefaultIngressClass admission: a new Ingress that names no
/// class (nor the legacy annotation) gets the default IngressClass, the
/// newest if several are marked default.
async fn admit_default_ingress_class(objects: &Objects, ing: &mut Value) -> Result<(), ApiError> {
    let named = ing["spec"]["ingressClassName"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        || ing["metadata"]["annotations"]["kubernetes.io/ingress.class"].is_string();
    if named {
        return Ok(());
    }
    let res = resources::find("networking.k8s.io", "v1", "ingressclasses")
        .expect("ingressclasses served");
    let (classes, _, _) = objects.list(&res.prefix(None), None, 0, 0).await?;
    let default = classes
        .iter()
        .filter(|c| {
            c.object["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"]
                == "true"
        })
        .max_by_key(|c| {
            c.object["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
        });
    if let Some(c) = default {
        if !ing["spec"].is_object() {
            ing["spec"] = json!({});
        }
        ing["spec"]["ingressClassName"] = c.object["metadata"]["name"].clone();
    }
    Ok(())
}

fn warnings_header(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            resp.headers_mut().append("Warning", v);
        }
    }
}

fn dry_run(q: &BTreeMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

async fn create(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut obj = parse_json(body)?;
    check_type(t.res, &obj)?;
    let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    // The namespace of the URL wins; a different one in the body is an error.
    match (&t.namespace, obj["metadata"]["namespace"].as_str()) {
        (Some(url), Some(body_ns)) if !body_ns.is_empty() && body_ns != url => {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({url})"
            )));
        }
        (Some(url), _) => obj["metadata"]["namespace"] = json!(url),
        (None, _) if t.res.namespaced => {
            return Err(ApiError::bad_request(
                "a namespaced object must be created in a namespace",
            ));
        }
        (None, _) => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
    }
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty)
        && let Some(g) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
    {
        obj["metadata"]["name"] = json!(format!("{g}{}", random_suffix()));
    }
    let (mut obj, warnings) = validate::decode(t.res, &obj, fv)?;
    validate::default(t.res, &mut obj);
    validate::validate(t.res, &obj)?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if t.res.kind == "Pod"
        && obj["spec"]["ephemeralContainers"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    {
        return Err(ApiError::invalid(
            t.res.group,
            t.res.kind,
            &name,
            vec![Cause::forbidden(
                "spec.ephemeralContainers",
                "Forbidden: cannot be set on create",
            )],
        ));
    }
    let t = Target {
        name: Some(name.clone()),
        ..t.clone()
    };
    ensure_namespace(objects, &t).await?;
    if t.res.kind == "Pod" {
        super::imagekind::default_runtime_class(&mut obj).await;
        admit_runtime_class(objects, &name, &mut obj).await?;
        super::priority::admit_pod(objects, &name, &mut obj).await?;
        let ns = t.namespace.clone().unwrap_or_default();
        super::serviceaccount::admit(objects, &ns, &name, &mut obj).await?;
    }
    if t.res.kind == "PersistentVolumeClaim" {
        admit_default_storage_class(objects, &mut obj).await?;
    }
    // Storage object in-use protection: a claim a pod uses, or a volume
    // bound to a claim, waits for that to end before it goes.
    let protection = match t.res.kind {
        "PersistentVolumeClaim" => Some(crate::controllers::volumes::PVC_PROTECTION),
        "PersistentVolume" => Some(crate::controllers::volumes::PV_PROTECTION),
        _ => None,
    };
    if let Some(f) = protection {
        let mut list = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !list.iter().any(|x| x == f) {
            list.push(json!(f));
            obj["metadata"]["finalizers"] = json!(list);
        }
    }
    if t.res.kind == "Ingress" {
        admit_default_ingress_class(objects, &mut obj).await?;
    }
    if t.res.kind == "PriorityClass" {
        super::priority::admit_class(objects, &obj).await?;
    }
    {
        let m = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if t.res.has_spec {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if t.res.kind == "Job" {
        validate::generate_job_selector(&mut obj)?;
    }
    if t.res.has_status && t.res.kind != "Pod" && t.res.kind != "Namespace" {
        // Status is the controllers' to write, not the creator's.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    if t.res.kind == "Service" && !dry_run(q) {
        super::lifecycle::allocate_cluster_ip(objects, &mut obj).await?;
        if let Err(e) = super::lifecycle::allocate_node_ports(objects, &mut obj, None).await {
            // The node ports named may be another Service's: only the
            // address goes back (the allocator freed what it reserved).
            super::lifecycle::release_cluster_ip(objects, &obj).await?;
            return Err(e);
        }
    }
    if dry_run(q) {
        return Ok(json_resp(StatusCode::CREATED, &obj));
    }
    match objects.put(&t.key(), &obj, Precondition::Absent).await? {
        Some(rev) => {
            if t.res.kind == "Namespace" {
                namespace_defaults(objects, &name).await;
            }
            super::storage::set_rv(&mut obj, rev);
            let mut resp = json_resp(StatusCode::CREATED, &obj);
            warnings_header(&mut resp, &warnings);
            Ok(resp)
        }
        None => {
            if t.res.kind == "Service" {
                super::lifecycle::release_service(objects, &obj).await?;
            }
            Err(ApiError::already_exists(t.res.group, t.res.plural, &name))
        }
    }
}

/// A new namespace's `default` ServiceAccount and root CA ConfigMap, made
/// with it. A failure is only logged: the controller makes them later.
async fn namespace_defaults(objects: &Objects, ns: &str) {
    let Some(tls) = objects.store().tls() else {
        return;
    };
    if let Err(e) = super::serviceaccount::ensure_namespace_defaults(objects, ns, &tls.ca_pem).await
    {
        tracing::warn!(
            namespace = ns,
            "creating the default service account: {e:#}"
        );
    }
}

/// Replaces an object (or its status). `expected` is the revision a patch
/// read; otherwise the body's resourceVersion (if any) must be current.
async fn update(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    mut obj: Value,
    part: Part,
    expected: Option<(i64, Value)>,
) -> Result<Response<Body>, ApiError> {
    check_type(t.res, &obj)?;
    let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
    let name = t.name.clone().unwrap_or_default();
    if obj["metadata"]["name"].as_str() != Some(name.as_str()) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            obj["metadata"]["name"].as_str().unwrap_or("")
        )));
    }
    match (&t.namespace, obj["metadata"]["namespace"].as_str()) {
        (Some(url), Some(b)) if !b.is_empty() && b != url => {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({b}) does not match the namespace sent on the request ({url})"
            )));
        }
        (Some(url), _) => obj["metadata"]["namespace"] = json!(url),
        _ => {}
    }
    let (current_rev, current) = match expected {
        Some(x) => x,
        None => {
            let s = load(objects, t).await?;
            (s.rev, s.object)
        }
    };
    if let Some(rv) = obj["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
        && rv != current_rev.to_string()
    {
        return Err(ApiError::conflict(
            t.res.group,
            t.res.plural,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let (mut obj, warnings) = validate::decode(t.res, &obj, fv)?;
    if t.res.kind == "Service" {
        super::lifecycle::carry_node_ports(&current, &mut obj);
    }
    // What the caller may not change: identity, and the half of the object
    // that the other endpoint owns (spec vs status).
    {
        let m = obj["metadata"].as_object_mut().expect("metadata");
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match current["metadata"].get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        // A writer that does not send managedFields keeps them (an empty
        // list clears them, as in Kubernetes).
        if m.get("managedFields").is_none_or(Value::is_null)
            && let Some(v) = current["metadata"].get("managedFields")
        {
            m.insert("managedFields".into(), v.clone());
        }
    }
    let status_only = part == Part::Status;
    if part == Part::EphemeralContainers {
        // Everything but the list is kept as stored; the list may grow.
        let mut next = current.clone();
        next["spec"]["ephemeralContainers"] = obj["spec"]["ephemeralContainers"].clone();
        obj = next;
    } else if t.res.kind == "Pod" {
        // Owned by the subresource: an update of the pod keeps them.
        obj["spec"]["ephemeralContainers"] = current["spec"]["ephemeralContainers"].clone();
    }
    if let Some(spec) = obj["spec"].as_object_mut()
        && spec.get("ephemeralContainers").is_some_and(Value::is_null)
    {
        spec.remove("ephemeralContainers");
    }
    if t.res.has_status {
        if status_only {
            let status = obj["status"].clone();
            let mut next = current.clone();
            next["status"] = status;
            // Labels and annotations may change through status too? No:
            // Kubernetes keeps metadata except for those two on /status.
            obj = next;
        } else {
            match current.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }
    if matches!(t.res.kind, "Pod" | "PersistentVolumeClaim") && !status_only {
        // Kubernetes defaults what an update leaves out before comparing.
        validate::default(t.res, &mut obj);
    }
    validate::validate(t.res, &obj)?;
    if part == Part::EphemeralContainers {
        let causes = super::lifecycle::check_ephemeral_update(&current, &obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(t.res.group, t.res.kind, &name, causes));
        }
    }
    // What an update of the object itself may change, per kind.
    let rule: Option<UpdateRule> = match (t.res.kind, part) {
        ("Pod", Part::Whole) => Some(super::lifecycle::check_pod_update),
        ("PersistentVolumeClaim", _) => Some(super::lifecycle::check_claim_update),
        _ => None,
    };
    if let Some(rule) = rule
        && let Err(cause) = rule(&current, &obj)
    {
        return Err(ApiError::invalid(
            t.res.group,
            t.res.kind,
            &name,
            vec![cause],
        ));
    }
    if t.res.kind == "PriorityClass" {
        let causes = super::priority::validate_update(&current, &obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(t.res.group, t.res.kind, &name, causes));
        }
        super::priority::admit_class(objects, &obj).await?;
    }
    if t.res.has_spec && obj.get("spec") != current.get("spec") {
        let g = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        obj["metadata"]["generation"] = json!(g);
    }
    if t.res.kind == "Service" {
        // clusterIP is immutable once allocated.
        let old = current["spec"]["clusterIP"].clone();
        let new = obj["spec"]["clusterIP"].clone();
        if !new.is_null() && new != old && !new.as_str().is_some_and(str::is_empty) {
            return Err(ApiError::invalid(
                t.res.group,
                t.res.kind,
                &name,
                vec![Cause::invalid(
                    "spec.clusterIP",
                    format!("Invalid value: {new}: field is immutable"),
                )],
            ));
        }
        obj["spec"]["clusterIP"] = old.clone();
        obj["spec"]["clusterIPs"] = current["spec"]["clusterIPs"].clone();
        if !dry_run(q) {
            super::lifecycle::allocate_node_ports(objects, &mut obj, Some(&current)).await?;
        }
    }
    // Finalizers removed from an object being deleted may complete the delete.
    let deleting = current["metadata"]["deletionTimestamp"].is_string();
    let finalizers_left = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if dry_run(q) {
        return Ok(json_resp(StatusCode::OK, &obj));
    }
    if deleting && !finalizers_left {
        return match objects.delete(&t.key(), current_rev).await? {
            Some(_) => {
                if t.res.kind == "Service" {
                    super::lifecycle::release_service(objects, &current).await?;
                }
                Ok(json_resp(StatusCode::OK, &obj))
            }
            None => Err(ApiError::conflict(
                t.res.group,
                t.res.plural,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )),
        };
    }
    if obj == current {
        // No change: Kubernetes does not write (the resourceVersion stays).
        return Ok(json_resp(StatusCode::OK, &current));
    }
    match objects
        .put(&t.key(), &obj, Precondition::ModRevision(current_rev))
        .await?
    {
        Some(rev) => {
            if t.res.kind == "Service" {
                super::lifecycle::release_node_ports(objects, &current, Some(&obj)).await?;
            }
            super::storage::set_rv(&mut obj, rev);
            let mut resp = json_resp(StatusCode::OK, &obj);
            warnings_header(&mut resp, &warnings);
            Ok(resp)
        }
        None => {
            if t.res.kind == "Service" {
                // What this update reserved goes back.
                super::lifecycle::release_node_ports(objects, &obj, Some(&current)).await?;
            }
            Err(ApiError::conflict(
                t.res.group,
                t.res.plural,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ))
        }
    }
}

async fn patch(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    parts: &http::request::Parts,
    body: &[u8],
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if ct == "application/apply-patch+yaml" {
        return server_side_apply(objects, t, q, body, sub).await;
    }
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    // Optimistic concurrency: re-read and re-apply if someone wrote between.
    for _ in 0..5 {
        let s = load(objects, t).await?;
        let mut base = s.object.clone();
        if sub == Some("scale") {
            base = scale_of(t, &s.object)?;
        }
        let patched = match ct.as_str() {
            "application/json-patch+json" => skiff_sdk::patch::json_patch(&base, &patch_doc)
                .map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the patch could not be applied: {e}"),
                    )
                })?,
            "application/merge-patch+json" => skiff_sdk::patch::merge_patch(&base, &patch_doc),
            "application/strategic-merge-patch+json" => {
                if sub == Some("scale") {
                    skiff_sdk::patch::merge_patch(&base, &patch_doc)
                } else {
                    // Every kind skiff serves is built in: those without
                    // patch strategies in the table merge like maps.
                    let schema: &dyn skiff_sdk::patch::meta::PatchSchema =
                        match skiff_sdk::patch::meta::for_kind(&t.res.api_version(), t.res.kind) {
                            Some(m) => m,
                            None => &skiff_sdk::patch::meta::OPAQUE,
                        };
                    skiff_sdk::patch::strategic_merge_patch(&base, &patch_doc, schema).map_err(
                        |e| {
                            ApiError::new(
                                422,
                                "Invalid",
                                format!("the patch could not be applied: {e}"),
                            )
                        },
                    )?
                }
            }
            other => {
                return Err(ApiError::unsupported_media(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                )));
            }
        };
        let r = if sub == Some("scale") {
            apply_scale(objects, t, q, s, &patched).await
        } else {
            let mut patched = patched;
            // A patch carries no resourceVersion unless the caller set one.
            if patch_doc["metadata"]["resourceVersion"].is_null() {
                patched["metadata"]["resourceVersion"] = json!(s.rev.to_string());
            }
            update(
                objects,
                t,
                q,
                patched,
                Part::of(sub),
                Some((s.rev, s.object)),
            )
            .await
        };
        match r {
            Err(e)
                if e.code == 409
                    && e.reason == "Conflict"
                    && patch_doc["metadata"]["resourceVersion"].is_null() =>
            {
                continue;
            }
            other => return other,
        }
    }
    Err(too_many_writes(t))
}

/// Server-side apply (see `apply.rs`): creates the object from the applied
/// configuration, or merges it into the live one as the manager's fields.
async fn server_side_apply(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    body: &[u8],
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    use super::apply;
    if sub.is_some() {
        return Err(ApiError::unsupported_media(
            "server-side apply is served on the object itself, not on its subresources",
        ));
    }
    let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()).cloned() else {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    let force = match q.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "force: invalid value {other:?}: want true or false"
            )));
        }
    };
    let mut applied: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the applied configuration is not UTF-8"))?;
            serde_saphyr::from_str(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "the applied configuration is neither JSON nor YAML: {e}"
                ))
            })?
        }
    };
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    check_type(t.res, &applied)?;
    let name = t.name.clone().unwrap_or_default();
    match applied["metadata"]["name"].as_str() {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        Some(_) => {}
        None => {
            if !applied["metadata"].is_object() {
                applied["metadata"] = json!({});
            }
            applied["metadata"]["name"] = json!(name);
        }
    }
    if let Some(m) = applied["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    let api_version = t.res.api_version();
    let schema: &dyn skiff_sdk::patch::meta::PatchSchema =
        skiff_sdk::patch::meta::for_kind(&api_version, t.res.kind)
            .map(|m| m as &dyn skiff_sdk::patch::meta::PatchSchema)
            .unwrap_or(&skiff_sdk::patch::meta::OPAQUE);
    let new_set = apply::field_set(&applied, schema);
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": new_set,
    });
    for _ in 0..5 {
        let Some(s) = objects.get(&t.key()).await? else {
            let mut obj = applied.clone();
            obj["metadata"]["managedFields"] = json!([entry]);
            let body = serde_json::to_vec(&obj).expect("JSON");
            let created = create(objects, t, q, &body).await;
            match created {
                // Someone created it first: apply to theirs.
                Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                other => return other,
            }
        };
        let live = s.object.clone();
        let managed: Vec<Value> = live["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let found = apply::conflicts(&manager, &managed, &new_set, &applied, &live);
        if !found.is_empty() && !force {
            let named: Vec<(String, String)> = found
                .iter()
                .map(|(m, p)| (m.clone(), apply::describe(p)))
                .collect();
            return Err(ApiError::apply_conflicts(&named));
        }
        let previous = managed
            .iter()
            .find(|e| e["manager"] == manager.as_str() && e["operation"] == "Apply")
            .map(|e| apply::project(&live, &e["fieldsV1"], schema));
        let patch = skiff_sdk::patch::three_way_patch(previous.as_ref(), &applied, &live, schema);
        let mut merged =
            skiff_sdk::patch::strategic_merge_patch(&live, &patch, schema).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the applied configuration could not be merged: {e}"),
                )
            })?;
        // The managers: this one's entry replaced (or added), forced
        // fields taken from their owners, owners left with nothing dropped.
        let mut next: Vec<Value> = Vec::new();
        let mut placed = false;
        for mut e in managed {
            if e["manager"] == manager.as_str() && e["operation"] == "Apply" {
                next.push(entry.clone());
                placed = true;
                continue;
            }
            for (owner, path) in &found {
                if e["manager"] == owner.as_str() && e["operation"] == "Apply" {
                    apply::remove_leaf(&mut e["fieldsV1"], path);
                }
            }
            if e["fieldsV1"].as_object().is_none_or(|f| !f.is_empty()) {
                next.push(e);
            }
        }
        if !placed {
            next.push(entry.clone());
        }
        merged["metadata"]["managedFields"] = json!(next);
        let explicit_rv = applied["metadata"]["resourceVersion"].is_string();
        if !explicit_rv {
            merged["metadata"]["resourceVersion"] = json!(s.rev.to_string());
        }
        match update(objects, t, q, merged, Part::Whole, Some((s.rev, s.object))).await {
            Err(e) if e.code == 409 && e.reason == "Conflict" && !explicit_rv => continue,
            other => return other,
        }
    }
    Err(too_many_writes(t))
}

/// A read-modify-write that lost every race it retried.
fn too_many_writes(t: &Target) -> ApiError {
    ApiError::conflict(
        t.res.group,
        t.res.plural,
        t.name.as_deref().unwrap_or(""),
        "too many concurrent writes; try again",
    )
}

fn scale_of(t: &Target, obj: &Value) -> Result<Value, ApiError> {
    let sel = &obj["spec"]["selector"]["matchLabels"];
    let selector = sel
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mut meta = obj["metadata"].clone();
    if let Some(m) = meta.as_object_mut() {
        m.retain(|k, _| {
            matches!(
                k.as_str(),
                "name" | "namespace" | "uid" | "resourceVersion" | "creationTimestamp"
            )
        });
    }
    let _ = t;
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    }))
}

async fn get_scale(objects: &Objects, t: &Target) -> Result<Response<Body>, ApiError> {
    let s = load(objects, t).await?;
    Ok(json_resp(StatusCode::OK, &scale_of(t, &s.object)?))
}

async fn put_scale(objects: &Objects, t: &Target, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let scale = parse_json(body)?;
    let s = load(objects, t).await?;
    if let Some(rv) = scale["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
        && rv != s.rev.to_string()
    {
        return Err(ApiError::conflict(
            t.res.group,
            t.res.plural,
            t.name.as_deref().unwrap_or(""),
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    apply_scale(objects, t, &BTreeMap::new(), s, &scale).await
}

async fn apply_scale(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    s: Stored,
    scale: &Value,
) -> Result<Response<Body>, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let replicas = scale["spec"]["replicas"].as_i64().ok_or_else(|| {
        ApiError::invalid(
            "autoscaling",
            "Scale",
            &name,
            vec![Cause::required("spec.replicas")],
        )
    })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            &name,
            vec![Cause::invalid(
                "spec.replicas",
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let mut obj = s.object.clone();
    obj["spec"]["replicas"] = json!(replicas);
    obj["metadata"]["resourceVersion"] = json!(s.rev.to_string());
    let resp = update(objects, t, q, obj, Part::Whole, Some((s.rev, s.object))).await?;
    let _ = resp;
    let s2 = load(objects, t).await?;
    Ok(json_resp(StatusCode::OK, &scale_of(t, &s2.object)?))
}

async fn bind(objects: &Objects, t: &Target, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let b = parse_json(body)?;
    let node = b["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "",
                "Binding",
                t.name.as_deref().unwrap_or(""),
                vec![Cause::required("target.name")],
            )
        })?;
    let s = load(objects, t).await?;
    if s.object["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty())
    {
        return Err(ApiError::conflict(
            "",
            "pods",
            t.name.as_deref().unwrap_or(""),
            &format!(
                "pod {} is already assigned to node \"{}\"",
                t.name.as_deref().unwrap_or(""),
                s.object["spec"]["nodeName"].as_str().unwrap_or("")
            ),
        ));
    }
    if let Some(uid) = b["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
        && s.object["metadata"]["uid"].as_str() != Some(uid)
    {
        return Err(ApiError::conflict(
            "",
            "pods",
            t.name.as_deref().unwrap_or(""),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                s.object["metadata"]["uid"].as_str().unwrap_or("")
            ),
        ));
    }
    let mut obj = s.object.clone();
    obj["spec"]["nodeName"] = json!(node);
    // As Kubernetes' binding storage: the pod is now scheduled.
    let mut conditions: Vec<Value> = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "PodScheduled");
    conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
    obj["status"]["conditions"] = json!(conditions);
    match objects
        .put(&t.key(), &obj, Precondition::ModRevision(s.rev))
        .await?
    {
        Some(_) => Ok(json_resp(
            StatusCode::CREATED,
            &status::success(json!({"name": t.name, "kind": "pods"})),
        )),
        None => Err(ApiError::conflict(
            "",
            "pods",
            t.name.as_deref().unwrap_or(""),
            "the object has been modified",
        )),
    }
}

/// `pods/{name}/eviction` (policy/v1 Eviction), what `kubectl drain`
/// uses: the pod is deleted unless that would take its PodDisruptionBudget
/// below what it needs — then 429, and the caller tries again later. An
/// allowed eviction is counted in the budget's status (`disruptionsAllowed`
/// down by one, the pod in `disruptedPods`) before the delete, so
/// concurrent evictions cannot both spend the last disruption, as in
/// kube-apiserver.
async fn evict(objects: &Objects, t: &Target, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    let eviction = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    if let Some(n) = eviction["metadata"]["name"].as_str()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object ({n} != {name})"
        )));
    }
    let pod_target = Target {
        sub: None,
        ..t.clone()
    };
    let options = if eviction["deleteOptions"].is_object() {
        serde_json::to_vec(&eviction["deleteOptions"]).expect("json")
    } else {
        Vec::new()
    };
    let pdb_res = resources::find("policy", "v1", "poddisruptionbudgets").expect("served");
    for _ in 0..5 {
        let pod = load(objects, &pod_target).await?.object;
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        // As kube-apiserver: a pod that is not running, or already going,
        // disrupts nothing.
        let ignore_budgets = matches!(phase, "Succeeded" | "Failed" | "Pending" | "")
            || !pod["metadata"]["deletionTimestamp"].is_null();
        let (budgets, _, _) = objects.list(&pdb_res.prefix(Some(&ns)), None, 0, 0).await?;
        let matching: Vec<_> = budgets
            .into_iter()
            .filter(|b| {
                LabelSelector::from_json(&b.object["spec"]["selector"])
                    .is_ok_and(|s| s.matches_with(|k| pod["metadata"]["labels"][k].as_str()))
            })
            .collect();
        if ignore_budgets || matching.is_empty() {
            delete(objects, &pod_target, &BTreeMap::new(), &options).await?;
            return Ok(evicted());
        }
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let budget = &matching[0];
        let pdb_name = budget.object["metadata"]["name"].as_str().unwrap_or("");
        let st = &budget.object["status"];
        let refuse = |why: String| {
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            );
            e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": why}]}));
            e
        };
        if st["observedGeneration"].as_i64().unwrap_or(0)
            < budget.object["metadata"]["generation"]
                .as_i64()
                .unwrap_or(0)
        {
            return Err(refuse(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )));
        }
        let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(ApiError::new(
                403,
                "Forbidden",
                "pdb disruptions allowed is negative",
            ));
        }
        let (healthy, desired) = (
            st["currentHealthy"].as_i64().unwrap_or(0),
            st["desiredHealthy"].as_i64().unwrap_or(0),
        );
        let ready = super::lifecycle::condition_true(&pod, "Ready");
        // unhealthyPodEvictionPolicy: a pod that is not ready counts for
        // nothing, so IfHealthyBudget (the default) lets it go while the
        // budget holds, and AlwaysAllow always.
        let unhealthy_ok = !ready
            && (budget.object["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
                || healthy >= desired);
        if unhealthy_ok {
            delete(objects, &pod_target, &BTreeMap::new(), &options).await?;
            return Ok(evicted());
        }
        if allowed == 0 {
            return Err(refuse(format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
            )));
        }
        let mut spent = budget.object.clone();
        spent["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !spent["status"]["disruptedPods"].is_object() {
            spent["status"]["disruptedPods"] = json!({});
        }
        spent["status"]["disruptedPods"][&name] = json!(now_rfc3339());
        let key = pdb_res.key(Some(&ns), pdb_name);
        if objects
            .put(&key, &spent, Precondition::ModRevision(budget.rev))
            .await?
            .is_none()
        {
            // Another eviction (or the controller) got there first.
            continue;
        }
        delete(objects, &pod_target, &BTreeMap::new(), &options).await?;
        return Ok(evicted());
    }
    Err(ApiError::conflict(
        "policy",
        "poddisruptionbudgets",
        "",
        "the disruption budget kept changing; try again",
    ))
}

fn evicted() -> Response<Body> {
    json_resp(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    )
}

async fn delete(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    let propagation = q
        .get("propagationPolicy")
        .cloned()
        .or_else(|| opts["propagationPolicy"].as_str().map(String::from))
        .unwrap_or_else(|| "Background".into());
    if !matches!(propagation.as_str(), "Background" | "Foreground" | "Orphan") {
        return Err(ApiError::bad_request(format!(
            "unsupported propagationPolicy {propagation:?}: supported values: Background, Foreground, Orphan"
        )));
    }
    let name = t.name.clone().unwrap_or_default();
    if t.res.kind == "PriorityClass" {
        super::priority::check_delete(&name)?;
    }
    for _ in 0..5 {
        let s = load(objects, t).await?;
        if let Some(pre_uid) = opts["preconditions"]["uid"].as_str()
            && s.object["metadata"]["uid"].as_str() != Some(pre_uid)
        {
            return Err(ApiError::conflict(
                t.res.group,
                t.res.plural,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {pre_uid}, UID in object meta: {}",
                    s.object["metadata"]["uid"].as_str().unwrap_or("")
                ),
            ));
        }
        let mut obj = s.object.clone();
        let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if propagation == "Foreground" && !finalizers.iter().any(|f| f == "foregroundDeletion") {
            finalizers.push(json!("foregroundDeletion"));
        }
        if propagation == "Orphan" && !finalizers.iter().any(|f| f == "orphan") {
            finalizers.push(json!("orphan"));
        }
        let requested_grace = opts["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
        // A bound pod on a live node terminates gracefully: its agent stops
        // it and then deletes it with a grace period of 0.
        let graceful_pod = t.res.kind == "Pod"
            && requested_grace != Some(0)
            && obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && super::lifecycle::node_is_live(objects, &obj).await;
        if t.res.kind == "Namespace" {
            return super::lifecycle::delete_namespace(objects, t, s).await;
        }
        if finalizers.is_empty() && !graceful_pod {
            if dry_run(q) {
                return Ok(json_resp(StatusCode::OK, &obj));
            }
            match objects.delete(&t.key(), s.rev).await? {
                Some(_) => {
                    if t.res.kind == "Service" {
                        super::lifecycle::release_service(objects, &obj).await?;
                    }
                    return Ok(json_resp(StatusCode::OK, &obj));
                }
                None => continue,
            }
        }
        if obj["metadata"]["deletionTimestamp"].is_string() {
            return Ok(json_resp(StatusCode::ACCEPTED, &obj));
        }
        obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        let grace = requested_grace
            .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(0);
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        obj["metadata"]["finalizers"] = json!(finalizers);
        if finalizers.is_empty()
            && let Some(m) = obj["metadata"].as_object_mut()
        {
            m.remove("finalizers");
        }
        if dry_run(q) {
            return Ok(json_resp(StatusCode::ACCEPTED, &obj));
        }
        match objects
            .put(&t.key(), &obj, Precondition::ModRevision(s.rev))
            .await?
        {
            Some(rev) => {
                super::storage::set_rv(&mut obj, rev);
                return Ok(json_resp(StatusCode::ACCEPTED, &obj));
            }
            None => continue,
        }
    }
    Err(ApiError::conflict(
        t.res.group,
        t.res.plural,
        &name,
        "too many concurrent writes; try again",
    ))
}

async fn delete_collection(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(q)?;
    let (items, _, _) = objects
        .list(&t.res.prefix(t.namespace.as_deref()), None, 0, 0)
        .await?;
    let mut deleted = Vec::new();
    for s in items {
        if !filter.matches(&s.object) {
            continue;
        }
        let one = Target {
            name: s.object["metadata"]["name"].as_str().map(String::from),
            namespace: s.object["metadata"]["namespace"].as_str().map(String::from),
            ..t.clone()
        };
        match delete(objects, &one, q, b"").await {
            Ok(_) => deleted.push(s.object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rev = objects.store().mvcc().revision();
    Ok(json_resp(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.res.kind),
            "apiVersion": t.res.api_version(),
            "metadata": {"resourceVersion": rev.to_string()},
            "items": deleted,
        }),
    ))
}

/// `kubectl auth can-i`: may the caller do this?
pub async fn self_subject_access_review(
    objects: &Objects,
    req: Request<Body>,
    user: &User,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = read_body(req).await?;
    let body = super::proto::json_body(&parts.headers, body).map_err(ApiError::bad_request)?;
    let mut review = parse_json(&body)?;
    let ra = &review["spec"]["resourceAttributes"];
    let allowed = if ra.is_object() {
        let resource = ra["resource"].as_str().unwrap_or("");
        let attrs = super::rbac::Attributes {
            verb: ra["verb"].as_str().unwrap_or(""),
            group: ra["group"].as_str().unwrap_or(""),
            resource,
            subresource: ra["subresource"].as_str().filter(|s| !s.is_empty()),
            namespace: ra["namespace"].as_str().filter(|s| !s.is_empty()),
            name: ra["name"].as_str().filter(|s| !s.is_empty()),
        };
        super::rbac::allowed(objects, user, &attrs).await?
    } else {
        // Non-resource URLs (/healthz, /version, discovery) are open to
        // every authenticated user.
        review["spec"]["nonResourceAttributes"]["verb"] == "get"
    };
    review["status"] =
        json!({"allowed": allowed, "reason": if allowed { "allowed by RBAC" } else { "" }});
    if review["metadata"].is_null() {
        review["metadata"] = json!({});
    }
    Ok(json_resp(StatusCode::CREATED, &review))
}

/// `kubectl auth can-i --list`: every rule RBAC grants the caller in the
/// namespace of the review, resource rules and non-resource rules apart.
pub async fn self_subject_rules_review(
    objects: &Objects,
    req: Request<Body>,
    user: &User,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = read_body(req).await?;
    let body = super::proto::json_body(&parts.headers, body).map_err(ApiError::bad_request)?;
    let mut review = parse_json(&body)?;
    let namespace = review["spec"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let rules = super::rbac::rules_for(objects, user, namespace.as_deref()).await?;
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for r in rules {
        if r["nonResourceURLs"]
            .as_array()
            .is_some_and(|u| !u.is_empty())
        {
            non_resource_rules
                .push(json!({"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}));
        } else {
            let mut rule = json!({"verbs": r["verbs"], "apiGroups": r["apiGroups"], "resources": r["resources"]});
            if r["resourceNames"].as_array().is_some_and(|n| !n.is_empty()) {
                rule["resourceNames"] = r["resourceNames"].clone();
            }
            resource_rules.push(rule);
        }
    }
    // Discovery, /version and /healthz are open to every authenticated
    // user here (what system:discovery and system:public-info-viewer give
    // in Kubernetes).
    non_resource_rules.push(json!({
        "verbs": ["get"],
        "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*", "/version", "/version/"],
    }));
    review["status"] = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    });
    if review["metadata"].is_null() {
        review["metadata"] = json!({});
    }
    Ok(json_resp(StatusCode::CREATED, &review))
}

/// `kubectl create token SA`, and the kubelet's projected tokens: a token
/// bound to the ServiceAccount and, with `spec.boundObjectRef`, to a pod.
///
/// As kube-apiserver does, a pod-bound token asked for with the kubelet's
/// default 3607 s is valid for a year (the status still says 3607 s): the
/// agent writes tokens at container start and does not rotate them.
pub async fn token_request(
    objects: &Objects,
    auth: &super::auth::Authenticator,
    req: Request<Body>,
    t: Target,
    user: &User,
) -> Result<Response<Body>, ApiError> {
    super::rbac::authorize(objects, user, "create", &t).await?;
    let (parts, body) = read_body(req).await?;
    let body = super::proto::json_body(&parts.headers, body).map_err(ApiError::bad_request)?;
    let mut tr = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    let sa_target = Target {
        sub: None,
        ..t.clone()
    };
    let sa = load(objects, &sa_target).await?;
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let secs = match &tr["spec"]["expirationSeconds"] {
        Value::Null => 3600,
        v => v.as_i64().ok_or_else(|| {
            token_invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {v}: must be an integer"),
            )
        })?,
    };
    if secs < 600 {
        return Err(token_invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {secs}: may not specify a duration less than 10 minutes"),
        ));
    }
    if secs > 1 << 32 {
        return Err(token_invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {secs}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let pod = bound_pod(objects, &tr["spec"]["boundObjectRef"], &ns, &name).await?;
    if let Some(node) = user.name.strip_prefix("system:node:")
        && !user.is_master()
    {
        // The Node authorizer: a node gets tokens only for the accounts of
        // pods bound to it, and only bound to those pods.
        let on_node = pod
            .as_ref()
            .is_some_and(|(_, p)| p["spec"]["nodeName"].as_str() == Some(node));
        if !on_node {
            let mut e =
                ApiError::forbidden(&user.name, "create", "", "serviceaccounts/token", Some(&ns));
            e.message = format!(
                "{}: node '{node}' can only request tokens bound to pods scheduled on it",
                e.message
            );
            return Err(e);
        }
    }
    let audiences: Vec<String> = tr["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![super::auth::ISSUER.into()]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let valid_for =
        if pod.is_some() && secs == 3607 && audiences.iter().any(|a| a == super::auth::ISSUER) {
            365 * 24 * 3600
        } else {
            secs
        };
    let claims = super::auth::SaClaims {
        iss: super::auth::ISSUER.into(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: audiences.clone(),
        exp: now + valid_for,
        iat: now,
        namespace: ns,
        name,
        uid: sa.object["metadata"]["uid"].as_str().unwrap_or("").into(),
        pod: pod.map(|(p, _)| p),
    };
    let token = auth.issue_sa_token(&claims);
    tr["apiVersion"] = json!("authentication.k8s.io/v1");
    tr["kind"] = json!("TokenRequest");
    if tr["metadata"].is_null() {
        tr["metadata"] = json!({});
    }
    tr["spec"]["audiences"] = json!(audiences);
    tr["spec"]["expirationSeconds"] = json!(secs);
    tr["status"] = json!({"token": token, "expirationTimestamp": rfc3339(now + secs)});
    Ok(json_resp(StatusCode::CREATED, &tr))
}

/// A TokenRequest's 422, naming the field.
fn token_invalid(field: &str, why: String) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        "",
        vec![Cause::invalid(field, why)],
    )
}

/// The pod a TokenRequest's `spec.boundObjectRef` names, which must exist
/// in the namespace, have the UID given (if any) and run as the account.
async fn bound_pod(
    objects: &Objects,
    r: &Value,
    ns: &str,
    account: &str,
) -> Result<Option<(super::auth::BoundPod, Value)>, ApiError> {
    if r.is_null() {
        return Ok(None);
    }
    match r["kind"].as_str().unwrap_or("") {
        "Pod" => {}
        other => {
            return Err(token_invalid(
                "spec.boundObjectRef.kind",
                format!("Unsupported value: \"{other}\": supported values: \"Pod\""),
            ));
        }
    }
    let name = r["name"].as_str().unwrap_or("");
    if name.is_empty() {
        return Err(token_invalid(
            "spec.boundObjectRef.name",
            "Required value".into(),
        ));
    }
    let pods = resources::find("", "v1", "pods").expect("pods served");
    let Some(p) = objects.get(&pods.key(Some(ns), name)).await? else {
        return Err(ApiError::not_found("", "pods", name));
    };
    let uid = p.object["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if let Some(want) = r["uid"].as_str().filter(|u| !u.is_empty())
        && want != uid
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    let runs_as = p.object["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    if runs_as != account {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
        )));
    }
    Ok(Some((
        super::auth::BoundPod {
            name: name.into(),
            uid,
        },
        p.object,
    )))
}

/// The namespaces every cluster has.
pub async fn ensure_namespaces(objects: &Objects) -> anyhow::Result<()> {
    let res = resources::find("", "v1", "namespaces").expect("namespaces served");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
        });
        validate::default(res, &mut obj);
        create_if_absent(objects, res, obj).await?;
        namespace_defaults(objects, ns).await;
    }
    Ok(())
}

/// The `kubernetes` Service in `default`, as every cluster has: the first
/// address of the service range, port 443 (`https`) to the API server's
/// port, and Endpoints and an EndpointSlice naming this API server (added
/// to those of other members already there).
pub async fn ensure_kubernetes_service(objects: &Objects, api: SocketAddr) -> anyhow::Result<()> {
    let err = |e: ApiError| anyhow::anyhow!(e.message);
    let services = resources::find("", "v1", "services").expect("services served");
    if objects
        .get(&services.key(Some("default"), "kubernetes"))
        .await
        .map_err(err)?
        .is_none()
    {
        let mut svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": super::lifecycle::KUBERNETES_SERVICE_IP,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api.port()}],
                "sessionAffinity": "None",
            },
        });
        validate::default(services, &mut svc);
        // Reserve the address; a member that lost a race finds it taken.
        let _ = super::lifecycle::allocate_cluster_ip(objects, &mut svc).await;
        create_if_absent(objects, services, svc).await?;
    }
    let ip = api.ip().to_string();
    let port = json!({"name": "https", "port": api.port(), "protocol": "TCP"});
    let endpoints = resources::find("", "v1", "endpoints").expect("endpoints served");
    let fresh = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [{"addresses": [], "ports": [port.clone()]}],
    });
    add_to_list(
        objects,
        endpoints,
        fresh,
        "/subsets/0/addresses",
        json!({"ip": ip}),
    )
    .await
    .map_err(err)?;
    let slices = resources::find("discovery.k8s.io", "v1", "endpointslices").expect("served");
    let fresh = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": "IPv4",
        "endpoints": [],
        "ports": [port],
    });
    let endpoint = json!({"addresses": [ip], "conditions": {"ready": true}});
    add_to_list(objects, slices, fresh, "/endpoints", endpoint)
        .await
        .map_err(err)?;
    Ok(())
}

/// `kube-system/kube-dns` at 10.43.0.10, as k3s has it: the address every
/// agent serves the cluster DNS on (`agent::proxy::dns`). It has no
/// selector: the agents are its endpoints, not pods.
pub async fn ensure_kube_dns_service(objects: &Objects) -> anyhow::Result<()> {
    let services = resources::find("", "v1", "services").expect("services served");
    if objects
        .get(&services.key(Some("kube-system"), "kube-dns"))
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?
        .is_some()
    {
        return Ok(());
    }
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "skiff-dns"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": crate::agent::proxy::dns::CLUSTER_DNS_IP.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    });
    validate::default(services, &mut svc);
    // Reserve the address; a member that lost a race finds it taken.
    let _ = super::lifecycle::allocate_cluster_ip(objects, &mut svc).await;
    create_if_absent(objects, services, svc).await
}

/// Adds `item` to the list at `pointer` in the stored object named as
/// `fresh` (stored as `fresh` if absent), unless it is there already;
/// concurrent writers are retried.
async fn add_to_list(
    objects: &Objects,
    res: &'static Resource,
    fresh: Value,
    pointer: &str,
    item: Value,
) -> Result<(), ApiError> {
    let key = res.key(
        fresh["metadata"]["namespace"].as_str(),
        fresh["metadata"]["name"].as_str().unwrap_or(""),
    );
    for _ in 0..5 {
        let current = objects.get(&key).await?;
        let (mut obj, pre) = match current {
            Some(s) => (s.object, Precondition::ModRevision(s.rev)),
            None => {
                let mut obj = fresh.clone();
                obj["metadata"]["uid"] = json!(new_uid());
                obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
                (obj, Precondition::Absent)
            }
        };
        let Some(list) = obj.pointer_mut(pointer) else {
            return Ok(());
        };
        match list.as_array_mut() {
            Some(a) if a.contains(&item) => return Ok(()),
            Some(a) => a.push(item.clone()),
            None => *list = json!([item.clone()]),
        }
        if objects.put(&key, &obj, pre).await?.is_some() {
            return Ok(());
        }
    }
    Ok(())
}

/// Stores a bootstrap object unless one of its name exists: what an
/// administrator changed in it is kept across restarts.
/// The rules of Kubernetes' user-facing roles `view`, `edit` and `admin`
/// (there aggregated from labelled parts; here written out) over the
/// resources skiff serves. `view` reads everything but Secrets; `edit`
/// also writes, reads Secrets and execs into pods; `admin` also manages
/// Roles and RoleBindings in its namespace.
fn user_facing_rules() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    let read = ["get", "list", "watch"];
    let write = ["create", "delete", "deletecollection", "patch", "update"];
    // What `view` reads and `edit` also writes, by group.
    let workloads: [(&str, &[&str]); 8] = [
        (
            "",
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
            ],
        ),
        (
            "apps",
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        ("batch", &["cronjobs", "jobs"]),
        ("networking.k8s.io", &["ingresses", "networkpolicies"]),
        ("discovery.k8s.io", &["endpointslices"]),
        ("coordination.k8s.io", &["leases"]),
        ("autoscaling", &["horizontalpodautoscalers"]),
        ("policy", &["poddisruptionbudgets"]),
    ];
    let mut view: Vec<Value> = workloads
        .iter()
        .map(|(g, r)| rule(&[g], r, &read))
        .collect();
    view.extend([
        rule(
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
            &read,
        ),
        rule(&["events.k8s.io"], &["events"], &read),
    ]);
    let mut edit = view.clone();
    edit.extend(workloads.iter().map(|(g, r)| rule(&[g], r, &write)));
    edit.extend([
        rule(&[""], &["secrets"], &[&read[..], &write[..]].concat()),
        rule(
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "services/proxy",
            ],
            &[&write[..], &["get"][..]].concat(),
        ),
        rule(
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
            &["create"],
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
    ]);
    let mut admin = edit.clone();
    admin.extend([
        rule(
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
            &[&read[..], &write[..]].concat(),
        ),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
    ]);
    (view, edit, admin)
}

/// A default role or binding, created if absent and, as kube-apiserver's
/// RBAC bootstrap does, brought up to date if an older server made it —
/// unless an administrator set `rbac.authorization.kubernetes.io/autoupdate:
/// "false"` on it.
async fn reconcile_bootstrap_rbac(
    objects: &Objects,
    res: &'static resources::Resource,
    obj: Value,
) -> anyhow::Result<()> {
    let err = |e: ApiError| anyhow::anyhow!(e.message);
    let key = res.key(None, obj["metadata"]["name"].as_str().unwrap_or(""));
    let Some(have) = objects.get(&key).await.map_err(err)? else {
        return create_if_absent(objects, res, obj).await;
    };
    let pinned = have.object["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"]
        == "false";
    let fields = ["rules", "roleRef", "subjects"];
    if pinned || fields.iter().all(|f| have.object[*f] == obj[*f]) {
        return Ok(());
    }
    let mut updated = have.object.clone();
    for f in fields {
        if !obj[f].is_null() {
            updated[f] = obj[f].clone();
        }
    }
    tracing::info!(name = %key, "updating a default RBAC object to this version's");
    objects
        .put(&key, &updated, Precondition::ModRevision(have.rev))
        .await
        .map_err(err)?;
    Ok(())
}

pub(super) async fn create_if_absent(
    objects: &Objects,
    res: &'static resources::Resource,
    mut obj: Value,
) -> anyhow::Result<()> {
    let key = res.key(
        obj["metadata"]["namespace"].as_str(),
        obj["metadata"]["name"].as_str().unwrap_or(""),
    );
    if objects
        .get(&key)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?
        .is_some()
    {
        return Ok(());
    }
    obj["metadata"]["uid"] = json!(new_uid());
    obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    objects
        .put(&key, &obj, Precondition::Absent)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(())
}

/// The objects every cluster starts with: the bootstrap RBAC roles and
/// bindings (cluster-admin for `system:masters`, `system:node` for joined
/// agents), the `wasm` RuntimeClass, whose scheduling constraint sends
/// its pods to nodes whose agent runs wasm, and the system PriorityClasses.
pub async fn ensure_bootstrap_objects(objects: &Objects) -> anyhow::Result<()> {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    let read = ["get", "list", "watch"];
    let node_rules = vec![
        rule(
            &[""],
            &["nodes"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule(&[""], &["nodes/status"], &["patch", "update"]),
        rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(
            &[""],
            &[
                "configmaps",
                "secrets",
                "services",
                "endpoints",
                "serviceaccounts",
            ],
            &read,
        ),
        rule(
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
            &read,
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "update", "patch"],
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        rule(&["node.k8s.io"], &["runtimeclasses"], &read),
        rule(&["discovery.k8s.io"], &["endpointslices"], &read),
        // The ingress gateway in every agent.
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingressclasses"],
            &read,
        ),
    ];
    let (view, edit, admin) = user_facing_rules();
    let objects_to_make = [
        (
            "clusterroles",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}],
            }),
        ),
        (
            "clusterrolebindings",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}],
            }),
        ),
        (
            "clusterroles",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "system:node", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "rules": node_rules,
            }),
        ),
        (
            "clusterrolebindings",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "system:node", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
            }),
        ),
    ];
    let user_facing = [("view", view), ("edit", edit), ("admin", admin)].map(|(name, rules)| {
        (
            "clusterroles",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "rules": rules,
            }),
        )
    });
    for (plural, obj) in objects_to_make.into_iter().chain(user_facing) {
        let res = resources::find("rbac.authorization.k8s.io", "v1", plural).expect("rbac served");
        reconcile_bootstrap_rbac(objects, res, obj).await?;
    }
    let runtime_classes =
        resources::find("node.k8s.io", "v1", "runtimeclasses").expect("runtimeclasses served");
    let mut wasm_nodes = serde_json::Map::new();
    wasm_nodes.insert(skiff_sched::model::LABEL_RUNTIME_WASM.into(), json!("true"));
    // The agents' ingress gateway, the default class as k3s makes Traefik's.
    let ingress_classes = resources::find("networking.k8s.io", "v1", "ingressclasses")
        .expect("ingressclasses served");
    create_if_absent(
        objects,
        ingress_classes,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "skiff", "annotations": {
                "ingressclass.kubernetes.io/is-default-class": "true",
            }},
            "spec": {"controller": "skiff.dev/ingress-gateway"},
        }),
    )
    .await?;
    let storage_classes =
        resources::find("storage.k8s.io", "v1", "storageclasses").expect("storageclasses served");
    create_if_absent(
        objects,
        storage_classes,
        crate::controllers::volumes::default_class(),
    )
    .await?;
    let priority_classes = resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priorityclasses served");
    for class in super::priority::system_classes() {
        create_if_absent(objects, priority_classes, class).await?;
    }
    create_if_absent(
        objects,
        runtime_classes,
        json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": skiff_sched::WASM_RUNTIME_CLASS},
            "handler": "wasmtime",
            "scheduling": {"nodeSelector": wasm_nodes},
        }),
    )
    .await
}

pub use rfc3339 as format_time;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_425_404), "2026-11-23T09:16:44Z");
        assert_eq!(parse_rfc3339("2026-11-23T09:16:44Z"), Some(1_795_425_404));
        assert_eq!(
            parse_rfc3339("2000-02-29T23:59:59Z")
                .map(rfc3339)
                .as_deref(),
            Some("2000-02-29T23:59:59Z")
        );
    }

    #[test]
    fn uids_look_like_uuid_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            percent_decode("app%3Dweb%2Ctier%21%3Dfront"),
            "app=web,tier!=front"
        );
        assert_eq!(percent_decode("a+b%"), "a b%");
    }
}
