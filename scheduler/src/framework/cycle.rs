//! One scheduling cycle for one pod, pure: PreFilter, Filter over (a rotating share of) the
//! snapshot's nodes, then PreScore, Score, NormalizeScore and weights over the feasible ones,
//! and the pick of the best node (ties at random). Upstream `schedulePod`,
//! `findNodesThatFitPod`, `prioritizeNodes` and `selectHost`. When no node fits, the
//! `FitError` carries the per-node verdicts that PostFilter (preemption) and the
//! FailedScheduling message need.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{Code, CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status};

/// upstream: below this many nodes every node is checked.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;
const BASE_PERCENTAGE_OF_NODES_TO_SCORE: usize = 50;

/// The enabled plugins, in registry order, with the score weights of the profile.
pub struct Framework {
    pub plugins: Vec<Box<dyn Plugin>>,
    /// Indices into `plugins` of the PreFilter/Filter plugins.
    pub filters: Vec<usize>,
    /// Indices into `plugins` of the Score plugins, with their weights.
    pub scorers: Vec<(usize, i64)>,
    /// upstream `percentageOfNodesToScore`; 0 = the adaptive default.
    pub percentage_of_nodes_to_score: usize,
}

/// upstream `numFeasibleNodesToFind`: all nodes up to 100; beyond, a percentage that shrinks
/// as the cluster grows (50 % minus 1 % per 125 nodes, at least 5 %), never fewer than 100.
pub fn num_feasible_nodes_to_find(percentage: usize, all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let mut pct = percentage;
    if pct == 0 {
        pct = BASE_PERCENTAGE_OF_NODES_TO_SCORE.saturating_sub(all / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    if pct >= 100 {
        return all;
    }
    (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Why no node fit (upstream `framework.Diagnosis`).
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// The rejection of every node that was checked and failed, by snapshot index.
    pub node_statuses: Vec<(usize, Status)>,
    /// A PreFilter rejection applies to every node at once.
    pub pre_filter: Option<Status>,
    /// Plugins that rejected the pod: cluster events involving them may help it.
    pub unschedulable_plugins: Vec<&'static str>,
    /// What PostFilter (preemption) had to say.
    pub post_filter_msg: Option<String>,
    /// Which filter plugins PreFilter skipped (preemption re-runs the filters).
    pub skip: Vec<bool>,
}

#[derive(Debug, Clone)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
}

impl fmt::Display for FitError {
    /// upstream `FitError.Error()`: "0/N nodes are available: <sorted reason histogram>."
    /// and then the PostFilter message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_all_nodes == 0 && self.diagnosis.pre_filter.is_none() {
            return write!(f, "no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        match &self.diagnosis.pre_filter {
            Some(st) => write!(f, " {}.", st.message())?,
            None => {
                let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
                for (_, st) in &self.diagnosis.node_statuses {
                    for r in &st.reasons {
                        *hist.entry(r.as_str()).or_default() += 1;
                    }
                }
                let mut parts: Vec<String> = hist.iter().map(|(r, n)| format!("{n} {r}")).collect();
                parts.sort();
                if !parts.is_empty() {
                    write!(f, " {}.", parts.join(", "))?;
                }
            }
        }
        if let Some(m) = &self.diagnosis.post_filter_msg {
            write!(f, " {m}.")?;
        }
        Ok(())
    }
}

/// Time spent in one plugin at one extension point during a (sampled) cycle.
#[derive(Debug, Clone)]
pub struct PluginTiming {
    pub plugin: &'static str,
    pub point: &'static str,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct ScheduleResult {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

impl Framework {
    /// Runs the Filter plugins on one node; the first rejection wins (upstream
    /// `RunFilterPlugins`).
    pub fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, skip: &[bool]) -> Status {
        for (k, &i) in self.filters.iter().enumerate() {
            if skip.get(k).copied().unwrap_or(false) {
                continue;
            }
            let st = self.plugins[i].filter(state, pod, node);
            if !st.is_success() {
                return st;
            }
        }
        Status::success()
    }

    /// Like `run_filters`, naming the plugin that rejected the node.
    fn first_rejection(
        &self,
        node: &NodeInfo,
        state: &CycleState,
        pod: &PodInfo,
        skip: &[bool],
    ) -> Option<(&'static str, Status)> {
        for (k, &i) in self.filters.iter().enumerate() {
            if skip.get(k).copied().unwrap_or(false) {
                continue;
            }
            let st = self.plugins[i].filter(state, pod, node);
            if !st.is_success() {
                return Some((self.plugins[i].name(), st));
            }
        }
        None
    }

    /// upstream PreFilterExtensions.AddPod over the filter plugins that did not skip.
    pub fn run_add_pod(&self, state: &mut CycleState, pod: &PodInfo, added: &PodInfo, node: &NodeInfo, skip: &[bool]) {
        for (k, &i) in self.filters.iter().enumerate() {
            if !skip.get(k).copied().unwrap_or(false) {
                self.plugins[i].add_pod(state, pod, added, node);
            }
        }
    }

    /// upstream PreFilterExtensions.RemovePod over the filter plugins that did not skip.
    pub fn run_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        skip: &[bool],
    ) {
        for (k, &i) in self.filters.iter().enumerate() {
            if !skip.get(k).copied().unwrap_or(false) {
                self.plugins[i].remove_pod(state, pod, removed, node);
            }
        }
    }

    /// upstream RunFilterPluginsWithNominatedPods: with pods of equal or higher priority
    /// nominated to the node (preemption freed room for them there), the node must fit the pod
    /// both with them on it and without them (they may go elsewhere in the end, and the pod's
    /// affinity must not rest on pods that are not there yet). `None`: it fits.
    pub fn filter_node(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        skip: &[bool],
        nominated: &[Arc<PodInfo>],
    ) -> Option<(&'static str, Status)> {
        let mut others = nominated.iter().filter(|n| n.uid != pod.uid && n.priority >= pod.priority).peekable();
        if others.peek().is_some() {
            let (mut ni, mut st) = (node.clone(), state.clone());
            for o in others {
                ni.add_pod(o.clone());
                self.run_add_pod(&mut st, pod, o, &ni, skip);
            }
            if let Some(r) = self.first_rejection(&ni, &st, pod, skip) {
                return Some(r);
            }
        }
        self.first_rejection(node, state, pod, skip)
    }

    /// PreFilter for every filter plugin. Returns which filters to skip, or the rejection.
    pub fn run_pre_filters(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        timings: Option<&mut Vec<PluginTiming>>,
    ) -> Result<Vec<bool>, (&'static str, Status)> {
        let mut skip = Vec::with_capacity(self.filters.len());
        let mut timings = timings;
        for &i in &self.filters {
            let t0 = timings.as_ref().map(|_| Instant::now());
            let st = self.plugins[i].pre_filter(state, pod, snap);
            if let (Some(t), Some(t0)) = (timings.as_deref_mut(), t0) {
                t.push(PluginTiming { plugin: self.plugins[i].name(), point: "PreFilter", duration: t0.elapsed() });
            }
            match st.code {
                Code::Success => skip.push(false),
                Code::Skip => skip.push(true),
                _ => return Err((self.plugins[i].name(), st)),
            }
        }
        Ok(skip)
    }

    /// One scheduling cycle. `start` is where the previous cycle stopped looking (upstream
    /// `nextStartNodeIndex`), so consecutive pods spread their search over the cluster.
    #[allow(clippy::too_many_arguments)]
    pub fn schedule_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        start: &mut usize,
        rng: &mut impl Rng,
        mut timings: Option<&mut Vec<PluginTiming>>,
    ) -> Result<ScheduleResult, Box<FitError>> {
        let n = snap.nodes.len();
        let mut diag = Diagnosis::default();
        if n == 0 {
            return Err(Box::new(FitError { num_all_nodes: 0, diagnosis: diag }));
        }
        let skip = match self.run_pre_filters(state, pod, snap, timings.as_deref_mut()) {
            Ok(s) => s,
            Err((plugin, st)) => {
                diag.unschedulable_plugins.push(plugin);
                diag.pre_filter = Some(st);
                return Err(Box::new(FitError { num_all_nodes: n, diagnosis: diag }));
            }
        };

        // upstream: a nominated node (from an earlier preemption) is tried first and taken if it fits.
        if let Some(nominated) = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()) {
            if let Some(ni) = snap.get(nominated) {
                if self.filter_node(state, pod, ni, &skip, snap.nominated_to(nominated)).is_none() {
                    return Ok(ScheduleResult { node: nominated.to_string(), evaluated: 1, feasible: 1 });
                }
            }
        }

        diag.skip = skip.clone();
        let want = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, n);
        let mut feasible: Vec<usize> = Vec::with_capacity(want.min(n));
        let mut processed = 0;
        let mut filter_time: Option<Vec<Duration>> = timings.as_ref().map(|_| vec![Duration::ZERO; self.filters.len()]);
        for k in 0..n {
            if feasible.len() >= want {
                break;
            }
            let i = (*start + k) % n;
            processed += 1;
            let ni = &*snap.nodes[i];
            let nominated = snap.nominated_to(&ni.name);
            let verdict = match filter_time.as_mut() {
                _ if !nominated.is_empty() => self.filter_node(state, pod, ni, &skip, nominated),
                None => self.first_rejection(ni, state, pod, &skip),
                Some(ft) => {
                    let mut out = None;
                    for (fk, &pi) in self.filters.iter().enumerate() {
                        if skip.get(fk).copied().unwrap_or(false) {
                            continue;
                        }
                        let t0 = Instant::now();
                        let st = self.plugins[pi].filter(state, pod, ni);
                        ft[fk] += t0.elapsed();
                        if !st.is_success() {
                            out = Some((self.plugins[pi].name(), st));
                            break;
                        }
                    }
                    out
                }
            };
            match verdict {
                None => feasible.push(i),
                Some((plugin, st)) => {
                    if !diag.unschedulable_plugins.contains(&plugin) {
                        diag.unschedulable_plugins.push(plugin);
                    }
                    diag.node_statuses.push((i, st));
                }
            }
        }
        *start = (*start + processed) % n;
        if let (Some(t), Some(ft)) = (timings.as_deref_mut(), filter_time) {
            for (fk, d) in ft.into_iter().enumerate() {
                t.push(PluginTiming { plugin: self.plugins[self.filters[fk]].name(), point: "Filter", duration: d });
            }
        }
        if feasible.is_empty() {
            return Err(Box::new(FitError { num_all_nodes: n, diagnosis: diag }));
        }
        if feasible.len() == 1 {
            return Ok(ScheduleResult {
                node: snap.nodes[feasible[0]].name.clone(),
                evaluated: processed,
                feasible: 1,
            });
        }

        let nodes: Vec<&NodeInfo> = feasible.iter().map(|&i| &*snap.nodes[i]).collect();
        let totals = self.score_nodes(state, pod, snap, &nodes, timings);
        let best = select_host(&totals, rng);
        Ok(ScheduleResult { node: nodes[best].name.clone(), evaluated: processed, feasible: nodes.len() })
    }

    /// PreScore, Score, NormalizeScore and weights: the weighted total per node.
    pub fn score_nodes(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
        mut timings: Option<&mut Vec<PluginTiming>>,
    ) -> Vec<i64> {
        let mut totals = vec![0i64; nodes.len()];
        let mut scores = vec![0i64; nodes.len()];
        for &(i, weight) in &self.scorers {
            let p = &self.plugins[i];
            let t0 = timings.as_ref().map(|_| Instant::now());
            let st = p.pre_score(state, pod, snap, nodes);
            if st.code == Code::Skip {
                continue;
            }
            for (s, ni) in scores.iter_mut().zip(nodes) {
                *s = p.score(state, pod, ni);
            }
            p.normalize(state, pod, &mut scores);
            for (t, s) in totals.iter_mut().zip(&scores) {
                *t += s * weight;
            }
            if let (Some(t), Some(t0)) = (timings.as_deref_mut(), t0) {
                t.push(PluginTiming { plugin: p.name(), point: "Score", duration: t0.elapsed() });
            }
        }
        totals
    }
}

