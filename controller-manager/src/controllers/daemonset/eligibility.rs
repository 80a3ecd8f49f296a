//! Which nodes a DaemonSet's pod belongs on, as upstream's `NodeShouldRunDaemonPod`: the pod
//! the controller would create (template plus the daemon tolerations) must fit the node by
//! `nodeName`, `nodeSelector`, required node affinity and taints. A pod that no longer fits
//! may keep running unless a NoExecute taint it does not tolerate says otherwise. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint,
    Toleration,
};

/// upstream `metav1.ObjectNameField`, the only field a node selector term may name.
pub const OBJECT_NAME_FIELD: &str = "metadata.name";

/// What a node means for a DaemonSet (upstream's two booleans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// A daemon pod should be created on the node.
    pub should_run: bool,
    /// A daemon pod already there may stay.
    pub should_continue_running: bool,
}

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// upstream `util.AddOrUpdateDaemonPodTolerations`: a daemon pod stays through not-ready and
/// unreachable, and is placed on nodes under pressure or cordoned (and, with hostNetwork, on
/// nodes whose network is not set up yet). Existing tolerations with the same key and effect
/// are replaced, so the daemon's own `tolerationSeconds` cannot shorten its stay.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(exists("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for w in wanted {
        // upstream AddOrUpdateTolerationInPodSpec: same key, operator, value and effect is the
        // same toleration and is overwritten; anything else is kept.
        if let Some(t) = tolerations
            .iter_mut()
            .find(|t| t.key == w.key && t.effect == w.effect && t.operator.as_deref().unwrap_or("Equal") == "Exists")
        {
            *t = w;
        } else {
            tolerations.push(w);
        }
    }
}

/// upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// upstream `FindMatchingUntoleratedTaint` over the taints `filter` keeps.
fn has_untolerated(taints: &[Taint], tolerations: &[Toleration], filter: impl Fn(&Taint) -> bool) -> bool {
    taints.iter().filter(|t| filter(t)).any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // upstream: Gt/Lt need exactly one integer value and an integer label.
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else { return false };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else { return false };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// One node selector term: every expression and every field holds; an empty term matches
/// nothing (upstream `nodeaffinity`).
fn term_matches(t: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == OBJECT_NAME_FIELD && requirement_matches(r, Some(node_name)))
}

/// upstream `RequiredNodeAffinity.Match`: `nodeSelector` and the required node affinity terms
/// (ORed) both hold.
pub fn node_affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if let Some(sel) = spec.node_selector.as_ref() {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
    {
        Some(req) => req.node_selector_terms.iter().any(|t| term_matches(t, labels, name)),
        None => true,
    }
}

/// upstream `NodeShouldRunDaemonPod`. `spec` is the template's pod spec with the daemon
/// tolerations already added (see [`add_daemon_tolerations`]).
pub fn node_should_run(spec: &PodSpec, node: &Node) -> Fit {
    let no = Fit { should_run: false, should_continue_running: false };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != name) {
        return no;
    }
    if !node_affinity_matches(spec, node) {
        return no;
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    if has_untolerated(taints, tolerations, |t| t.effect == "NoSchedule" || t.effect == "NoExecute") {
        return Fit {
            should_run: false,
            should_continue_running: !has_untolerated(taints, tolerations, |t| t.effect == "NoExecute"),
        };
    }
    Fit { should_run: true, should_continue_running: true }
}

/// upstream `util.ReplaceDaemonSetPodNodeNameNodeAffinity`: the pod may only be scheduled to
/// `node`. The required terms are replaced outright: the controller has already checked the
/// template's own terms against this node.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: OBJECT_NAME_FIELD.into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    };
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(selector);
    a
}

