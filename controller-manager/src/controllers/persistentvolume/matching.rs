//! Which PersistentVolume a claim may bind to (upstream `FindMatchingVolume` and
//! `checkVolumeSatisfyClaim` in `component-helpers/storage/volume`). Pure: the controller and
//! the tests hand in the objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelector, PersistentVolume, PersistentVolumeClaim};

use super::ann;
use crate::controllers::owner;

/// A quantity in its base unit (bytes for storage), as upstream's `resource.Quantity` reads
/// `1Gi`, `500M`, `1.5Gi`, `1e9`, `100m`. `None` for anything unparsable.
pub fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some((n * mult).ceil() as i128)
}

/// The claim's class: the beta annotation wins over `spec.storageClassName`, as upstream's
/// `GetPersistentVolumeClaimClass`; "" when neither is set.
pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    if let Some(a) = c.metadata.annotations.as_ref().and_then(|a| a.get(ann::BETA_STORAGE_CLASS)) {
        return a;
    }
    c.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// upstream `GetPersistentVolumeClass`.
pub fn volume_class(v: &PersistentVolume) -> &str {
    if let Some(a) = v.metadata.annotations.as_ref().and_then(|a| a.get(ann::BETA_STORAGE_CLASS)) {
        return a;
    }
    v.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

pub fn claim_request(c: &PersistentVolumeClaim) -> i128 {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| parse_quantity(&q.0))
        .unwrap_or(0)
}

pub fn volume_capacity(v: &PersistentVolume) -> i128 {
    v.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_quantity(&q.0))
        .unwrap_or(0)
}

fn claim_mode(c: &PersistentVolumeClaim) -> &str {
    c.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem")
}

fn volume_mode(v: &PersistentVolume) -> &str {
    v.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem")
}

/// The volume's `claimRef` names this claim (and, when the ref has a uid, the same object):
/// upstream `IsVolumeBoundToClaim`.
pub fn is_volume_bound_to_claim(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    r.name.as_deref() == c.metadata.name.as_deref()
        && r.namespace.as_deref() == c.metadata.namespace.as_deref()
        && (r.uid.as_deref().unwrap_or("").is_empty() || r.uid == c.metadata.uid)
}

/// Whether every access mode the claim asks for is one the volume offers.
fn modes_fit(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let want = c.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or(&[]);
    let have = v.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or(&[]);
    want.iter().all(|m| have.contains(m))
}

/// A node selector term list against a node's labels and name (In, NotIn, Exists,
/// DoesNotExist, Gt, Lt; matchFields on `metadata.name`). Terms are ORed.
pub fn node_selector_matches(sel: &NodeSelector, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    sel.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
        let fields = t.match_fields.as_deref().unwrap_or(&[]);
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        let req = |op: &str, values: &[String], value: Option<&str>| -> bool {
            match op {
                "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
                "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                "Gt" | "Lt" => {
                    let (Some(v), Some(bound)) =
                        (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
                    else {
                        return false;
                    };
                    if op == "Gt" {
                        v > bound
                    } else {
                        v < bound
                    }
                }
                _ => false,
            }
        };
        exprs
            .iter()
            .all(|e| req(&e.operator, e.values.as_deref().unwrap_or(&[]), labels.get(&e.key).map(String::as_str)))
            && fields.iter().all(|f| {
                let value = (f.key == "metadata.name").then_some(node_name);
                req(&f.operator, f.values.as_deref().unwrap_or(&[]), value)
            })
    })
}

/// upstream `CheckNodeAffinity`: a volume without required node affinity fits every node.
pub fn volume_fits_node(v: &PersistentVolume, node: &Node) -> bool {
    let Some(sel) = v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()) else {
        return true;
    };
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    node_selector_matches(sel, labels, node.metadata.name.as_deref().unwrap_or(""))
}