/// upstream `selectHost`: the highest total; among equal totals each is equally likely
/// (reservoir sampling).
pub fn select_host(totals: &[i64], rng: &mut impl Rng) -> usize {
    let mut best = 0;
    let mut ties = 1u32;
    for (i, &t) in totals.iter().enumerate().skip(1) {
        if t > totals[best] {
            best = i;
            ties = 1;
        } else if t == totals[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn num_feasible_nodes_follows_upstreams_adaptive_percentage() {
        let cases = [(50, 50), (100, 100), (1000, 420), (5000, 500), (6000, 300), (100_000, 5000)];
        for (all, want) in cases {
            assert_eq!(num_feasible_nodes_to_find(0, all), want, "{all} nodes");
        }
        assert_eq!(num_feasible_nodes_to_find(100, 5000), 5000);
    }

    #[test]
    fn select_host_takes_the_highest_and_breaks_ties_at_random() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(select_host(&[1, 5, 3], &mut rng), 1);
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[select_host(&[7, 7, 7], &mut rng)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "ties spread: {seen:?}");
    }

    fn fit_error(statuses: Vec<Status>, post: Option<&str>) -> FitError {
        FitError {
            num_all_nodes: statuses.len(),
            diagnosis: Diagnosis {
                node_statuses: statuses.into_iter().enumerate().collect(),
                post_filter_msg: post.map(str::to_string),
                ..Default::default()
            },
        }
    }

    #[test]
    fn fit_error_message_is_upstreams_sorted_histogram() {
        let e = fit_error(
            vec![
                Status::unresolvable("node(s) had untolerated taint {key: value}"),
                Status::unschedulable("Insufficient cpu"),
                Status::unresolvable("node(s) had untolerated taint {key: value}"),
            ],
            Some("preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."),
        );
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {key: value}. \
             preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
             2 Preemption is not helpful for scheduling.."
        );
    }

    #[test]
    fn fit_error_counts_each_reason_of_a_node() {
        let e = fit_error(
            vec![Status {
                code: Code::Unschedulable,
                reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()],
            }],
            None,
        );
        assert_eq!(e.to_string(), "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.");
    }

    #[test]
    fn prefilter_rejection_is_reported_once() {
        let e = FitError {
            num_all_nodes: 3,
            diagnosis: Diagnosis {
                pre_filter: Some(Status::unresolvable("pod has unbound immediate PersistentVolumeClaims")),
                ..Default::default()
            },
        };
        assert_eq!(e.to_string(), "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.");
    }
}
