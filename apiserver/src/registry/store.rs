//! The generic store: create, get, list, update, patch, delete and watch for every kind, with
//! one fixed hook order (decode → default → prepare → validate → allocate → write). It never
//! looks at which kind it serves; per-kind behaviour comes from the kind's `Strategy`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use apimachinery::fields::FieldSelector;
use apimachinery::labels::Selector;
use apimachinery::managedfields::{self, ManagedFields, ResetFields, UpdateRequest};
use apimachinery::status::ApiError;
use apimachinery::validation::{validate_object_meta, validate_object_meta_update, FieldErrors};

use super::options::{
    decode_continue, encode_continue, DeleteOptions, FieldValidation, ListOptions, Propagation, RvMatch, WriteOptions,
};
use super::{Kind, Registry, SideEffects};
use crate::storage::cache::{decode, CacheMsg, Obj, WatchFromError};
use crate::storage::{Cacher, Etcd, EventType, StorageError, WatchEvent};

const MAX_UPDATE_RETRIES: usize = 16;

pub struct Store {
    pub etcd: Etcd,
    pub registry: Registry,
    caches: HashMap<&'static str, Arc<Cacher>>,
    admission: crate::admission::Plugins,
}

/// What a list returns.
pub struct ListResult {
    pub items: Vec<Arc<Obj>>,
    pub rev: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    Event(EventType, Arc<Obj>),
    /// A bookmark at this revision; `initial_end` marks the end of `sendInitialEvents`.
    Bookmark {
        rev: i64,
        initial_end: bool,
    },
    Error(ApiError),
}

/// The outcome of a write: the object and warnings for the client.
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

pub struct Deleted {
    pub object: Value,
    /// False when the object still exists (graceful deletion or finalizers).
    pub gone: bool,
}

