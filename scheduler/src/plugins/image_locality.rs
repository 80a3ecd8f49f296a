//! ImageLocality: prefers nodes that already have the pod's images, by image size scaled by
//! how many nodes have the image (so one node holding a popular image is not a magnet).

use super::Handle;
use crate::framework::types::normalize_image_name;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status, MAX_NODE_SCORE};

pub const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
/// upstream `minThreshold` and `maxContainerThreshold`.
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(ImageLocality)
}

const STATE_KEY: &str = "PreScoreImageLocality";

struct PreScoreState {
    total_nodes: usize,
    /// (image, nodes with it) for each of the pod's container images.
    images: Vec<(String, usize)>,
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot, _: &[&NodeInfo]) -> Status {
        let spec = pod.spec();
        let images = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .filter_map(|c| c.image.as_deref())
            .map(|i| {
                let n = normalize_image_name(i);
                let count = snap.image_nodes.get(&n).copied().unwrap_or(0);
                (n, count)
            })
            .collect();
        state.write(STATE_KEY, PreScoreState { total_nodes: snap.len(), images });
        Status::success()
    }

    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<PreScoreState>(STATE_KEY) else { return 0 };
        if s.total_nodes == 0 || s.images.is_empty() {
            return 0;
        }
        let mut sum: i64 = 0;
        for (img, with) in &s.images {
            if let Some(size) = node.images.get(img) {
                let spread = *with as f64 / s.total_nodes as f64;
                sum += (*size as f64 * spread) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * s.images.len() as i64;
        let sum = sum.clamp(MIN_THRESHOLD, max);
        MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod};
    use k8s_openapi::api::core::v1::ContainerImage;

    fn with_image(name: &str, image: &str, size: i64) -> NodeInfo {
        let mut n = node(name, "1", "1Gi");
        n.status.as_mut().expect("status").images =
            Some(vec![ContainerImage { names: Some(vec![image.into()]), size_bytes: Some(size) }]);
        node_info(n, vec![])
    }

    #[test]
    fn image_locality_scales_size_by_spread() {
        let mut p = pod("p", "", "");
        p.spec.as_mut().expect("spec").containers[0].image = Some("example.com/big".into());
        let p = PodInfo::new(p);
        let snap = Snapshot::from_nodes(vec![
            with_image("a", "example.com/big:latest", 600 * MB),
            with_image("b", "example.com/other:latest", 600 * MB),
        ]);
        let mut state = CycleState::default();
        ImageLocality.pre_score(&mut state, &p, &snap, &[]);
        let score = |n: &str| ImageLocality.score(&state, &p, snap.get(n).expect("node"));
        // 600 MB on 1 of 2 nodes counts 300 MB: (300 - 23) / (1000 - 23) of 100.
        assert_eq!(score("a"), 100 * (300 * MB - MIN_THRESHOLD) / (MAX_CONTAINER_THRESHOLD - MIN_THRESHOLD));
        assert_eq!(score("b"), 0);
    }

    #[test]
    fn untagged_image_means_latest() {
        assert_eq!(normalize_image_name("nginx"), "nginx:latest");
        assert_eq!(normalize_image_name("localhost:5000/nginx"), "localhost:5000/nginx:latest");
        assert_eq!(normalize_image_name("nginx@sha256:abc"), "nginx@sha256:abc");
    }
}
