//! The pure half of the collector: given every object's ownership facts, what to do.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};

use super::{FOREGROUND, ORPHAN};

#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub uid: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub block: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Index of the object's resource in the caller's list.
    pub res: usize,
    pub uid: String,
    pub name: String,
    pub namespace: Option<String>,
    pub resource_version: String,
    pub deleting: bool,
    pub finalizers: Vec<String>,
    pub owners: Vec<Owner>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Delete a dependent of an owner under foreground deletion; `foreground` when the
    /// dependent has dependents of its own, so the whole chain goes before the owner
    /// (upstream's attemptToDeleteItem does the same).
    Delete {
        node: Node,
        foreground: bool,
    },
    /// Delete a dependent whose owners all look gone (the caller confirms against the API).
    DeleteIfOwnersGone {
        node: Node,
    },
    RemoveFinalizer {
        node: Node,
        finalizer: String,
    },
    RemoveOwner {
        node: Node,
        owner_uid: String,
    },
}

/// upstream's garbage collector decisions over one snapshot of the graph (owned nodes, or
/// the collector's shared `Arc<Node>`s).
pub fn plan<N: Borrow<Node>>(nodes: &[N]) -> Vec<Action> {
    let nodes: Vec<&Node> = nodes.iter().map(Borrow::borrow).collect();
    let uids: HashSet<&str> = nodes.iter().map(|n| n.uid.as_str()).collect();
    let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
    for &n in &nodes {
        for o in &n.owners {
            dependents.entry(o.uid.as_str()).or_default().push(n);
        }
    }
    let mut out = Vec::new();
    for &n in &nodes {
        let deps = dependents.get(n.uid.as_str()).cloned().unwrap_or_default();
        if n.deleting && n.finalizers.iter().any(|f| f == ORPHAN) {
            for d in &deps {
                out.push(Action::RemoveOwner { node: (*d).clone(), owner_uid: n.uid.clone() });
            }
            if deps.is_empty() {
                out.push(Action::RemoveFinalizer { node: n.clone(), finalizer: ORPHAN.into() });
            }
            continue;
        }
        if n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND) {
            for d in deps.iter().filter(|d| !d.deleting) {
                let foreground = dependents.get(d.uid.as_str()).is_some_and(|v| !v.is_empty());
                out.push(Action::Delete { node: (*d).clone(), foreground });
            }
            let blocking = deps.iter().any(|d| d.owners.iter().any(|o| o.uid == n.uid && o.block));
            if !blocking {
                out.push(Action::RemoveFinalizer { node: n.clone(), finalizer: FOREGROUND.into() });
            }
        }
        if !n.owners.is_empty() && !n.deleting && n.owners.iter().all(|o| !uids.contains(o.uid.as_str())) {
            out.push(Action::DeleteIfOwnersGone { node: n.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, owners: &[(&str, bool)], deleting: bool, finalizers: &[&str]) -> Node {
        Node {
            res: 0,
            uid: uid.into(),
            name: uid.into(),
            namespace: Some("default".into()),
            resource_version: "1".into(),
            deleting,
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
            owners: owners
                .iter()
                .map(|(u, block)| Owner {
                    uid: u.to_string(),
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: u.to_string(),
                    block: *block,
                })
                .collect(),
        }
    }

    #[test]
    fn foreground_deletes_dependents_and_waits_for_blocking_ones() {
        let owner = node("rs", &[], true, &[FOREGROUND]);
        let pod = node("pod", &[("rs", true)], false, &[]);
        let actions = plan(&[owner.clone(), pod.clone()]);
        assert_eq!(actions, vec![Action::Delete { node: pod, foreground: false }]);
    }

    #[test]
    fn a_dependent_with_dependents_of_its_own_is_deleted_in_the_foreground_too() {
        let deploy = node("deploy", &[], true, &[FOREGROUND]);
        let rs = node("rs", &[("deploy", true)], false, &[]);
        let pod = node("pod", &[("rs", true)], false, &[]);
        let actions = plan(&[deploy, rs.clone(), pod]);
        assert_eq!(actions, vec![Action::Delete { node: rs, foreground: true }]);
    }

    #[test]
    fn foreground_finalizer_goes_once_no_blocking_dependent_remains() {
        let owner = node("rs", &[], true, &[FOREGROUND]);
        let nonblocking = node("pod", &[("rs", false)], true, &[]);
        let actions = plan(&[owner.clone(), nonblocking]);
        assert_eq!(actions, vec![Action::RemoveFinalizer { node: owner, finalizer: FOREGROUND.into() }]);
    }

    #[test]
    fn orphan_removes_references_then_the_finalizer() {
        let owner = node("rs", &[], true, &[ORPHAN]);
        let pod = node("pod", &[("rs", true)], false, &[]);
        assert_eq!(
            plan(&[owner.clone(), pod.clone()]),
            vec![Action::RemoveOwner { node: pod, owner_uid: "rs".into() }]
        );
        assert_eq!(
            plan(std::slice::from_ref(&owner)),
            vec![Action::RemoveFinalizer { node: owner, finalizer: ORPHAN.into() }]
        );
    }

    #[test]
    fn dangling_dependent_is_deleted_in_the_background() {
        let pod = node("pod", &[("gone", true)], false, &[]);
        assert_eq!(plan(std::slice::from_ref(&pod)), vec![Action::DeleteIfOwnersGone { node: pod }]);
    }

    #[test]
    fn dependent_with_one_live_owner_stays() {
        let owner = node("rs", &[], false, &[]);
        let pod = node("pod", &[("gone", false), ("rs", false)], false, &[]);
        assert!(plan(&[owner, pod]).is_empty());
    }
}
