//! ControllerRevision history, as upstream's `pkg/controller/history`, shared by the
//! StatefulSet and DaemonSet controllers: a revision is an immutable snapshot (`data`, usually
//! the owner's pod template as a strategic-merge patch) with a `revision` number; its name is
//! `<owner>-<hash of data>`, the hash also in the `controller.kubernetes.io/hash` label.
//!
//! The pure half (hashing, naming, equality, sorting, what to prune) compares values; the API
//! half (`create` with the collision-count bump, `update_revision`, `delete`) goes through
//! [`RevisionApi`], so its retry logic is tested against a recording fake.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::Resource;
use serde_json::{json, Map, Value};

use super::deployment::util::safe_encode;
use super::owner::{controller_of, controller_ref, labels_match};
use apimachinery::labels::Selector;

/// upstream: ControllerRevisionHashLabel
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// upstream: names are at most 253 bytes, so the prefix is cut at 223.
const MAX_PREFIX: usize = 223;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// FNV-1 (32 bit), the hash upstream's `HashControllerRevision` uses (`fnv.New32`, not 32a).
fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |h, b| h.wrapping_mul(16_777_619) ^ u32::from(*b))
}

/// `v` with every object's keys sorted, so equal data always serialises to the same bytes
/// (serde_json keeps insertion order in this workspace, and the apiserver may reorder keys).
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect::<Map<_, _>>())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        v => v.clone(),
    }
}

/// upstream `HashControllerRevision`: FNV-1 over the data's bytes (here its canonical JSON),
/// then the collision count's decimal digits when there is one, rendered in the safe alphabet.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&canonical(data)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(&fnv32(&bytes).to_string())
}

/// upstream `ControllerRevisionName`: `<prefix>-<hash>`, the prefix cut to 223 bytes.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let mut end = prefix.len().min(MAX_PREFIX);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}", &prefix[..end])
}

/// upstream `getPatch` (StatefulSet and DaemonSet alike): the revision data is a strategic
/// merge patch that replaces `spec.template` wholesale, which is what `kubectl rollout undo`
/// applies to roll back.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = canonical(&serde_json::to_value(template).unwrap_or(Value::Null));
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision's data (from [`template_patch`]) holds.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// upstream `NewControllerRevision`: owned (as controller) by `parent`, labelled with the
/// template's labels and the hash, named `<parent>-<hash>`.
pub fn new_revision<K: Resource<DynamicType = ()>>(
    parent: &K,
    template_labels: Option<&BTreeMap<String, String>>,
    data: Value,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let h = hash(&data, collision_count);
    let mut labels = template_labels.cloned().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), h.clone());
    let m = parent.meta();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(m.name.as_deref().unwrap_or_default(), &h)),
            namespace: m.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(parent)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

fn data_of(r: &ControllerRevision) -> Value {
    r.data.as_ref().map(|d| canonical(&d.0)).unwrap_or(Value::Null)
}

/// upstream `EqualRevision`, which in effect compares the data: it looks at the hash labels
/// only when both parse as integers, which safe-alphabet hashes (almost) never do.
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    data_of(a) == data_of(b)
}

/// upstream `FindEqualRevisions`.
pub fn find_equal(revisions: &[Arc<ControllerRevision>], needle: &ControllerRevision) -> Vec<Arc<ControllerRevision>> {
    revisions.iter().filter(|r| equal(r, needle)).cloned().collect()
}

fn by_revision(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    let created = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    a.revision
        .cmp(&b.revision)
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// upstream `SortControllerRevisions`: by revision, ties by creation time, then name.
pub fn sort(revisions: &mut [Arc<ControllerRevision>]) {
    revisions.sort_by(|a, b| by_revision(a, b));
}

/// upstream `nextRevision`: one more than the highest, 1 for none.
pub fn next_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// upstream `ListControllerRevisions`: the revisions `selector` matches that `parent_uid`
/// controls or that nobody controls (orphans the owner may adopt).
pub fn owned_or_orphan(
    parent_uid: &str,
    selector: &Selector,
    revisions: &[Arc<ControllerRevision>],
) -> Vec<Arc<ControllerRevision>> {
    revisions
        .iter()
        .filter(|r| labels_match(selector, &r.metadata))
        .filter(|r| controller_of(&r.metadata).is_none_or(|c| c.uid == parent_uid))
        .cloned()
        .collect()
}

/// upstream `truncateHistory`: of the revisions (sorted oldest first) that are not live
/// (`live`: the current and update revision and every pod's), the oldest beyond `limit`.
pub fn to_truncate(
    sorted: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> Vec<Arc<ControllerRevision>> {
    let history: Vec<_> =
        sorted.iter().filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default())).cloned().collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if history.len() <= limit {
        return Vec::new();
    }
    history[..history.len() - limit].to_vec()
}