fn storage_err(e: StorageError) -> ApiError {
    match e {
        StorageError::Compacted { requested, compacted } => ApiError::too_old_resource_version(requested, compacted),
        StorageError::FutureRevision(rv) => {
            ApiError::timeout(format!("Too large resource version: {rv}, current: unknown"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata was just made an object")
}

/// Paths present in `orig` but dropped by the typed round trip: the unknown fields.
pub fn unknown_fields(orig: &Value, pruned: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, pruned) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match p.get(k) {
                    None => out.push(sub),
                    Some(pv) => unknown_fields(v, pv, &sub, out),
                }
            }
        }
        (Value::Array(o), Value::Array(p)) => {
            for (i, (ov, pv)) in o.iter().zip(p.iter()).enumerate() {
                unknown_fields(ov, pv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Random suffix for generateName, from upstream's alphabet (no vowels, no look-alikes).
pub(crate) fn name_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Everything but metadata and status: a change here bumps the generation.
fn spec_view(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

/// Two objects equal apart from resourceVersion and managed-fields timestamps.
fn same_content(a: &Value, b: &Value) -> bool {
    let norm = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                for e in mf.iter_mut().filter_map(Value::as_object_mut) {
                    e.remove("time");
                }
            }
        }
        v
    };
    norm(a) == norm(b)
}

impl Store {
    /// Opens the store and starts one watch cache per resource; they stop with `cancel`.
    /// `window` is how many recent events each watch cache keeps for watchers that resume.
    pub fn new(
        etcd: Etcd,
        registry: Registry,
        window: usize,
        admission: crate::admission::Plugins,
        cancel: &CancellationToken,
    ) -> Arc<Self> {
        let mut caches = HashMap::new();
        for kind in registry.all() {
            let name = kind.info.storage_name();
            caches.entry(name).or_insert_with(|| {
                let c = Cacher::new(etcd.clone(), format!("/{name}/"), window.max(1));
                tokio::spawn(c.clone().run(cancel.child_token()));
                c
            });
        }
        Arc::new(Self { etcd, registry, caches, admission })
    }

    pub fn caches_ready(&self) -> bool {
        self.caches.values().all(|c| c.is_ready())
    }

    /// The UID of a live object as the watch cache has it, for authentication's checks (no
    /// etcd read on the request path).
    pub fn cached_uid(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<String> {
        let kind = self.registry.get(group, plural)?;
        let obj = self.cache(&kind).get(&Self::key(&kind, ns, name))?;
        obj.value().pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string)
    }

    /// Waits (briefly) until the watch cache has seen `obj`'s revision, so that what
    /// [`Store::cached_uid`] answers next includes it.
    pub async fn wait_cached(&self, kind: &Kind, obj: &Value) {
        let rev = meta_str(obj, "resourceVersion").and_then(|r| r.parse::<i64>().ok()).unwrap_or(0);
        self.cache(kind).wait_for(rev, std::time::Duration::from_secs(5)).await;
    }

    fn cache(&self, kind: &Kind) -> &Arc<Cacher> {
        self.caches.get(kind.info.storage_name()).expect("every kind has a cache")
    }

    pub fn key(kind: &Kind, ns: Option<&str>, name: &str) -> String {
        match (kind.info.namespaced, ns) {
            (true, Some(ns)) => format!("/{}/{ns}/{name}", kind.info.storage_name()),
            _ => format!("/{}/{name}", kind.info.storage_name()),
        }
    }

    fn prefix(kind: &Kind, ns: Option<&str>) -> String {
        match (kind.info.namespaced, ns) {
            (true, Some(ns)) => format!("/{}/{ns}/", kind.info.storage_name()),
            _ => format!("/{}/", kind.info.storage_name()),
        }
    }

    async fn get_kv(&self, kind: &Kind, ns: Option<&str>, name: &str) -> Result<(Value, i64), ApiError> {
        let key = Self::key(kind, ns, name);
        match self.etcd.get(&key).await.map_err(storage_err)? {
            None => Err(ApiError::not_found(kind.info.group, kind.info.plural, name)),
            Some(kv) => Ok((decode(&kv.value, kv.mod_revision).map_err(storage_err)?, kv.mod_revision)),
        }
    }

    /// GET of one object. `rv == Some("0")` may be served from the cache.
    pub async fn get(&self, kind: &Kind, ns: Option<&str>, name: &str, rv: Option<&str>) -> Result<Value, ApiError> {
        if rv == Some("0") {
            let cache = self.cache(kind);
            if cache.is_ready() {
                return cache
                    .get(&Self::key(kind, ns, name))
                    .map(|v| v.value().clone())
                    .ok_or_else(|| ApiError::not_found(kind.info.group, kind.info.plural, name));
            }
        }
        Ok(self.get_kv(kind, ns, name).await?.0)
    }

    fn filter(
        &self,
        kind: &Kind,
        opts: &ListOptions,
    ) -> Result<impl Fn(&Value) -> bool + Send + Sync + 'static, ApiError> {
        let labels = Selector::parse(&opts.label_selector)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(&opts.field_selector).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let supported: Vec<&'static str> = kind.strategy.selectable_fields().to_vec();
        for r in fields.requirements() {
            let f = r.field.as_str();
            if f != "metadata.name" && f != "metadata.namespace" && !supported.contains(&f) {
                return Err(ApiError::bad_request(format!("field label not supported: {f}")));
            }
        }
        let namespaced = kind.info.namespaced;
        Ok(move |obj: &Value| {
            let empty = Map::new();
            let obj_labels = meta(obj).get("labels").and_then(Value::as_object).unwrap_or(&empty);
            if !labels.matches(obj_labels) {
                return false;
            }
            fields.matches(|f| {
                if f == "metadata.namespace" && !namespaced {
                    return Some(String::new());
                }
                Some(apimachinery::fields::object_field(obj, f).unwrap_or_default())
            })
        })
    }

    /// LIST with upstream's resourceVersion semantics: unset → a consistent read from etcd;
    /// `0` → whatever the cache has; `N` + NotOlderThan → the cache once it has seen N;
    /// `N` + Exact, or a continue token → etcd at that revision.
    pub async fn list(&self, kind: &Kind, ns: Option<&str>, opts: &ListOptions) -> Result<ListResult, ApiError> {
        let filter = self.filter(kind, opts)?;
        let prefix = Self::prefix(kind, ns);
        let cache = self.cache(kind);
        let from_cache = match (opts.rv(), opts.rv_match, &opts.continue_token) {
            (_, _, Some(_)) => false,
            (Some(0), _, _) => true,
            (Some(_), Some(RvMatch::Exact), _) => false,
            (Some(_), _, _) => opts.limit == 0,
            (None, _, _) => false,
        };
        if from_cache && cache.is_ready() {
            if let Some(rv) = opts.rv().filter(|r| *r > 0) {
                if !cache.wait_for(rv, Duration::from_secs(3)).await {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {rv}, current: {}",
                        cache.revision()
                    )));
                }
            }
            let (items, rev) =
                cache.list(&prefix).map_err(|_| ApiError::service_unavailable("watch cache not ready"))?;
            let items = items.into_iter().filter(|o| filter(o)).collect();
            return Ok(ListResult { items, rev, continue_token: None, remaining: None });
        }
        // Straight from etcd, paged by key, filtering as we go until `limit` items match.
        let (mut rev, mut start_after) = match &opts.continue_token {
            Some(t) => {
                let (rev, start) = decode_continue(t)?;
                (rev, Some(format!("{prefix}{start}")))
            }
            None => match (opts.rv(), opts.rv_match) {
                (Some(rv), Some(RvMatch::Exact)) => (rv, None),
                _ => (0, None),
            },
        };
        let mut items = Vec::new();
        let mut last_key: Option<String> = None;
        let (more, remaining) = loop {
            let want = if opts.limit > 0 { (opts.limit - items.len() as i64).max(1) } else { 0 };
            let page = self.etcd.list(&prefix, rev, start_after.as_deref(), want).await.map_err(|e| match e {
                StorageError::Compacted { .. } if opts.continue_token.is_some() => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                StorageError::Compacted { .. } => ApiError::too_old_resource_version(rev, 0),
                other => storage_err(other),
            })?;
            rev = page.revision;
            for kv in &page.items {
                let obj = decode(&kv.value, kv.mod_revision).map_err(storage_err)?;
                last_key = Some(kv.key.clone());
                if filter(&obj) {
                    items.push(Arc::new(Obj::new(obj)));
                }
            }
            if !page.more || opts.limit == 0 || items.len() as i64 >= opts.limit {
                break (page.more, Some(page.remaining));
            }
            start_after = last_key.clone();
        };
        let continue_token = match (more, &last_key) {
            (true, Some(k)) if opts.limit > 0 => Some(encode_continue(rev, k.strip_prefix(&prefix).unwrap_or(k))),
            _ => None,
        };
        let remaining = if continue_token.is_some() && opts.label_selector.is_empty() && opts.field_selector.is_empty()
        {
            remaining.filter(|r| *r > 0)
        } else {
            None
        };
        Ok(ListResult { items, rev, continue_token, remaining })
    }

    /// Checks apiVersion/kind/namespace/name of a body against the URL and fills them in.
    fn check_body(&self, kind: &Kind, ns: Option<&str>, name: Option<&str>, body: &mut Value) -> Result<(), ApiError> {
        let Some(obj) = body.as_object_mut() else {
            return Err(ApiError::bad_request("the body of the request must be a JSON or YAML object"));
        };
        let want_av = kind.info.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                obj.insert("apiVersion".into(), json!(want_av));
            }
            Some(av) if av == want_av => {}
            Some(av) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )))
            }
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                obj.insert("kind".into(), json!(kind.info.kind));
            }
            Some(k) if k == kind.info.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    kind.info.kind
                )))
            }
        }
        let m = meta_mut(body);
        if kind.info.namespaced {
            match (m.get("namespace").and_then(Value::as_str), ns) {
                (Some(bns), Some(uns)) if !bns.is_empty() && bns != uns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                (_, Some(uns)) => {
                    m.insert("namespace".into(), json!(uns));
                }
                _ => {}
            }
        } else {
            m.remove("namespace");
        }
        if let Some(url_name) = name {
            match m.get("name").and_then(Value::as_str) {
                None | Some("") => {
                    m.insert("name".into(), json!(url_name));
                }
                Some(n) if n == url_name => {}
                Some(n) => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({url_name})"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Typed round trip + unknown-field policy. Returns the pruned object and warnings.
    fn decode_typed(&self, kind: &Kind, body: Value, fv: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        let pruned = (kind.round_trip)(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                kind.info.kind, kind.info.version, kind.info.kind
            ))
        })?;
        let mut unknown = Vec::new();
        if fv != FieldValidation::Ignore {
            unknown_fields(&body, &pruned, "", &mut unknown);
        }
        let msgs: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        match fv {
            FieldValidation::Strict if !msgs.is_empty() => {
                Err(ApiError::bad_request(format!("strict decoding error: {}", msgs.join(", "))))
            }
            FieldValidation::Warn => Ok((pruned, msgs)),
            _ => Ok((pruned, Vec::new())),
        }
    }

    fn validate_meta(&self, kind: &Kind, obj: &Value, old: Option<&Value>) -> FieldErrors {
        let mut errs = validate_object_meta(meta(obj), kind.info.namespaced, kind.strategy.name_validator());
        if let Some(old) = old {
            errs.extend(validate_object_meta_update(meta(obj), meta(old)));
        }
        errs
    }

    fn invalid(&self, kind: &Kind, obj: &Value, errs: &FieldErrors) -> ApiError {
        let name = meta_str(obj, "name").or_else(|| meta_str(obj, "generateName")).unwrap_or("");
        ApiError::invalid(kind.info.group, kind.info.kind, name, errs)
    }

    async fn check_namespace(&self, kind: &Kind, ns: Option<&str>) -> Result<(), ApiError> {
        let (true, Some(ns)) = (kind.info.namespaced, ns) else { return Ok(()) };
        let Some(nskind) = self.registry.get("", "namespaces") else { return Ok(()) };
        let key = Self::key(&nskind, None, ns);
        let terminating = |o: &Value| o.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
        // Read in place from the cache: the namespace is consulted on every create.
        let state = match self.cache(&nskind).get(&key) {
            Some(o) => Some(terminating(&o)),
            None => self
                .etcd
                .get(&key)
                .await
                .map_err(storage_err)?
                .and_then(|kv| decode(&kv.value, kv.mod_revision).ok())
                .map(|o| terminating(&o)),
        };
        match state {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(true) => {
                let mut e = ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    kind.info.qualified_plural(),
                    ""
                ));
                e.details = Some(Box::new(apimachinery::status::Details {
                    kind: kind.info.plural.into(),
                    group: kind.info.group.into(),
                    causes: vec![(
                        "NamespaceTerminating".into(),
                        format!("namespace {ns} is being terminated"),
                        "metadata.namespace".into(),
                    )],
                    ..Default::default()
                }));
                Err(e)
            }
            Some(false) => Ok(()),
        }
    }

    /// The ServiceAccount admission plugin's look-up for a new pod: the service account it will
    /// run as, or None when the plugin does not apply. Namespace lifecycle answers first, as
    /// upstream orders the plugins.
    async fn admit_service_account(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        obj: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let is_pod = kind.info.group.is_empty() && kind.info.plural == "pods";
        if !is_pod || !self.admission.service_account || crate::admission::is_mirror_pod(obj) {
            return Ok(None);
        }
        self.check_namespace(kind, ns).await?;
        let Some(sakind) = self.registry.get("", "serviceaccounts") else { return Ok(None) };
        let ns = ns.unwrap_or_default();
        let name = crate::admission::service_account_name(obj);
        let key = Self::key(&sakind, Some(ns), &name);
        // upstream: the controller-manager creates `default` just after its namespace, so a pod
        // created in a new namespace looks for it for up to about two seconds.
        let attempts = if name == "default" { 10 } else { 1 };
        let interval = {
            use rand::Rng;
            std::time::Duration::from_millis(rand::rng().random_range(100..200))
        };
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(interval).await;
            }
            if let Some(o) = self.cache(&sakind).get(&key) {
                return Ok(Some(Value::clone(&o)));
            }
            // Just created and not yet in the cache: etcd has the last word.
            if let Some(kv) = self.etcd.get(&key).await.map_err(storage_err)? {
                return decode(&kv.value, kv.mod_revision).map(Some).map_err(storage_err);
            }
        }
        let pod = meta_str(obj, "name").unwrap_or_default();
        Err(crate::admission::service_account_not_found(pod, ns, &name))
    }

    /// Records field ownership in `metadata.managedFields` for a write that turned `old` (none
    /// for a create) into `obj`. `requested` is the managedFields the client sent, if any.
    ///
    /// upstream fieldmanager: the write starts from the managers the client sent when they
    /// decode (an empty list resets them), else from the stored ones; subresource writes always
    /// start from the stored ones. The fields the write added or changed then move to the
    /// manager's `Update` entry. A write without a manager keeps the managers it starts from;
    /// an apply (`handlers::apply_request`) has computed its managers already.
    #[allow(clippy::too_many_arguments)]
    fn record_manager(
        kind: &Kind,
        obj: &mut Value,
        old: Option<&Value>,
        requested: Option<&Value>,
        manager: Option<&str>,
        operation: &str,
        sub: Option<&str>,
    ) {
        let managed = if operation == "Apply" {
            ManagedFields::requested_or_live(requested, ManagedFields::default())
        } else {
            let live = old.and_then(|o| ManagedFields::of(o).ok()).unwrap_or_default();
            let base = if sub.is_some() { live } else { ManagedFields::requested_or_live(requested, live) };
            match manager {
                None => base,
                Some(manager) => {
                    let api_version = kind.info.api_version();
                    let reset = match sub {
                        None if kind.strategy.status_subresource() => ResetFields::Status,
                        Some("status") => ResetFields::AllButStatus,
                        _ => ResetFields::None,
                    };
                    let req = UpdateRequest {
                        manager,
                        api_version: &api_version,
                        subresource: sub,
                        now: &now(),
                        root_type: apimachinery::patch::meta::root_type(&api_version, kind.info.kind),
                        reset,
                    };
                    let empty = json!({});
                    managedfields::update(old.unwrap_or(&empty), obj, &base, &req)
                }
            }
        };
        managed.write_into(obj);
    }

    /// POST: creates the object.
    pub async fn create(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.check_body(kind, ns, None, &mut body)?;
        let m = meta_mut(&mut body);
        if m.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        let generate = m.get("generateName").and_then(Value::as_str).map(str::to_string);
        let named = m.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let requested_managed = m.get("managedFields").cloned();
        let (mut obj, warnings) = self.decode_typed(kind, body, opts.field_validation)?;
        let service_account = self.admit_service_account(kind, ns, &obj).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut o = obj.clone();
            let m = meta_mut(&mut o);
            if !named {
                if let Some(g) = &generate {
                    m.insert("name".into(), json!(format!("{g}{}", name_suffix())));
                }
            }
            m.insert("uid".into(), json!(super::random_uuid().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("resourceVersion");
            m.remove("selfLink");
            if kind.strategy.tracks_generation() {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
            kind.strategy.default(&mut o);
            kind.strategy.prepare_for_create(&mut o);
            Self::record_manager(
                kind,
                &mut o,
                None,
                requested_managed.as_ref(),
                opts.field_manager.as_deref(),
                "Update",
                None,
            );
            // Mutating admission after the field manager, as upstream orders them: what the
            // plugin adds is owned by no manager.
            if let Some(sa) = &service_account {
                crate::admission::mutate_pod(&mut o, sa, &name_suffix());
            }
            let mut errs = self.validate_meta(kind, &o, None);
            errs.extend(kind.strategy.validate(&o));
            if !errs.is_empty() {
                return Err(self.invalid(kind, &o, &errs));
            }
            let name = meta_str(&o, "name").unwrap_or_default().to_string();
            // Admission already asked, before the service account look-up.
            if service_account.is_none() {
                self.check_namespace(kind, ns).await?;
            }
            let key = Self::key(kind, ns, &name);
            if opts.dry_run {
                if self.etcd.get(&key).await.map_err(storage_err)?.is_some() {
                    return Err(ApiError::already_exists(kind.info.group, kind.info.plural, &name));
                }
                return Ok(Written { object: o, warnings, created: true });
            }
            let fx = kind.strategy.allocate(&mut o, None).await?;
            let stored = strip_rv(&o);
            let mut puts = vec![(key.clone(), stored)];
            puts.extend(fx.creates.iter().cloned());
            match self.etcd.create(&puts).await {
                Ok(rev) => {
                    crate::storage::set_resource_version(&mut o, rev);
                    return Ok(Written { object: o, warnings, created: true });
                }
                Err(StorageError::AlreadyExists) => {
                    let exists = self.etcd.get(&key).await.map_err(storage_err)?.is_some();
                    if exists && (named || attempts >= 8) {
                        return Err(ApiError::already_exists(kind.info.group, kind.info.plural, &name));
                    }
                    if !exists && fx.creates.is_empty() {
                        return Err(ApiError::internal("create failed for no reason etcd gave"));
                    }
                    if attempts >= 8 {
                        return Err(ApiError::internal("could not allocate after 8 attempts"));
                    }
                    // An allocation or a generated name raced with another create: try again.
                    obj = obj.clone();
                }
                Err(e) => return Err(storage_err(e)),
            }
        }
    }

    /// The new object an update would store, given the stored one; None for a no-op.
    #[allow(clippy::too_many_arguments)]
    fn prepare_update(
        &self,
        kind: &Kind,
        sub: Option<&str>,
        old: &Value,
        new: Value,
        opts: &WriteOptions,
        operation: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Value, ApiError> {
        let requested_managed = meta(&new).get("managedFields").cloned();
        let (mut o, w) = self.decode_typed(kind, new, opts.field_validation)?;
        *warnings = w;
        match sub {
            Some(s) => {
                o = kind.strategy.subresource_update(s, &o, old).ok_or_else(|| {
                    ApiError::method_not_allowed(format!(
                        "the server does not allow this method on the requested resource ({s})"
                    ))
                })?;
            }
            None => {
                // Server-owned metadata always comes from the stored object.
                let om = meta(old).clone();
                let m = meta_mut(&mut o);
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "resourceVersion",
                ] {
                    match om.get(f) {
                        Some(v) => m.insert(f.into(), v.clone()),
                        None => m.remove(f),
                    };
                }
                kind.strategy.default(&mut o);
                if kind.strategy.status_subresource() {
                    match old.get("status") {
                        Some(s) => o["status"] = s.clone(),
                        None => {
                            if let Some(obj) = o.as_object_mut() {
                                obj.remove("status");
                            }
                        }
                    }
                }
                kind.strategy.prepare_for_update(&mut o, old);
                if kind.strategy.tracks_generation() && spec_view(&o) != spec_view(old) {
                    let g = meta(old).get("generation").and_then(Value::as_i64).unwrap_or(0);
                    meta_mut(&mut o).insert("generation".into(), json!(g + 1));
                }
            }
        }
        if let Some(rv) = meta(old).get("resourceVersion").cloned() {
            meta_mut(&mut o).insert("resourceVersion".into(), rv);
        }
        Self::record_manager(
            kind,
            &mut o,
            Some(old),
            requested_managed.as_ref(),
            opts.field_manager.as_deref(),
            operation,
            sub,
        );
        let mut errs = self.validate_meta(kind, &o, Some(old));
        errs.extend(kind.strategy.validate_update(&o, old));
        if !errs.is_empty() {
            return Err(self.invalid(kind, &o, &errs));
        }
        Ok(o)
    }

    /// Writes `o` over the stored revision `rev` (or deletes it when its finalizers are done).
    async fn write_update(
        &self,
        kind: &Kind,
        key: &str,
        old: &Value,
        rev: i64,
        mut o: Value,
        fx: SideEffects,
    ) -> Result<Value, StorageError> {
        let finished = meta(&o).get("deletionTimestamp").is_some()
            && meta(&o).get("finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty)
            && !kind.strategy.deletion_blocked(&mut o.clone());
        let _ = old;
        if finished {
            let mut release = kind.strategy.release(&o);
            release.extend(fx.deletes);
            let r = self.etcd.delete(key, rev, &release).await?;
            crate::storage::set_resource_version(&mut o, r);
            return Ok(o);
        }
        let r = self.etcd.update(key, rev, strip_rv(&o), &fx.creates, &fx.deletes).await?;
        crate::storage::set_resource_version(&mut o, r);
        Ok(o)
    }

    /// PUT: replaces the object (or a subresource). A body resourceVersion is a precondition;
    /// without one the update is unconditional.
    pub async fn update(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.check_body(kind, ns, Some(name), &mut body)?;
        let precondition = meta_str(&body, "resourceVersion").filter(|s| !s.is_empty()).map(str::to_string);
        self.update_with(kind, ns, name, sub, opts, "Update", precondition, move |_old| Ok(body.clone())).await
    }

    /// The read-modify-write loop shared by PUT and PATCH: `make` builds the new object from the
    /// stored one; conflicts are retried unless the caller gave a resourceVersion.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_with(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        opts: &WriteOptions,
        operation: &str,
        precondition: Option<String>,
        make: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let key = Self::key(kind, ns, name);
        for _ in 0..MAX_UPDATE_RETRIES {
            let (old, rev) = self.get_kv(kind, ns, name).await?;
            if let Some(p) = &precondition {
                if *p != rev.to_string() {
                    return Err(ApiError::modified_conflict(kind.info.group, kind.info.plural, name));
                }
            }
            let mut new = make(&old)?;
            self.check_body(kind, ns, Some(name), &mut new)?;
            let mut warnings = Vec::new();
            let mut o = self.prepare_update(kind, sub, &old, new, opts, operation, &mut warnings)?;
            if same_content(&o, &old) {
                return Ok(Written { object: old, warnings, created: false });
            }
            if opts.dry_run {
                crate::storage::set_resource_version(&mut o, rev);
                return Ok(Written { object: o, warnings, created: false });
            }
            let fx =
                if sub.is_none() { kind.strategy.allocate(&mut o, Some(&old)).await? } else { SideEffects::default() };
            match self.write_update(kind, &key, &old, rev, o, fx).await {
                Ok(o) => return Ok(Written { object: o, warnings, created: false }),
                Err(StorageError::Conflict) | Err(StorageError::NotFound) | Err(StorageError::AlreadyExists) => {
                    if precondition.is_some() {
                        return Err(ApiError::modified_conflict(kind.info.group, kind.info.plural, name));
                    }
                    continue;
                }
                Err(e) => return Err(storage_err(e)),
            }
        }
        Err(ApiError::modified_conflict(kind.info.group, kind.info.plural, name))
    }

    /// DELETE of one object with graceful deletion, finalizers and preconditions.
    pub async fn delete(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = Self::key(kind, ns, name);
        for _ in 0..MAX_UPDATE_RETRIES {
            let (old, rev) = self.get_kv(kind, ns, name).await?;
            if let Some(uid) = &opts.precondition_uid {
                if meta_str(&old, "uid") != Some(uid.as_str()) {
                    return Err(ApiError::conflict(
                        kind.info.group,
                        kind.info.plural,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&old, "uid").unwrap_or("")
                        ),
                    ));
                }
            }
            if let Some(prv) = &opts.precondition_rv {
                if *prv != rev.to_string() {
                    return Err(ApiError::conflict(
                        kind.info.group,
                        kind.info.plural,
                        name,
                        &format!("Precondition failed: ResourceVersion in precondition: {prv}, ResourceVersion in object meta: {rev}"),
                    ));
                }
            }
            let mut o = old.clone();
            let already = meta(&o).get("deletionTimestamp").is_some();
            let grace = opts.grace_period_seconds.or_else(|| kind.strategy.graceful_deletion(&o)).unwrap_or(0);
            let m = meta_mut(&mut o);
            let mut finalizers: Vec<Value> = m.get("finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut changed = false;
            match opts.propagation {
                Some(Propagation::Foreground) if !finalizers.contains(&json!("foregroundDeletion")) => {
                    finalizers.push(json!("foregroundDeletion"));
                    changed = true;
                }
                Some(Propagation::Orphan) if !finalizers.contains(&json!("orphan")) => {
                    finalizers.push(json!("orphan"));
                    changed = true;
                }
                _ => {}
            }
            if changed {
                m.insert("finalizers".into(), Value::Array(finalizers.clone()));
            }
            let blocked = kind.strategy.deletion_blocked(&mut o);
            let must_wait = !finalizers.is_empty() || blocked || grace > 0;
            if must_wait {
                let current_grace = meta(&o).get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                if already && !changed && current_grace.is_none_or(|g| g <= grace) && grace != 0 {
                    return Ok(Deleted { object: old, gone: false });
                }
                if grace == 0 && finalizers.is_empty() && !blocked {
                    // A forced delete of a gracefully terminating object: fall through.
                } else {
                    let m = meta_mut(&mut o);
                    let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    if !already || grace < current_grace.unwrap_or(i64::MAX) {
                        m.insert(
                            "deletionTimestamp".into(),
                            json!(when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                        );
                        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                    if kind.strategy.tracks_generation() && !already {
                        let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
                        m.insert("generation".into(), json!(g + 1));
                    }
                    if opts.dry_run {
                        return Ok(Deleted { object: o, gone: false });
                    }
                    match self.etcd.update(&key, rev, strip_rv(&o), &[], &[]).await {
                        Ok(r) => {
                            crate::storage::set_resource_version(&mut o, r);
                            return Ok(Deleted { object: o, gone: false });
                        }
                        Err(StorageError::Conflict) => continue,
                        Err(e) => return Err(storage_err(e)),
                    }
                }
            }
            if opts.dry_run {
                return Ok(Deleted { object: old, gone: true });
            }
            match self.etcd.delete(&key, rev, &kind.strategy.release(&old)).await {
                Ok(r) => {
                    let mut last = old;
                    crate::storage::set_resource_version(&mut last, r);
                    return Ok(Deleted { object: last, gone: true });
                }
                Err(StorageError::Conflict) => continue,
                Err(StorageError::NotFound) => {
                    return Err(ApiError::not_found(kind.info.group, kind.info.plural, name))
                }
                Err(e) => return Err(storage_err(e)),
            }
        }
        Err(ApiError::modified_conflict(kind.info.group, kind.info.plural, name))
    }

    /// DELETE of a collection: every object the selectors match, one by one.
    pub async fn delete_collection(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let mut lo = list.clone();
        lo.limit = 0;
        lo.continue_token = None;
        let found = self.list(kind, ns, &lo).await?;
        let mut out = Vec::new();
        for item in found.items {
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            let ins = meta_str(&item, "namespace").map(str::to_string);
            match self.delete(kind, ins.as_deref().or(ns), &name, opts).await {
                Ok(d) => out.push(d.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// WATCH from the cache; a revision older than the cache window gets a watch of its own on
    /// etcd, which answers 410 Expired once etcd compacted it.
    pub async fn watch(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<BoxStream<'static, WatchItem>, ApiError> {
        let filter = Arc::new(self.filter(kind, opts)?);
        let prefix = Self::prefix(kind, ns);
        let cache = self.cache(kind).clone();
        // upstream: RV unset or "0" starts with the current state as ADDED events, unless
        // sendInitialEvents=false.
        let from = match (opts.rv(), opts.send_initial_events) {
            (_, Some(true)) => None,
            (None, Some(false)) | (Some(0), Some(false)) => Some(cache.revision()),
            (None, _) | (Some(0), _) => None,
            (Some(rv), _) => Some(rv),
        };
        if !cache.is_ready() && !cache.wait_for(1, Duration::from_secs(5)).await {
            return Err(ApiError::service_unavailable("watch cache is not ready"));
        }
        let initial_end = opts.send_initial_events == Some(true) && opts.allow_bookmarks;
        // upstream: an unset resourceVersion is a consistent read: the current state comes from
        // etcd at revision R, then the watch resumes from R.
        let (pre, from) = match (from, opts.rv()) {
            (None, None) => {
                let mut lo = opts.clone();
                lo.limit = 0;
                lo.continue_token = None;
                lo.resource_version = None;
                lo.rv_match = None;
                let list = self.list(kind, ns, &lo).await?;
                (list.items, Some(list.rev))
            }
            _ => (Vec::new(), from),
        };
        let cw = match cache.watch(&prefix, from) {
            Ok(cw) => cw,
            Err(WatchFromError::TooOld(_)) => {
                let rv = from.unwrap_or(0);
                let rest = self.etcd_watch(prefix, rv, filter).await;
                let pre = futures::stream::iter(pre.into_iter().map(|o| WatchItem::Event(EventType::Added, o)));
                return Ok(pre.chain(rest).boxed());
            }
            Err(WatchFromError::NotReady) => return Err(ApiError::service_unavailable("watch cache is not ready")),
        };
        let bookmarks = opts.allow_bookmarks;
        let stream = async_stream(cache, prefix, pre, cw, filter, from, bookmarks, initial_end);
        Ok(stream)
    }

    async fn etcd_watch(
        &self,
        prefix: String,
        rv: i64,
        filter: Arc<impl Fn(&Value) -> bool + Send + Sync + 'static>,
    ) -> BoxStream<'static, WatchItem> {
        let etcd = self.etcd.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<WatchItem>(256);
        tokio::spawn(async move {
            let mut stream = match etcd.watch(&prefix, rv + 1, true).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(WatchItem::Error(storage_err(e))).await;
                    return;
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = stream.message() => m,
                };
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(WatchItem::Error(storage_err(e.into()))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 || resp.canceled() {
                    let _ = tx
                        .send(WatchItem::Error(ApiError::too_old_resource_version(rv, resp.compact_revision())))
                        .await;
                    return;
                }
                for ev in resp.events() {
                    let Some(Ok(we)) = crate::storage::cache::convert_event(&etcd, ev, None) else { continue };
                    if let Some(item) = classify(&we, filter.as_ref()) {
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }
}

/// Maps an event through a selector as upstream does: an update that moves an object out of
/// the selection is a DELETED, into it an ADDED.
fn classify(ev: &WatchEvent, filter: &(impl Fn(&Value) -> bool + ?Sized)) -> Option<WatchItem> {
    let cur = filter(&ev.object);
    match ev.kind {
        EventType::Deleted => cur.then(|| WatchItem::Event(EventType::Deleted, ev.object.clone())),
        EventType::Added => cur.then(|| WatchItem::Event(EventType::Added, ev.object.clone())),
        EventType::Modified => {
            let prev = ev.prev.as_ref().is_some_and(|p| filter(p));
            match (prev, cur) {
                (true, true) => Some(WatchItem::Event(EventType::Modified, ev.object.clone())),
                (false, true) => Some(WatchItem::Event(EventType::Added, ev.object.clone())),
                (true, false) => Some(WatchItem::Event(EventType::Deleted, ev.object.clone())),
                (false, false) => None,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn async_stream(
    cache: Arc<Cacher>,
    prefix: String,
    pre: Vec<Arc<Obj>>,
    cw: crate::storage::cache::CacheWatch,
    filter: Arc<impl Fn(&Value) -> bool + Send + Sync + 'static>,
    from: Option<i64>,
    bookmarks: bool,
    initial_end: bool,
) -> BoxStream<'static, WatchItem> {
    let (tx, rx) = tokio::sync::mpsc::channel::<WatchItem>(1024);
    tokio::spawn(async move {
        let mut last = from.unwrap_or(0).max(0);
        let initial_rev = cw.rev;
        for o in pre {
            if tx.send(WatchItem::Event(EventType::Added, o)).await.is_err() {
                return;
            }
        }
        for ev in &cw.initial {
            if let Some(item) = classify(ev, filter.as_ref()) {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            last = last.max(ev.rev);
        }
        if from.is_none() {
            last = last.max(initial_rev);
        }
        if initial_end && tx.send(WatchItem::Bookmark { rev: last, initial_end: true }).await.is_err() {
            return;
        }
        let mut rx = cw.rx;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    let rev = cache.revision().max(last);
                    if tx.send(WatchItem::Bookmark { rev, initial_end: false }).await.is_err() {
                        return;
                    }
                }
                msg = rx.recv() => match msg {
                    Ok(CacheMsg::Event(ev)) => {
                        if ev.rev <= last || !ev.key.starts_with(&prefix) {
                            continue;
                        }
                        last = ev.rev;
                        if let Some(item) = classify(&ev, filter.as_ref()) {
                            if tx.send(item).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(CacheMsg::Reset) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind the broadcast: resume from the cache window, or end the
                        // watch so the client re-lists.
                        match cache.catch_up(&prefix, last) {
                            Ok(cw) => {
                                for ev in &cw.initial {
                                    if ev.rev <= last {
                                        continue;
                                    }
                                    last = ev.rev;
                                    if let Some(item) = classify(ev, filter.as_ref()) {
                                        if tx.send(item).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                rx = cw.rx;
                            }
                            Err(_) => return,
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// The stored bytes: the object without its resourceVersion.
fn strip_rv(o: &Value) -> Vec<u8> {
    if o.get("metadata").and_then(|m| m.get("resourceVersion")).is_none() {
        // A create's object has none: no copy needed.
        return serde_json::to_vec(o).expect("a serde_json::Value always serializes");
    }
    let mut c = o.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&c).expect("a serde_json::Value always serializes")
}
