//! The scheduler's cache (upstream `internal/cache`): every node with the pods bound or
//! assumed on it. A pod is *assumed* the moment the scheduler picks its node, before the
//! binding is written, so the next pod already sees the node's resources taken — a burst
//! can never overcommit a node. The informer's copy of the bound pod later confirms the
//! assumption; a failed binding forgets it.
//!
//! The snapshot is what a scheduling cycle reads: it shares each node's `Arc<NodeInfo>` with
//! the cache and only nodes changed since the last cycle are swapped in (the cache copies a
//! node on write while the snapshot still holds it), so taking a snapshot costs the changes,
//! not the cluster size.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::types::{NodeInfo, PodInfo};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("pod {0} is already in the cache")]
    AlreadyPresent(String),
}

#[derive(Debug)]
struct PodState {
    node: String,
    assumed: bool,
}

#[derive(Debug, Default)]
pub struct Cache {
    nodes: HashMap<String, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    dirty: HashSet<String>,
    generation: u64,
    image_nodes: Arc<HashMap<String, usize>>,
    /// upstream's nominator: pending pods that preemption placed on a node (by uid), so
    /// lower-priority pods do not take the room their victims free.
    nominations: HashMap<String, (String, Arc<PodInfo>)>,
    nominated: Arc<HashMap<String, Vec<Arc<PodInfo>>>>,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        self.generation += 1;
        let g = self.generation;
        self.dirty.insert(name.to_string());
        let ni = Arc::make_mut(self.nodes.entry(name.to_string()).or_insert_with(|| Arc::new(NodeInfo::new(name))));
        ni.generation = g;
        ni
    }

    fn count_images(&mut self, ni_images: &HashMap<String, i64>, delta: isize) {
        if ni_images.is_empty() {
            return;
        }
        let m = Arc::make_mut(&mut self.image_nodes);
        for name in ni_images.keys() {
            let e = m.entry(name.clone()).or_default();
            *e = e.saturating_add_signed(delta);
            if *e == 0 {
                m.remove(name);
            }
        }
    }

    /// Adds or replaces a node. Returns true when something a plugin looks at changed
    /// (labels, taints, allocatable, unschedulable, images), i.e. when pods that did not fit
    /// before are worth another try.
    pub fn upsert_node(&mut self, node: Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let changed = match self.nodes.get(&name).and_then(|n| n.node.as_ref()) {
            None => true,
            Some(old) => {
                old.metadata.labels != node.metadata.labels
                    || old.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
                        != node.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
                    || old.status.as_ref().map(|s| (&s.allocatable, &s.images))
                        != node.status.as_ref().map(|s| (&s.allocatable, &s.images))
            }
        };
        if !changed {
            // Heartbeats and conditions: keep the object current without churning the snapshot.
            if let Some(ni) = self.nodes.get_mut(&name) {
                let mut node = node;
                node.metadata.managed_fields = None;
                Arc::make_mut(ni).node = Some(Arc::new(node));
            }
            return false;
        }
        let old_images = self.nodes.get(&name).map(|n| n.images.clone()).unwrap_or_default();
        self.count_images(&old_images, -1);
        let ni = self.node_mut(&name);
        ni.set_node(node);
        let new_images = ni.images.clone();
        self.count_images(&new_images, 1);
        true
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(ni) = self.nodes.get(name) else { return };
        let (images, empty) = (ni.images.clone(), ni.pods.is_empty());
        self.count_images(&images, -1);
        self.generation += 1;
        self.dirty.insert(name.to_string());
        if empty {
            self.nodes.remove(name);
        } else {
            // upstream: pods of a deleted node stay counted until they are deleted too.
            let ni = Arc::make_mut(self.nodes.get_mut(name).expect("present: checked above"));
            ni.node = None;
            ni.images.clear();
        }
    }

    fn remove_from_node(&mut self, uid: &str, node: &str) {
        let ni = self.node_mut(node);
        ni.remove_pod(uid);
        if ni.node.is_none() && ni.pods.is_empty() {
            self.nodes.remove(node);
        }
    }

    /// Assumes `pod` runs on `node` until the binding is confirmed or forgotten.
    pub fn assume_pod(&mut self, pod: Arc<PodInfo>, node: &str) -> Result<(), CacheError> {
        if self.pods.contains_key(&pod.uid) {
            return Err(CacheError::AlreadyPresent(pod.key()));
        }
        self.pods.insert(pod.uid.clone(), PodState { node: node.to_string(), assumed: true });
        self.node_mut(node).add_pod(pod);
        Ok(())
    }

    /// Undoes an assumption after a failed binding. Confirmed pods are left alone.
    pub fn forget_pod(&mut self, uid: &str) {
        if let Some(st) = self.pods.get(uid).filter(|s| s.assumed) {
            let node = st.node.clone();
            self.pods.remove(uid);
            self.remove_from_node(uid, &node);
        }
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|s| s.assumed)
    }

    /// A pod the informer reports bound to `node` (added or updated): confirms an assumed
    /// pod, moves it if it was bound elsewhere, replaces the cached copy otherwise.
    pub fn upsert_pod(&mut self, pod: Arc<PodInfo>, node: &str) {
        if let Some(st) = self.pods.remove(&pod.uid) {
            let old = st.node;
            self.remove_from_node(&pod.uid, &old);
        }
        self.pods.insert(pod.uid.clone(), PodState { node: node.to_string(), assumed: false });
        self.node_mut(node).add_pod(pod);
    }

    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(st) = self.pods.remove(uid) {
            self.remove_from_node(uid, &st.node);
        }
    }

    /// Confirmed (informer-reported) pods, for dropping the ones a re-list no longer shows.
    pub fn confirmed_pod_uids(&self) -> Vec<String> {
        self.pods.iter().filter(|(_, s)| !s.assumed).map(|(u, _)| u.clone()).collect()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.node.is_some()).map(|(k, _)| k.clone()).collect()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).map(|n| &**n)
    }

    /// Records (or, with `None`, clears) a pending pod's nominated node.
    pub fn nominate(&mut self, pod: Arc<PodInfo>, node: Option<&str>) {
        let changed = match (self.nominations.get(&pod.uid), node) {
            (None, None) => false,
            (Some((old, _)), Some(new)) if old == new => {
                // Same node: keep the newer copy of the pod (its priority or requests may have changed).
                self.nominations.insert(pod.uid.clone(), (new.to_string(), pod));
                true
            }
            _ => {
                match node {
                    Some(n) => self.nominations.insert(pod.uid.clone(), (n.to_string(), pod)),
                    None => self.nominations.remove(&pod.uid),
                };
                true
            }
        };
        if changed {
            let mut by_node: HashMap<String, Vec<Arc<PodInfo>>> = HashMap::new();
            for (node, p) in self.nominations.values() {
                by_node.entry(node.clone()).or_default().push(p.clone());
            }
            self.nominated = Arc::new(by_node);
        }
    }

    pub fn nominated_node(&self, uid: &str) -> Option<String> {
        self.nominations.get(uid).map(|(n, _)| n.clone())
    }

    /// Drops a nomination (the pod was bound or deleted).
    pub fn clear_nomination(&mut self, uid: &str) {
        if let Some((_, p)) = self.nominations.get(uid) {
            let p = p.clone();
            self.nominate(p, None);
        }
    }

    /// Brings `snap` up to date with the nodes changed since its last update.
    pub fn update_snapshot(&mut self, snap: &mut Snapshot) {
        for name in self.dirty.drain() {
            match self.nodes.get(&name).filter(|n| n.node.is_some()) {
                Some(ni) => match snap.index.get(&name) {
                    Some(&i) => snap.nodes[i] = ni.clone(),
                    None => {
                        snap.index.insert(name, snap.nodes.len());
                        snap.nodes.push(ni.clone());
                    }
                },
                None => {
                    if let Some(i) = snap.index.remove(&name) {
                        snap.nodes.swap_remove(i);
                        if let Some(moved) = snap.nodes.get(i) {
                            snap.index.insert(moved.name.clone(), i);
                        }
                    }
                }
            }
        }
        if !Arc::ptr_eq(&snap.image_nodes, &self.image_nodes) {
            snap.image_nodes = self.image_nodes.clone();
        }
        if !Arc::ptr_eq(&snap.nominated, &self.nominated) {
            snap.nominated = self.nominated.clone();
        }
    }
}