/// What the history operations need from the API.
pub trait RevisionApi: Send + Sync {
    fn create(
        &self,
        rev: &ControllerRevision,
    ) -> impl std::future::Future<Output = Result<ControllerRevision, kube::Error>> + Send;
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl std::future::Future<Output = Result<ControllerRevision, kube::Error>> + Send;
    fn replace(
        &self,
        rev: &ControllerRevision,
    ) -> impl std::future::Future<Output = Result<ControllerRevision, kube::Error>> + Send;
    fn delete(&self, rev: &ControllerRevision) -> impl std::future::Future<Output = Result<(), kube::Error>> + Send;
}

/// [`RevisionApi`] against the apiserver.
#[derive(Clone)]
pub struct KubeRevisions(pub kube::Client);

impl KubeRevisions {
    fn api(&self, ns: &str) -> Api<ControllerRevision> {
        Api::namespaced(self.0.clone(), ns)
    }
}

impl RevisionApi for KubeRevisions {
    async fn create(&self, rev: &ControllerRevision) -> Result<ControllerRevision, kube::Error> {
        self.api(rev.metadata.namespace.as_deref().unwrap_or_default()).create(&PostParams::default(), rev).await
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<ControllerRevision, kube::Error> {
        self.api(namespace).get(name).await
    }

    async fn replace(&self, rev: &ControllerRevision) -> Result<ControllerRevision, kube::Error> {
        let name = rev.metadata.name.as_deref().unwrap_or_default();
        self.api(rev.metadata.namespace.as_deref().unwrap_or_default()).replace(name, &PostParams::default(), rev).await
    }

    async fn delete(&self, rev: &ControllerRevision) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: rev.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        let name = rev.metadata.name.as_deref().unwrap_or_default();
        match self.api(rev.metadata.namespace.as_deref().unwrap_or_default()).delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// upstream `CreateControllerRevision`: creates `rev` under the name its data and
/// `collision_count` hash to (prefix `parent_name`); when that name is taken by a revision
/// with the same data, that one is the answer; when taken by different data, the collision
/// count goes up by one and it tries again. The caller persists the count in its status.
pub async fn create<A: RevisionApi>(
    api: &A,
    parent_name: &str,
    rev: &ControllerRevision,
    collision_count: &mut i32,
) -> Result<ControllerRevision, Error> {
    let data = rev.data.as_ref().map(|d| d.0.clone()).unwrap_or(Value::Null);
    let ns = rev.metadata.namespace.clone().unwrap_or_default();
    loop {
        let h = hash(&data, Some(*collision_count));
        let mut clone = rev.clone();
        clone.metadata.name = Some(revision_name(parent_name, &h));
        clone.metadata.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), h);
        match api.create(&clone).await {
            Ok(created) => return Ok(created),
            Err(e) if already_exists(&e) => {
                let exists = api.get(&ns, clone.metadata.name.as_deref().unwrap_or_default()).await?;
                if data_of(&exists) == canonical(&data) {
                    return Ok(exists);
                }
                *collision_count = collision_count.saturating_add(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// upstream `UpdateControllerRevision`: gives `rev` the revision number `revision` (a
/// rollback makes an old revision the newest), re-reading on conflicts.
pub async fn update_revision<A: RevisionApi>(
    api: &A,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision, Error> {
    let mut clone = rev.clone();
    for _ in 0..5 {
        if clone.revision == revision {
            return Ok(clone);
        }
        clone.revision = revision;
        match api.replace(&clone).await {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let ns = rev.metadata.namespace.as_deref().unwrap_or_default();
                clone = api.get(ns, rev.metadata.name.as_deref().unwrap_or_default()).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    clone.revision = revision;
    Ok(api.replace(&clone).await?)
}

/// Deletes `revs` (from [`to_truncate`]), stopping at the first failure.
pub async fn delete_all<A: RevisionApi>(api: &A, revs: &[Arc<ControllerRevision>]) -> Result<(), Error> {
    for r in revs {
        api.delete(r).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::sync::Mutex;

    fn rev(name: &str, revision: i64, data: Value) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() },
            data: Some(RawExtension(data)),
            revision,
        })
    }

    fn names(v: &[Arc<ControllerRevision>]) -> Vec<&str> {
        v.iter().map(|r| r.metadata.name.as_deref().unwrap_or_default()).collect()
    }

    #[test]
    fn fnv32_matches_the_reference_vectors() {
        // FNV-1 (not 1a) test vectors.
        assert_eq!(fnv32(b""), 0x811c9dc5);
        assert_eq!(fnv32(b"a"), 0x050c5d7e);
        assert_eq!(fnv32(b"foobar"), 0x31f0b262);
    }

    #[test]
    fn hash_ignores_key_order_and_changes_with_data_and_collision_count() {
        let a = json!({"spec": {"template": {"a": 1, "b": [{"y": 1, "x": 2}]}}});
        let b: Value = serde_json::from_str(r#"{"spec":{"template":{"b":[{"x":2,"y":1}],"a":1}}}"#).expect("json");
        assert_eq!(hash(&a, None), hash(&b, None));
        assert_ne!(hash(&a, None), hash(&json!({"spec": {"template": {"a": 2}}}), None));
        assert_ne!(hash(&a, None), hash(&a, Some(1)));
        assert_ne!(hash(&a, Some(1)), hash(&a, Some(2)));
        assert!(hash(&a, None).bytes().all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)));
    }

    #[test]
    fn names_are_owner_dash_hash_with_the_prefix_cut_at_223() {
        assert_eq!(revision_name("web", "7b9c"), "web-7b9c");
        let long = "a".repeat(300);
        assert_eq!(revision_name(&long, "h").len(), 223 + 2);
    }

    #[test]
    fn new_revision_is_controlled_by_the_owner_and_labelled_with_the_hash() {
        let set = StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let data = json!({"spec": {"template": {"$patch": "replace"}}});
        let r = new_revision(&set, Some(&labels), data.clone(), 3, None);
        let h = hash(&data, None);
        assert_eq!(r.metadata.name, Some(format!("web-{h}")));
        assert_eq!(r.metadata.namespace.as_deref(), Some("ns"));
        let l = r.metadata.labels.clone().expect("labels");
        assert_eq!((l["app"].as_str(), l[HASH_LABEL].as_str()), ("web", h.as_str()));
        let o = controller_of(&r.metadata).expect("controller");
        assert_eq!((o.kind.as_str(), o.uid.as_str(), o.api_version.as_str()), ("StatefulSet", "u1", "apps/v1"));
        assert_eq!(r.revision, 3);
    }

    #[test]
    fn template_patch_replaces_the_template_and_round_trips() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .expect("template");
        let p = template_patch(&t);
        assert_eq!(p["spec"]["template"]["$patch"], "replace");
        assert_eq!(p["spec"]["template"]["spec"]["containers"][0]["image"], "nginx");
        let r = rev("web-1", 1, p);
        assert_eq!(template_of(&r), Some(t));
    }

    #[test]
    fn equal_and_find_equal_compare_data() {
        let revs = vec![rev("a", 1, json!({"x": 1})), rev("b", 2, json!({"x": 2})), rev("c", 3, json!({"x": 1}))];
        assert_eq!(names(&find_equal(&revs, &rev("n", 0, json!({"x": 1})))), ["a", "c"]);
        assert!(!equal(&revs[0], &revs[1]));
    }

    #[test]
    fn sort_by_revision_then_creation_then_name_and_next_revision() {
        let mut revs = vec![rev("c", 2, json!(1)), rev("b", 1, json!(2)), rev("a", 2, json!(3))];
        sort(&mut revs);
        assert_eq!(names(&revs), ["b", "a", "c"]);
        assert_eq!(next_revision(&revs), 3);
        assert_eq!(next_revision(&[]), 1);
    }

    #[test]
    fn list_keeps_owned_and_orphans_that_match() {
        let with = |name: &str, app: &str, owner: Option<&str>| {
            let mut r = (*rev(name, 1, json!(1))).clone();
            r.metadata.labels = Some([("app".to_string(), app.to_string())].into());
            r.metadata.owner_references =
                owner.map(|uid| vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]);
            Arc::new(r)
        };
        let revs = [
            with("mine", "web", Some("me")),
            with("orphan", "web", None),
            with("theirs", "web", Some("other")),
            with("other-app", "db", None),
        ];
        let sel = Selector::from_set([("app", "web")]);
        assert_eq!(names(&owned_or_orphan("me", &sel, &revs)), ["mine", "orphan"]);
    }

    #[test]
    fn truncate_deletes_the_oldest_non_live_beyond_the_limit() {
        let revs: Vec<_> = (1..=6).map(|i| rev(&format!("r{i}"), i, json!(i))).collect();
        let live: HashSet<String> = ["r1", "r5", "r6"].iter().map(|s| s.to_string()).collect();
        assert_eq!(names(&to_truncate(&revs, &live, 1)), ["r2", "r3"], "r1 is live: kept though oldest");
        assert!(to_truncate(&revs, &live, 3).is_empty());
        assert_eq!(names(&to_truncate(&revs, &live, 0)), ["r2", "r3", "r4"]);
    }

    /// An in-memory apiserver for revisions that records calls.
    #[derive(Default)]
    struct Fake {
        stored: Mutex<BTreeMap<String, ControllerRevision>>,
        calls: Mutex<Vec<String>>,
    }

    fn status(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: reason.into(),
            reason: reason.into(),
            ..Default::default()
        }))
    }

    impl RevisionApi for Fake {
        async fn create(&self, rev: &ControllerRevision) -> Result<ControllerRevision, kube::Error> {
            let name = rev.metadata.name.clone().unwrap_or_default();
            self.calls.lock().expect("lock").push(format!("create {name}"));
            let mut s = self.stored.lock().expect("lock");
            if s.contains_key(&name) {
                return Err(status(409, "AlreadyExists"));
            }
            s.insert(name, rev.clone());
            Ok(rev.clone())
        }
        async fn get(&self, _: &str, name: &str) -> Result<ControllerRevision, kube::Error> {
            self.calls.lock().expect("lock").push(format!("get {name}"));
            self.stored.lock().expect("lock").get(name).cloned().ok_or_else(|| status(404, "NotFound"))
        }
        async fn replace(&self, rev: &ControllerRevision) -> Result<ControllerRevision, kube::Error> {
            let name = rev.metadata.name.clone().unwrap_or_default();
            self.calls.lock().expect("lock").push(format!("replace {name} {}", rev.revision));
            self.stored.lock().expect("lock").insert(name, rev.clone());
            Ok(rev.clone())
        }
        async fn delete(&self, rev: &ControllerRevision) -> Result<(), kube::Error> {
            let name = rev.metadata.name.clone().unwrap_or_default();
            self.calls.lock().expect("lock").push(format!("delete {name}"));
            self.stored.lock().expect("lock").remove(&name);
            Ok(())
        }
    }

    #[tokio::test]
    async fn create_returns_an_equal_existing_revision_and_bumps_the_count_on_a_clash() {
        let fake = Fake::default();
        let data = json!({"v": 1});
        let r = (*rev("ignored", 1, data.clone())).clone();
        let mut cc = 0;
        let first = create(&fake, "web", &r, &mut cc).await.expect("create");
        let name0 = format!("web-{}", hash(&data, Some(0)));
        assert_eq!(first.metadata.name.as_deref(), Some(name0.as_str()));
        assert_eq!(first.metadata.labels.as_ref().expect("labels")[HASH_LABEL], hash(&data, Some(0)));
        // The same data again (a lagging informer): the stored one, no bump.
        let again = create(&fake, "web", &r, &mut cc).await.expect("create");
        assert_eq!((again.metadata.name, cc), (Some(name0.clone()), 0));
        // Someone else's data under the name our data hashes to: bump and use the next name.
        let other = json!({"v": 2});
        fake.stored.lock().expect("lock").insert(name0.clone(), (*rev(&name0, 1, other)).clone());
        let bumped = create(&fake, "web", &r, &mut cc).await.expect("create");
        assert_eq!(cc, 1);
        assert_eq!(bumped.metadata.name, Some(format!("web-{}", hash(&data, Some(1)))));
    }

    #[tokio::test]
    async fn update_revision_renumbers_only_when_needed_and_delete_all_deletes() {
        let fake = Fake::default();
        let r = rev("web-a", 1, json!(1));
        update_revision(&fake, &r, 1).await.expect("same");
        update_revision(&fake, &r, 4).await.expect("update");
        delete_all(&fake, std::slice::from_ref(&r)).await.expect("delete");
        assert_eq!(*fake.calls.lock().expect("lock"), ["replace web-a 4", "delete web-a"]);
    }
}