/// upstream `util.GetTargetNodeName`: the node a daemon pod is on, or is pinned to while
/// it waits for the scheduler.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        match (r.key.as_str(), r.operator.as_str(), r.values.as_deref()) {
            (OBJECT_NAME_FIELD, "In", Some([v])) => Some(v.clone()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
            .expect("node")
    }

    fn daemon(spec: serde_json::Value) -> PodSpec {
        let mut s: PodSpec = serde_json::from_value(spec).expect("spec");
        add_daemon_tolerations(&mut s);
        s
    }

    const RUN: Fit = Fit { should_run: true, should_continue_running: true };
    const STAY: Fit = Fit { should_run: false, should_continue_running: true };
    const NO: Fit = Fit { should_run: false, should_continue_running: false };

    #[test]
    fn node_selector_and_required_affinity_pick_nodes() {
        let spec = daemon(json!({"containers": [], "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]}]}}}}));
        assert_eq!(node_should_run(&spec, &node("n1", json!({"disk": "ssd", "zone": "a"}), json!([]))), RUN);
        assert_eq!(node_should_run(&spec, &node("n2", json!({"disk": "hdd", "zone": "a"}), json!([]))), NO);
        assert_eq!(node_should_run(&spec, &node("n3", json!({"disk": "ssd", "zone": "c"}), json!([]))), NO);
        assert_eq!(node_should_run(&spec, &node("special", json!({"disk": "ssd"}), json!([]))), RUN);
    }

    #[test]
    fn gt_lt_and_not_in_read_labels_as_upstream() {
        let spec = daemon(json!({"containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]},
                                      {"key": "gpu", "operator": "NotIn", "values": ["none"]}]}]}}}}));
        assert_eq!(node_should_run(&spec, &node("a", json!({"cores": "8"}), json!([]))), RUN);
        assert_eq!(node_should_run(&spec, &node("b", json!({"cores": "4"}), json!([]))), NO);
        assert_eq!(node_should_run(&spec, &node("c", json!({"cores": "eight"}), json!([]))), NO);
        assert_eq!(node_should_run(&spec, &node("d", json!({"cores": "8", "gpu": "none"}), json!([]))), NO);
    }

    #[test]
    fn template_node_name_restricts_to_that_node() {
        let spec = daemon(json!({"containers": [], "nodeName": "n1"}));
        assert_eq!(node_should_run(&spec, &node("n1", json!({}), json!([]))), RUN);
        assert_eq!(node_should_run(&spec, &node("n2", json!({}), json!([]))), NO);
    }

    #[test]
    fn daemon_tolerations_cover_condition_taints_and_cordon() {
        let spec = daemon(json!({"containers": []}));
        for (key, effect) in [
            ("node.kubernetes.io/not-ready", "NoExecute"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ] {
            let n = node("n", json!({}), json!([{"key": key, "effect": effect}]));
            assert_eq!(node_should_run(&spec, &n), RUN, "{key}:{effect}");
        }
        let unavailable =
            node("n", json!({}), json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]));
        assert_eq!(node_should_run(&spec, &unavailable), STAY, "only hostNetwork daemons tolerate it");
        let host = daemon(json!({"containers": [], "hostNetwork": true}));
        assert_eq!(node_should_run(&host, &unavailable), RUN);
    }

    #[test]
    fn untolerated_no_schedule_keeps_running_pods_no_execute_evicts_them() {
        let spec = daemon(json!({"containers": [],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}));
        let ns = |v: &str| node("n", json!({}), json!([{"key": "dedicated", "value": v, "effect": "NoSchedule"}]));
        assert_eq!(node_should_run(&spec, &ns("infra")), RUN);
        assert_eq!(node_should_run(&spec, &ns("gpu")), STAY);
        let ne = node("n", json!({}), json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]));
        assert_eq!(node_should_run(&spec, &ne), NO);
        let prefer = node("n", json!({}), json!([{"key": "x", "effect": "PreferNoSchedule"}]));
        assert_eq!(node_should_run(&spec, &prefer), RUN, "PreferNoSchedule does not keep daemons off");
        let cp =
            node("n", json!({}), json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]));
        let tolerant = daemon(json!({"containers": [],
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(node_should_run(&tolerant, &cp), RUN);
        let all = daemon(json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert_eq!(node_should_run(&all, &ne), RUN, "an empty key with Exists tolerates everything");
    }

    #[test]
    fn daemon_tolerations_replace_a_shorter_stay() {
        let spec = daemon(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}));
        let ts = spec.tolerations.expect("tolerations");
        let nr: Vec<_> = ts.iter().filter(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")).collect();
        assert_eq!(nr.len(), 1);
        assert_eq!(nr[0].toleration_seconds, None);
        assert_eq!(ts.len(), 6);
    }

    #[test]
    fn pinning_replaces_required_terms_and_keeps_the_rest() {
        let a: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {
                "matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}]},
            "podAntiAffinity": {}}))
        .expect("affinity");
        let pinned = pin_to_node(Some(a), "n7");
        let v = serde_json::to_value(&pinned).expect("json");
        assert_eq!(
            v["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]})
        );
        assert!(v["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
        assert!(v["podAntiAffinity"].is_object());
        let pod = Pod { spec: Some(PodSpec { affinity: Some(pinned), ..Default::default() }), ..Default::default() };
        assert_eq!(target_node(&pod).as_deref(), Some("n7"));
    }
}