/// Why a volume the claim asked for by name cannot be bound (upstream
/// `checkVolumeSatisfyClaim`); the text goes into the VolumeMismatch event.
pub fn check_volume_satisfies_claim(v: &PersistentVolume, c: &PersistentVolumeClaim) -> Result<(), String> {
    if volume_capacity(v) < claim_request(c) {
        return Err("requested PV is too small".into());
    }
    if volume_class(v) != claim_class(c) {
        return Err("storageClassName does not match".into());
    }
    if claim_mode(c) != volume_mode(v) {
        return Err("incompatible volumeMode".into());
    }
    if !modes_fit(v, c) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// upstream `FindMatchingVolume`: a volume already pre-bound to this claim wins if it
/// satisfies it; otherwise the smallest unclaimed volume with the claim's class, volume mode,
/// access modes, selector and enough capacity. With `delay_binding` (a WaitForFirstConsumer
/// class) and no `node`, only pre-bound volumes count: the scheduler picks the rest. With a
/// `node`, volumes whose node affinity excludes it are skipped.
pub fn find_matching_volume<'a>(
    c: &PersistentVolumeClaim,
    volumes: &'a [std::sync::Arc<PersistentVolume>],
    node: Option<&Node>,
    delay_binding: bool,
) -> Option<&'a std::sync::Arc<PersistentVolume>> {
    let want = claim_request(c);
    let selector = match c.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(s) => match owner::selector(Some(s)) {
            Ok(sel) => Some(sel),
            // upstream: an invalid selector matches nothing.
            Err(_) => return None,
        },
        None => None,
    };
    let mut best: Option<&std::sync::Arc<PersistentVolume>> = None;
    for v in volumes {
        if claim_mode(c) != volume_mode(v) || !modes_fit(v, c) {
            continue;
        }
        let node_ok = node.is_none_or(|n| volume_fits_node(v, n));
        if is_volume_bound_to_claim(v, c) {
            if volume_capacity(v) >= want && volume_class(v) == claim_class(c) && node_ok {
                return Some(v);
            }
            continue;
        }
        if node.is_none() && delay_binding {
            continue;
        }
        if v.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()) {
            continue;
        }
        let phase = v.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if v.metadata.deletion_timestamp.is_some() || matches!(phase, "Released" | "Failed") {
            continue;
        }
        if !node_ok || volume_class(v) != claim_class(c) || volume_capacity(v) < want {
            continue;
        }
        if let Some(sel) = &selector {
            if !owner::labels_match(sel, &v.metadata) {
                continue;
            }
        }
        if best.is_none_or(|b| volume_capacity(v) < volume_capacity(b)) {
            best = Some(v);
        }
    }
    best
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec,
        VolumeNodeAffinity, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::api::ObjectMeta;
    use std::sync::Arc;

    pub fn pv(name: &str, size: &str, class: &str, modes: &[&str]) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                storage_class_name: Some(class.into()),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub fn pvc(name: &str, size: &str, class: Option<&str>, modes: &[&str]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(str::to_string),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                    limits: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub fn on_host(mut v: PersistentVolume, host: &str) -> PersistentVolume {
        v.spec.as_mut().expect("spec").node_affinity = Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "kubernetes.io/hostname".into(),
                        operator: "In".into(),
                        values: Some(vec![host.into()]),
                    }]),
                    match_fields: None,
                }],
            }),
        });
        v
    }

    pub fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("kubernetes.io/hostname".into(), name.into())])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn claimed(mut v: PersistentVolume, c: &PersistentVolumeClaim, uid: bool) -> PersistentVolume {
        v.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference {
            namespace: c.metadata.namespace.clone(),
            name: c.metadata.name.clone(),
            uid: if uid { c.metadata.uid.clone() } else { None },
            ..Default::default()
        });
        v
    }

    fn labelled(mut v: PersistentVolume, k: &str, val: &str) -> PersistentVolume {
        v.metadata.labels = Some(BTreeMap::from([(k.into(), val.into())]));
        v
    }

    fn with_selector(mut c: PersistentVolumeClaim, k: &str, v: &str) -> PersistentVolumeClaim {
        c.spec.as_mut().expect("spec").selector =
            Some(LabelSelector { match_labels: Some(BTreeMap::from([(k.into(), v.into())])), match_expressions: None });
        c
    }

    fn block(mut v: PersistentVolume) -> PersistentVolume {
        v.spec.as_mut().expect("spec").volume_mode = Some("Block".into());
        v
    }

    #[test]
    fn quantities_read_as_upstream_does() {
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1.5Ki"), Some(1536));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("12"), Some(12));
        assert_eq!(parse_quantity("1Xi"), None);
    }

    #[test]
    fn find_matching_volume_table() {
        let rwo = &["ReadWriteOnce"][..];
        let rwx = &["ReadWriteMany"][..];
        let both = &["ReadWriteOnce", "ReadWriteMany"][..];
        let c = pvc("c", "1Gi", Some("fast"), rwo);
        let other = pvc("other", "1Gi", Some("fast"), rwo);
        // (case, claim, volumes, node, delay_binding, expected volume)
        type Case =
            (&'static str, PersistentVolumeClaim, Vec<PersistentVolume>, Option<Node>, bool, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "smallest_volume_that_fits_wins",
                c.clone(),
                vec![pv("big", "10Gi", "fast", rwo), pv("small", "2Gi", "fast", rwo), pv("tiny", "500Mi", "fast", rwo)],
                None,
                false,
                Some("small"),
            ),
            ("too_small_never_matches", c.clone(), vec![pv("tiny", "500Mi", "fast", rwo)], None, false, None),
            ("class_must_be_equal", c.clone(), vec![pv("v", "1Gi", "slow", rwo)], None, false, None),
            (
                "empty_class_claim_takes_only_classless_volumes",
                pvc("c", "1Gi", Some(""), rwo),
                vec![pv("classy", "1Gi", "fast", rwo), pv("plain", "5Gi", "", rwo)],
                None,
                false,
                Some("plain"),
            ),
            ("access_modes_must_be_offered", c.clone(), vec![pv("v", "1Gi", "fast", rwx)], None, false, None),
            ("a_superset_of_modes_is_fine", c.clone(), vec![pv("v", "1Gi", "fast", both)], None, false, Some("v")),
            ("volume_mode_must_be_equal", c.clone(), vec![block(pv("v", "1Gi", "fast", rwo))], None, false, None),
            (
                "selector_filters_by_labels",
                with_selector(c.clone(), "tier", "gold"),
                vec![labelled(pv("silver", "1Gi", "fast", rwo), "tier", "silver"), {
                    labelled(pv("gold", "2Gi", "fast", rwo), "tier", "gold")
                }],
                None,
                false,
                Some("gold"),
            ),
            (
                "volume_claimed_by_another_is_skipped",
                c.clone(),
                vec![claimed(pv("v", "1Gi", "fast", rwo), &other, true)],
                None,
                false,
                None,
            ),
            (
                "prebound_volume_wins_over_a_smaller_free_one",
                c.clone(),
                vec![pv("free", "1Gi", "fast", rwo), claimed(pv("mine", "5Gi", "fast", rwo), &c, false)],
                None,
                false,
                Some("mine"),
            ),
            (
                "delay_binding_without_node_takes_only_prebound",
                c.clone(),
                vec![pv("free", "1Gi", "fast", rwo)],
                None,
                true,
                None,
            ),
            (
                "node_affinity_must_match_the_selected_node",
                c.clone(),
                vec![on_host(pv("n1", "1Gi", "fast", rwo), "n1"), on_host(pv("n2", "9Gi", "fast", rwo), "n2")],
                Some(node("n2")),
                true,
                Some("n2"),
            ),
            (
                "released_volumes_are_not_reused",
                c.clone(),
                vec![{
                    let mut v = pv("v", "1Gi", "fast", rwo);
                    v.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
                        phase: Some("Released".into()),
                        ..Default::default()
                    });
                    v
                }],
                None,
                false,
                None,
            ),
        ];
        for (name, claim, vols, node, delay, want) in cases {
            let vols: Vec<Arc<PersistentVolume>> = vols.into_iter().map(Arc::new).collect();
            let got =
                find_matching_volume(&claim, &vols, node.as_ref(), delay).and_then(|v| v.metadata.name.as_deref());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_requested_volume_that_does_not_satisfy_says_why() {
        let c = pvc("c", "2Gi", Some("fast"), &["ReadWriteOnce"]);
        assert_eq!(
            check_volume_satisfies_claim(&pv("v", "1Gi", "fast", &["ReadWriteOnce"]), &c),
            Err("requested PV is too small".into())
        );
        assert_eq!(
            check_volume_satisfies_claim(&pv("v", "2Gi", "slow", &["ReadWriteOnce"]), &c),
            Err("storageClassName does not match".into())
        );
        assert!(check_volume_satisfies_claim(&pv("v", "2Gi", "fast", &["ReadWriteOnce"]), &c).is_ok());
    }
}