/// The nodes as one scheduling cycle sees them.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    /// How many nodes have each image (ImageLocality scales by this spread).
    pub image_nodes: Arc<HashMap<String, usize>>,
    /// Pending pods nominated to each node by preemption.
    pub nominated: Arc<HashMap<String, Vec<Arc<PodInfo>>>>,
}

impl Snapshot {
    /// A snapshot of exactly these nodes (tests and preemption's what-ifs).
    pub fn from_nodes(nodes: Vec<NodeInfo>) -> Self {
        let mut s = Snapshot::default();
        let mut images: HashMap<String, usize> = HashMap::new();
        for n in nodes {
            for img in n.images.keys() {
                *images.entry(img.clone()).or_default() += 1;
            }
            s.index.insert(n.name.clone(), s.nodes.len());
            s.nodes.push(Arc::new(n));
        }
        s.image_nodes = Arc::new(images);
        s
    }

    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &*self.nodes[i])
    }

    pub fn nominated_to(&self, node: &str) -> &[Arc<PodInfo>] {
        self.nominated.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::types::PodInfo;
    use crate::testutil::{node, pod};

    #[test]
    fn assumed_pod_counts_on_its_node_until_forgotten() {
        let mut c = Cache::new();
        c.upsert_node(node("n1", "4", "8Gi"));
        let p = Arc::new(PodInfo::new(pod("p", "1", "1Gi")));
        c.assume_pod(p.clone(), "n1").expect("not yet cached");
        assert_eq!(c.node("n1").expect("node").requested.milli_cpu, 1000);
        assert!(c.assume_pod(p.clone(), "n1").is_err(), "a pod is assumed once");
        c.forget_pod(&p.uid);
        assert_eq!(c.node("n1").expect("node").requested.milli_cpu, 0);
    }

    #[test]
    fn informer_confirms_an_assumed_pod_without_counting_it_twice() {
        let mut c = Cache::new();
        c.upsert_node(node("n1", "4", "8Gi"));
        let p = Arc::new(PodInfo::new(pod("p", "1", "1Gi")));
        c.assume_pod(p.clone(), "n1").expect("not yet cached");
        c.upsert_pod(p.clone(), "n1");
        assert!(!c.is_assumed(&p.uid));
        assert_eq!(c.node("n1").expect("node").requested.milli_cpu, 1000);
        c.forget_pod(&p.uid);
        assert_eq!(c.node("n1").expect("node").pods.len(), 1, "a confirmed pod is not forgotten");
        c.remove_pod(&p.uid);
        assert_eq!(c.node("n1").expect("node").pods.len(), 0);
    }

    #[test]
    fn snapshot_takes_only_changed_nodes_and_drops_removed_ones() {
        let mut c = Cache::new();
        let mut s = Snapshot::default();
        c.upsert_node(node("n1", "4", "8Gi"));
        c.upsert_node(node("n2", "4", "8Gi"));
        c.update_snapshot(&mut s);
        assert_eq!(s.len(), 2);
        let n2_before = s.nodes[s.index["n2"]].clone();
        c.assume_pod(Arc::new(PodInfo::new(pod("p", "1", "1Gi"))), "n1").expect("fresh");
        c.update_snapshot(&mut s);
        assert_eq!(s.get("n1").expect("n1").requested.milli_cpu, 1000);
        assert!(Arc::ptr_eq(&n2_before, &s.nodes[s.index["n2"]]), "an unchanged node is shared, not copied");
        assert_eq!(n2_before.requested.milli_cpu, 0);
        c.remove_node("n2");
        c.update_snapshot(&mut s);
        assert_eq!(s.len(), 1);
        assert!(s.get("n2").is_none());
    }

    #[test]
    fn heartbeat_only_node_update_is_not_a_relevant_change() {
        let mut c = Cache::new();
        assert!(c.upsert_node(node("n1", "4", "8Gi")));
        let mut n = node("n1", "4", "8Gi");
        n.metadata.resource_version = Some("2".into());
        assert!(!c.upsert_node(n));
        assert!(c.upsert_node(node("n1", "8", "8Gi")));
    }
}
