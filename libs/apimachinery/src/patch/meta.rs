//! Patch metadata of the built-in kinds: for each type, the fields that matter to a strategic
//! merge patch, keyed by OpenAPI definition name (`io.k8s.api.core.v1.PodSpec`).
//!
//! Upstream records this in Go struct tags (`patchStrategy`, `patchMergeKey`) and comment tags
//! (`+listType`, `+listMapKey`) in `k8s.io/api`; kubectl computes strategic merge patches from
//! the same tags compiled into it, so the server must agree with them field by field. This table
//! is our one copy of those facts. It is read by:
//! - [`super::strategic`], to merge lists by key and honour `retainKeys`/`replace`;
//! - the OpenAPI generator, to emit `x-kubernetes-patch-strategy`,
//!   `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type` and `x-kubernetes-list-map-keys`;
//! - later, server-side apply, for list types and map keys.
//!
//! A type lists (a) its list fields that have a patch strategy, (b) its fields whose type
//! (transitively) contains such lists or a `retainKeys`/`replace` strategy, so the walk from the
//! root can reach them, and (c) some atomic or keyed lists without a strategy, for their list
//! type. A field missing from the table has no patch metadata: maps merge key by key and lists
//! are replaced whole, which is also upstream's behaviour for untagged fields.
//!
//! Facts checked against upstream `k8s.io/api` at Kubernetes 1.33.

/// `x-kubernetes-patch-strategy`: how a strategic merge patch combines this field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchStrategy {
    /// Lists merge element by element (by merge key, or as a set of primitives).
    Merge,
    /// The object keeps only the keys the patch names in `$retainKeys` (apps/v1
    /// DeploymentSpec.strategy).
    RetainKeys,
    /// Both of the above: lists merge by key and each element honours `$retainKeys`
    /// (PodSpec.volumes).
    MergeRetainKeys,
    /// The patch value replaces the field whole, even for an object (policy/v1
    /// PodDisruptionBudgetSpec.selector).
    Replace,
}

impl PatchStrategy {
    /// The value of `x-kubernetes-patch-strategy` (and of the Go `patchStrategy` tag).
    pub fn as_str(self) -> &'static str {
        match self {
            PatchStrategy::Merge => "merge",
            PatchStrategy::RetainKeys => "retainKeys",
            PatchStrategy::MergeRetainKeys => "merge,retainKeys",
            PatchStrategy::Replace => "replace",
        }
    }

    /// Whether a list with this strategy merges instead of being replaced.
    pub fn merges_lists(self) -> bool {
        matches!(self, PatchStrategy::Merge | PatchStrategy::MergeRetainKeys)
    }
}

/// `x-kubernetes-list-type`, the list semantics server-side apply uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    Atomic,
    Set,
    Map,
}

impl ListType {
    /// The value of `x-kubernetes-list-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListType::Atomic => "atomic",
            ListType::Set => "set",
            ListType::Map => "map",
        }
    }
}

/// What the table knows about one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    /// OpenAPI definition name of the field's type: the element type for a list, the struct
    /// type for an object; `None` for scalars and lists of scalars.
    pub type_name: Option<&'static str>,
    /// `x-kubernetes-patch-strategy`; `None` when the field has no `patchStrategy` tag.
    pub strategy: Option<PatchStrategy>,
    /// `x-kubernetes-patch-merge-key`; `None` for untagged fields and for merging lists of
    /// primitives (`metadata.finalizers`), which merge by value.
    pub merge_key: Option<&'static str>,
    /// `x-kubernetes-list-type`; `None` for non-list fields.
    pub list_type: Option<ListType>,
    /// `x-kubernetes-list-map-keys`, for `list_type == Some(ListType::Map)`.
    pub map_keys: &'static [&'static str],
}

/// One field of a [`TypeMeta`], by its JSON name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub meta: FieldMeta,
}

/// The fields of one type that carry patch metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeMeta {
    /// OpenAPI definition name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub name: &'static str,
    pub fields: &'static [Field],
}

/// A kind whose objects a strategic merge patch can target, and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub type_name: &'static str,
}

/// The OpenAPI type name of `apiVersion`/`kind`, if it is a built-in kind with patch metadata.
/// Unknown kinds (custom resources) have none: strategic merge patch does not apply to them.
pub fn root_type(api_version: &str, kind: &str) -> Option<&'static str> {
    ROOTS.iter().find(|r| r.api_version == api_version && r.kind == kind).map(|r| r.type_name)
}

/// The patch metadata of `type_name`, if the table lists that type.
pub fn type_meta(type_name: &str) -> Option<&'static TypeMeta> {
    TYPES.iter().find(|t| t.name == type_name)
}

/// The patch metadata of field `field` (JSON name) of type `type_name`.
pub fn field(type_name: &str, field: &str) -> Option<&'static FieldMeta> {
    type_meta(type_name)?.fields.iter().find(|f| f.name == field).map(|f| &f.meta)
}

/// Every kind with patch metadata.
pub fn roots() -> &'static [Root] {
    ROOTS
}

/// Every type with patch metadata.
pub fn types() -> &'static [TypeMeta] {
    TYPES
}

// ---- builders, so the table below reads as data ----

/// A struct-typed field that leads to patch metadata further down.
const fn object(type_name: &'static str) -> FieldMeta {
    FieldMeta { type_name: Some(type_name), strategy: None, merge_key: None, list_type: None, map_keys: &[] }
}

/// A struct-typed field with its own strategy (`retainKeys` or `replace`).
const fn object_with(type_name: &'static str, strategy: PatchStrategy) -> FieldMeta {
    FieldMeta { type_name: Some(type_name), strategy: Some(strategy), merge_key: None, list_type: None, map_keys: &[] }
}

/// A list of objects with a patch strategy, merged by `merge_key`.
const fn keyed(
    strategy: PatchStrategy,
    merge_key: &'static str,
    type_name: &'static str,
    list_type: ListType,
    map_keys: &'static [&'static str],
) -> FieldMeta {
    FieldMeta {
        type_name: Some(type_name),
        strategy: Some(strategy),
        merge_key: Some(merge_key),
        list_type: Some(list_type),
        map_keys,
    }
}

/// The common case: `patchStrategy=merge`, `listType=map`, merge key = the one map key.
const fn merge_by(merge_key: &'static [&'static str; 1], type_name: &'static str) -> FieldMeta {
    keyed(PatchStrategy::Merge, merge_key[0], type_name, ListType::Map, merge_key)
}

/// A list of primitives with `patchStrategy=merge`, `listType=set`: union on patch.
const fn merge_set() -> FieldMeta {
    FieldMeta {
        type_name: None,
        strategy: Some(PatchStrategy::Merge),
        merge_key: None,
        list_type: Some(ListType::Set),
        map_keys: &[],
    }
}

/// A list without patch strategy (replaced whole), `listType=atomic`.
const fn atomic(type_name: Option<&'static str>) -> FieldMeta {
    FieldMeta { type_name, strategy: None, merge_key: None, list_type: Some(ListType::Atomic), map_keys: &[] }
}

/// A list without patch strategy (replaced whole by a strategic patch) that server-side apply
/// treats as a map.
const fn map_list(type_name: &'static str, map_keys: &'static [&'static str]) -> FieldMeta {
    FieldMeta { type_name: Some(type_name), strategy: None, merge_key: None, list_type: Some(ListType::Map), map_keys }
}

const fn f(name: &'static str, meta: FieldMeta) -> Field {
    Field { name, meta }
}

const fn t(name: &'static str, fields: &'static [Field]) -> TypeMeta {
    TypeMeta { name, fields }
}

const fn r(api_version: &'static str, kind: &'static str, type_name: &'static str) -> Root {
    Root { api_version, kind, type_name }
}

const NAME: &[&str; 1] = &["name"];
const TYPE: &[&str; 1] = &["type"];

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const CONDITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Condition";
const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const POD_TEMPLATE_SPEC: &str = "io.k8s.api.core.v1.PodTemplateSpec";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const RESOURCE_REQUIREMENTS: &str = "io.k8s.api.core.v1.ResourceRequirements";

/// Types whose only patch metadata is their `metadata`.
const METADATA_ONLY: &[Field] = &[f("metadata", object(OBJECT_META))];

/// The fields shared by Container and EphemeralContainer (upstream's EphemeralContainerCommon).
const CONTAINER_FIELDS: &[Field] = &[
    f(
        "ports",
        keyed(
            PatchStrategy::Merge,
            "containerPort",
            "io.k8s.api.core.v1.ContainerPort",
            ListType::Map,
            &["containerPort", "protocol"],
        ),
    ),
    f("env", merge_by(NAME, "io.k8s.api.core.v1.EnvVar")),
    f("envFrom", atomic(Some("io.k8s.api.core.v1.EnvFromSource"))),
    f("volumeMounts", merge_by(&["mountPath"], "io.k8s.api.core.v1.VolumeMount")),
    f("volumeDevices", merge_by(&["devicePath"], "io.k8s.api.core.v1.VolumeDevice")),
    f("command", atomic(None)),
    f("args", atomic(None)),
    f("resizePolicy", atomic(Some("io.k8s.api.core.v1.ContainerResizePolicy"))),
    f("resources", object(RESOURCE_REQUIREMENTS)),
];

static TYPES: &[TypeMeta] = &[
    // ---- meta/v1: applies to every kind through `metadata` ----
    t(
        OBJECT_META,
        &[
            f("ownerReferences", merge_by(&["uid"], "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference")),
            f("finalizers", merge_set()),
            f("managedFields", atomic(Some("io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry"))),
        ],
    ),
    // ---- core/v1: pods and templates ----
    t(
        "io.k8s.api.core.v1.Pod",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object(POD_SPEC)),
            f("status", object("io.k8s.api.core.v1.PodStatus")),
        ],
    ),
    t(
        POD_SPEC,
        &[
            f(
                "volumes",
                keyed(PatchStrategy::MergeRetainKeys, "name", "io.k8s.api.core.v1.Volume", ListType::Map, NAME),
            ),
            f("initContainers", merge_by(NAME, CONTAINER)),
            f("containers", merge_by(NAME, CONTAINER)),
            f("ephemeralContainers", merge_by(NAME, "io.k8s.api.core.v1.EphemeralContainer")),
            f("imagePullSecrets", merge_by(NAME, "io.k8s.api.core.v1.LocalObjectReference")),
            f("hostAliases", merge_by(&["ip"], "io.k8s.api.core.v1.HostAlias")),
            f(
                "topologySpreadConstraints",
                keyed(
                    PatchStrategy::Merge,
                    "topologyKey",
                    "io.k8s.api.core.v1.TopologySpreadConstraint",
                    ListType::Map,
                    &["topologyKey", "whenUnsatisfiable"],
                ),
            ),
            f("schedulingGates", merge_by(NAME, "io.k8s.api.core.v1.PodSchedulingGate")),
            f(
                "resourceClaims",
                keyed(
                    PatchStrategy::MergeRetainKeys,
                    "name",
                    "io.k8s.api.core.v1.PodResourceClaim",
                    ListType::Map,
                    NAME,
                ),
            ),
            f("tolerations", atomic(Some("io.k8s.api.core.v1.Toleration"))),
            f("readinessGates", atomic(Some("io.k8s.api.core.v1.PodReadinessGate"))),
            f("resources", object(RESOURCE_REQUIREMENTS)),
        ],
    ),
    t(CONTAINER, CONTAINER_FIELDS),
    t("io.k8s.api.core.v1.EphemeralContainer", CONTAINER_FIELDS),
    t(RESOURCE_REQUIREMENTS, &[f("claims", map_list("io.k8s.api.core.v1.ResourceClaim", NAME))]),
    t("io.k8s.api.core.v1.Volume", &[f("ephemeral", object("io.k8s.api.core.v1.EphemeralVolumeSource"))]),
    t(
        "io.k8s.api.core.v1.EphemeralVolumeSource",
        &[f("volumeClaimTemplate", object("io.k8s.api.core.v1.PersistentVolumeClaimTemplate"))],
    ),
    t("io.k8s.api.core.v1.PersistentVolumeClaimTemplate", METADATA_ONLY),
    t(
        "io.k8s.api.core.v1.PodStatus",
        &[
            f("conditions", merge_by(TYPE, "io.k8s.api.core.v1.PodCondition")),
            // upstream: hostIPs merges by ip for patches but is atomic for apply.
            f("hostIPs", keyed(PatchStrategy::Merge, "ip", "io.k8s.api.core.v1.HostIP", ListType::Atomic, &[])),
            f("podIPs", merge_by(&["ip"], "io.k8s.api.core.v1.PodIP")),
            f(
                "resourceClaimStatuses",
                keyed(
                    PatchStrategy::MergeRetainKeys,
                    "name",
                    "io.k8s.api.core.v1.PodResourceClaimStatus",
                    ListType::Map,
                    NAME,
                ),
            ),
            f("initContainerStatuses", atomic(Some("io.k8s.api.core.v1.ContainerStatus"))),
            f("containerStatuses", atomic(Some("io.k8s.api.core.v1.ContainerStatus"))),
            f("ephemeralContainerStatuses", atomic(Some("io.k8s.api.core.v1.ContainerStatus"))),
        ],
    ),
    t(
        "io.k8s.api.core.v1.ContainerStatus",
        &[
            f("volumeMounts", merge_by(&["mountPath"], "io.k8s.api.core.v1.VolumeMountStatus")),
            f("allocatedResourcesStatus", merge_by(NAME, "io.k8s.api.core.v1.ResourceStatus")),
        ],
    ),
    t(
        "io.k8s.api.core.v1.ResourceStatus",
        &[f("resources", map_list("io.k8s.api.core.v1.ResourceHealth", &["resourceID"]))],
    ),
    t(
        "io.k8s.api.core.v1.PodTemplate",
        &[f("metadata", object(OBJECT_META)), f("template", object(POD_TEMPLATE_SPEC))],
    ),
    t(POD_TEMPLATE_SPEC, &[f("metadata", object(OBJECT_META)), f("spec", object(POD_SPEC))]),
    t(
        "io.k8s.api.core.v1.ReplicationController",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.core.v1.ReplicationControllerSpec")),
            f("status", object("io.k8s.api.core.v1.ReplicationControllerStatus")),
        ],
    ),
    t("io.k8s.api.core.v1.ReplicationControllerSpec", &[f("template", object(POD_TEMPLATE_SPEC))]),
    t(
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.core.v1.ReplicationControllerCondition"))],
    ),
    // ---- core/v1: services and the rest ----
    t(
        "io.k8s.api.core.v1.Service",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.core.v1.ServiceSpec")),
            f("status", object("io.k8s.api.core.v1.ServiceStatus")),
        ],
    ),
    t(
        "io.k8s.api.core.v1.ServiceSpec",
        &[
            f(
                "ports",
                keyed(
                    PatchStrategy::Merge,
                    "port",
                    "io.k8s.api.core.v1.ServicePort",
                    ListType::Map,
                    &["port", "protocol"],
                ),
            ),
            f("clusterIPs", atomic(None)),
            f("externalIPs", atomic(None)),
            f("ipFamilies", atomic(None)),
            f("loadBalancerSourceRanges", atomic(None)),
        ],
    ),
    t("io.k8s.api.core.v1.ServiceStatus", &[f("conditions", merge_by(TYPE, CONDITION))]),
    t(
        "io.k8s.api.core.v1.Endpoints",
        &[f("metadata", object(OBJECT_META)), f("subsets", atomic(Some("io.k8s.api.core.v1.EndpointSubset")))],
    ),
    t(
        "io.k8s.api.core.v1.ServiceAccount",
        &[
            f("metadata", object(OBJECT_META)),
            f("secrets", merge_by(NAME, "io.k8s.api.core.v1.ObjectReference")),
            f("imagePullSecrets", atomic(Some("io.k8s.api.core.v1.LocalObjectReference"))),
        ],
    ),
    t(
        "io.k8s.api.core.v1.Namespace",
        &[f("metadata", object(OBJECT_META)), f("status", object("io.k8s.api.core.v1.NamespaceStatus"))],
    ),
    t(
        "io.k8s.api.core.v1.NamespaceStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.core.v1.NamespaceCondition"))],
    ),
    t(
        "io.k8s.api.core.v1.Node",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.core.v1.NodeSpec")),
            f("status", object("io.k8s.api.core.v1.NodeStatus")),
        ],
    ),
    t(
        "io.k8s.api.core.v1.NodeSpec",
        &[f("podCIDRs", merge_set()), f("taints", atomic(Some("io.k8s.api.core.v1.Taint")))],
    ),
    t(
        "io.k8s.api.core.v1.NodeStatus",
        &[
            f("conditions", merge_by(TYPE, "io.k8s.api.core.v1.NodeCondition")),
            f("addresses", merge_by(TYPE, "io.k8s.api.core.v1.NodeAddress")),
            f("images", atomic(Some("io.k8s.api.core.v1.ContainerImage"))),
            f("volumesInUse", atomic(None)),
            f("volumesAttached", atomic(Some("io.k8s.api.core.v1.AttachedVolume"))),
        ],
    ),
    t(
        "io.k8s.api.core.v1.PersistentVolumeClaim",
        &[f("metadata", object(OBJECT_META)), f("status", object("io.k8s.api.core.v1.PersistentVolumeClaimStatus"))],
    ),
    t(
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.core.v1.PersistentVolumeClaimCondition"))],
    ),
    t(
        "io.k8s.api.core.v1.ComponentStatus",
        &[f("metadata", object(OBJECT_META)), f("conditions", merge_by(TYPE, "io.k8s.api.core.v1.ComponentCondition"))],
    ),
    t("io.k8s.api.core.v1.ConfigMap", METADATA_ONLY),
    t("io.k8s.api.core.v1.Secret", METADATA_ONLY),
    t("io.k8s.api.core.v1.Event", METADATA_ONLY),
    t("io.k8s.api.core.v1.PersistentVolume", METADATA_ONLY),
    t("io.k8s.api.core.v1.ResourceQuota", METADATA_ONLY),
    t("io.k8s.api.core.v1.LimitRange", METADATA_ONLY),
    // ---- apps/v1 ----
    t(
        "io.k8s.api.apps.v1.Deployment",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.apps.v1.DeploymentSpec")),
            f("status", object("io.k8s.api.apps.v1.DeploymentStatus")),
        ],
    ),
    t(
        "io.k8s.api.apps.v1.DeploymentSpec",
        &[
            f("template", object(POD_TEMPLATE_SPEC)),
            f("strategy", object_with("io.k8s.api.apps.v1.DeploymentStrategy", PatchStrategy::RetainKeys)),
        ],
    ),
    t(
        "io.k8s.api.apps.v1.DeploymentStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.apps.v1.DeploymentCondition"))],
    ),
    t(
        "io.k8s.api.apps.v1.ReplicaSet",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.apps.v1.ReplicaSetSpec")),
            f("status", object("io.k8s.api.apps.v1.ReplicaSetStatus")),
        ],
    ),
    t("io.k8s.api.apps.v1.ReplicaSetSpec", &[f("template", object(POD_TEMPLATE_SPEC))]),
    t(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.apps.v1.ReplicaSetCondition"))],
    ),
    t(
        "io.k8s.api.apps.v1.StatefulSet",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.apps.v1.StatefulSetSpec")),
            f("status", object("io.k8s.api.apps.v1.StatefulSetStatus")),
        ],
    ),
    t(
        "io.k8s.api.apps.v1.StatefulSetSpec",
        &[
            f("template", object(POD_TEMPLATE_SPEC)),
            f("volumeClaimTemplates", atomic(Some("io.k8s.api.core.v1.PersistentVolumeClaim"))),
        ],
    ),
    t(
        "io.k8s.api.apps.v1.StatefulSetStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.apps.v1.StatefulSetCondition"))],
    ),
    t(
        "io.k8s.api.apps.v1.DaemonSet",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.apps.v1.DaemonSetSpec")),
            f("status", object("io.k8s.api.apps.v1.DaemonSetStatus")),
        ],
    ),
    t("io.k8s.api.apps.v1.DaemonSetSpec", &[f("template", object(POD_TEMPLATE_SPEC))]),
    t(
        "io.k8s.api.apps.v1.DaemonSetStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.apps.v1.DaemonSetCondition"))],
    ),
    t("io.k8s.api.apps.v1.ControllerRevision", METADATA_ONLY),
    // ---- batch/v1 ----
    t(
        "io.k8s.api.batch.v1.Job",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.batch.v1.JobSpec")),
            f("status", object("io.k8s.api.batch.v1.JobStatus")),
        ],
    ),
    t("io.k8s.api.batch.v1.JobSpec", &[f("template", object(POD_TEMPLATE_SPEC))]),
    t(
        "io.k8s.api.batch.v1.JobStatus",
        &[f(
            "conditions",
            keyed(PatchStrategy::Merge, "type", "io.k8s.api.batch.v1.JobCondition", ListType::Atomic, &[]),
        )],
    ),
    t(
        "io.k8s.api.batch.v1.CronJob",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.batch.v1.CronJobSpec")),
            f("status", object("io.k8s.api.batch.v1.CronJobStatus")),
        ],
    ),
    t("io.k8s.api.batch.v1.CronJobSpec", &[f("jobTemplate", object("io.k8s.api.batch.v1.JobTemplateSpec"))]),
    t("io.k8s.api.batch.v1.CronJobStatus", &[f("active", atomic(Some("io.k8s.api.core.v1.ObjectReference")))]),
    t(
        "io.k8s.api.batch.v1.JobTemplateSpec",
        &[f("metadata", object(OBJECT_META)), f("spec", object("io.k8s.api.batch.v1.JobSpec"))],
    ),
    // ---- policy/v1 ----
    t(
        "io.k8s.api.policy.v1.PodDisruptionBudget",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.policy.v1.PodDisruptionBudgetSpec")),
            f("status", object("io.k8s.api.policy.v1.PodDisruptionBudgetStatus")),
        ],
    ),
    t(
        "io.k8s.api.policy.v1.PodDisruptionBudgetSpec",
        &[f("selector", object_with("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", PatchStrategy::Replace))],
    ),
    t("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", &[f("conditions", merge_by(TYPE, CONDITION))]),
    // ---- autoscaling ----
    t("io.k8s.api.autoscaling.v1.Scale", METADATA_ONLY),
    t("io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler", METADATA_ONLY),
    t(
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
        &[
            f("metadata", object(OBJECT_META)),
            f("status", object("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus")),
        ],
    ),
    t(
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerCondition"))],
    ),
    // ---- discovery, networking, storage, coordination, events ----
    t(
        "io.k8s.api.discovery.v1.EndpointSlice",
        &[
            f("metadata", object(OBJECT_META)),
            f("endpoints", atomic(Some("io.k8s.api.discovery.v1.Endpoint"))),
            f("ports", atomic(Some("io.k8s.api.discovery.v1.EndpointPort"))),
        ],
    ),
    t("io.k8s.api.networking.v1.Ingress", METADATA_ONLY),
    t("io.k8s.api.networking.v1.IngressClass", METADATA_ONLY),
    t("io.k8s.api.networking.v1.NetworkPolicy", METADATA_ONLY),
    t(
        "io.k8s.api.networking.v1.ServiceCIDR",
        &[f("metadata", object(OBJECT_META)), f("status", object("io.k8s.api.networking.v1.ServiceCIDRStatus"))],
    ),
    t("io.k8s.api.networking.v1.ServiceCIDRStatus", &[f("conditions", merge_by(TYPE, CONDITION))]),
    t("io.k8s.api.storage.v1.StorageClass", METADATA_ONLY),
    t("io.k8s.api.storage.v1.CSIDriver", METADATA_ONLY),
    t("io.k8s.api.storage.v1.VolumeAttachment", METADATA_ONLY),
    t(
        "io.k8s.api.storage.v1.CSINode",
        &[f("metadata", object(OBJECT_META)), f("spec", object("io.k8s.api.storage.v1.CSINodeSpec"))],
    ),
    t("io.k8s.api.storage.v1.CSINodeSpec", &[f("drivers", merge_by(NAME, "io.k8s.api.storage.v1.CSINodeDriver"))]),
    t("io.k8s.api.coordination.v1.Lease", METADATA_ONLY),
    t("io.k8s.api.events.v1.Event", METADATA_ONLY),
    // ---- admission, flow control, aggregation, rbac, the rest ----
    t(
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
        &[
            f("metadata", object(OBJECT_META)),
            f("webhooks", merge_by(NAME, "io.k8s.api.admissionregistration.v1.MutatingWebhook")),
        ],
    ),
    t(
        "io.k8s.api.admissionregistration.v1.MutatingWebhook",
        &[f("matchConditions", merge_by(NAME, "io.k8s.api.admissionregistration.v1.MatchCondition"))],
    ),
    t(
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
        &[
            f("metadata", object(OBJECT_META)),
            f("webhooks", merge_by(NAME, "io.k8s.api.admissionregistration.v1.ValidatingWebhook")),
        ],
    ),
    t(
        "io.k8s.api.admissionregistration.v1.ValidatingWebhook",
        &[f("matchConditions", merge_by(NAME, "io.k8s.api.admissionregistration.v1.MatchCondition"))],
    ),
    t(
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy",
        &[
            f("metadata", object(OBJECT_META)),
            f("spec", object("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec")),
        ],
    ),
    t(
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        &[
            f("matchConditions", merge_by(NAME, "io.k8s.api.admissionregistration.v1.MatchCondition")),
            f("variables", merge_by(NAME, "io.k8s.api.admissionregistration.v1.Variable")),
        ],
    ),
    t("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding", METADATA_ONLY),
    t(
        "io.k8s.api.flowcontrol.v1.FlowSchema",
        &[f("metadata", object(OBJECT_META)), f("status", object("io.k8s.api.flowcontrol.v1.FlowSchemaStatus"))],
    ),
    t(
        "io.k8s.api.flowcontrol.v1.FlowSchemaStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.flowcontrol.v1.FlowSchemaCondition"))],
    ),
    t(
        "io.k8s.api.flowcontrol.v1.PriorityLevelConfiguration",
        &[
            f("metadata", object(OBJECT_META)),
            f("status", object("io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationStatus")),
        ],
    ),
    t(
        "io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationCondition"))],
    ),
    t(
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService",
        &[
            f("metadata", object(OBJECT_META)),
            f("status", object("io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceStatus")),
        ],
    ),
    t(
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceStatus",
        &[f("conditions", merge_by(TYPE, "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceCondition"))],
    ),
    t("io.k8s.api.rbac.v1.Role", METADATA_ONLY),
    t("io.k8s.api.rbac.v1.ClusterRole", METADATA_ONLY),
    t("io.k8s.api.rbac.v1.RoleBinding", METADATA_ONLY),
    t("io.k8s.api.rbac.v1.ClusterRoleBinding", METADATA_ONLY),
    t("io.k8s.api.scheduling.v1.PriorityClass", METADATA_ONLY),
    t("io.k8s.api.node.v1.RuntimeClass", METADATA_ONLY),
    t("io.k8s.api.certificates.v1.CertificateSigningRequest", METADATA_ONLY),
    t("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition", METADATA_ONLY),
];

static ROOTS: &[Root] = &[
    r("v1", "Pod", "io.k8s.api.core.v1.Pod"),
    r("v1", "PodTemplate", "io.k8s.api.core.v1.PodTemplate"),
    r("v1", "Service", "io.k8s.api.core.v1.Service"),
    r("v1", "Endpoints", "io.k8s.api.core.v1.Endpoints"),
    r("v1", "ConfigMap", "io.k8s.api.core.v1.ConfigMap"),
    r("v1", "Secret", "io.k8s.api.core.v1.Secret"),
    r("v1", "ServiceAccount", "io.k8s.api.core.v1.ServiceAccount"),
    r("v1", "Namespace", "io.k8s.api.core.v1.Namespace"),
    r("v1", "Node", "io.k8s.api.core.v1.Node"),
    r("v1", "Event", "io.k8s.api.core.v1.Event"),
    r("v1", "PersistentVolume", "io.k8s.api.core.v1.PersistentVolume"),
    r("v1", "PersistentVolumeClaim", "io.k8s.api.core.v1.PersistentVolumeClaim"),
    r("v1", "ResourceQuota", "io.k8s.api.core.v1.ResourceQuota"),
    r("v1", "LimitRange", "io.k8s.api.core.v1.LimitRange"),
    r("v1", "ReplicationController", "io.k8s.api.core.v1.ReplicationController"),
    r("v1", "ComponentStatus", "io.k8s.api.core.v1.ComponentStatus"),
    r("apps/v1", "Deployment", "io.k8s.api.apps.v1.Deployment"),
    r("apps/v1", "ReplicaSet", "io.k8s.api.apps.v1.ReplicaSet"),
    r("apps/v1", "StatefulSet", "io.k8s.api.apps.v1.StatefulSet"),
    r("apps/v1", "DaemonSet", "io.k8s.api.apps.v1.DaemonSet"),
    r("apps/v1", "ControllerRevision", "io.k8s.api.apps.v1.ControllerRevision"),
    r("batch/v1", "Job", "io.k8s.api.batch.v1.Job"),
    r("batch/v1", "CronJob", "io.k8s.api.batch.v1.CronJob"),
    r("coordination.k8s.io/v1", "Lease", "io.k8s.api.coordination.v1.Lease"),
    r("discovery.k8s.io/v1", "EndpointSlice", "io.k8s.api.discovery.v1.EndpointSlice"),
    r("events.k8s.io/v1", "Event", "io.k8s.api.events.v1.Event"),
    r("storage.k8s.io/v1", "StorageClass", "io.k8s.api.storage.v1.StorageClass"),
    r("storage.k8s.io/v1", "CSIDriver", "io.k8s.api.storage.v1.CSIDriver"),
    r("storage.k8s.io/v1", "CSINode", "io.k8s.api.storage.v1.CSINode"),
    r("storage.k8s.io/v1", "VolumeAttachment", "io.k8s.api.storage.v1.VolumeAttachment"),
    r("policy/v1", "PodDisruptionBudget", "io.k8s.api.policy.v1.PodDisruptionBudget"),
    r("networking.k8s.io/v1", "Ingress", "io.k8s.api.networking.v1.Ingress"),
    r("networking.k8s.io/v1", "IngressClass", "io.k8s.api.networking.v1.IngressClass"),
    r("networking.k8s.io/v1", "NetworkPolicy", "io.k8s.api.networking.v1.NetworkPolicy"),
    r("networking.k8s.io/v1", "ServiceCIDR", "io.k8s.api.networking.v1.ServiceCIDR"),
    r("autoscaling/v1", "Scale", "io.k8s.api.autoscaling.v1.Scale"),
    r("autoscaling/v1", "HorizontalPodAutoscaler", "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"),
    r("autoscaling/v2", "HorizontalPodAutoscaler", "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"),
    r(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
    ),
    r(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
    ),
    r(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy",
    ),
    r(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding",
    ),
    r("flowcontrol.apiserver.k8s.io/v1", "FlowSchema", "io.k8s.api.flowcontrol.v1.FlowSchema"),
    r(
        "flowcontrol.apiserver.k8s.io/v1",
        "PriorityLevelConfiguration",
        "io.k8s.api.flowcontrol.v1.PriorityLevelConfiguration",
    ),
    r("apiregistration.k8s.io/v1", "APIService", "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService"),
    r("rbac.authorization.k8s.io/v1", "Role", "io.k8s.api.rbac.v1.Role"),
    r("rbac.authorization.k8s.io/v1", "ClusterRole", "io.k8s.api.rbac.v1.ClusterRole"),
    r("rbac.authorization.k8s.io/v1", "RoleBinding", "io.k8s.api.rbac.v1.RoleBinding"),
    r("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "io.k8s.api.rbac.v1.ClusterRoleBinding"),
    r("scheduling.k8s.io/v1", "PriorityClass", "io.k8s.api.scheduling.v1.PriorityClass"),
    r("node.k8s.io/v1", "RuntimeClass", "io.k8s.api.node.v1.RuntimeClass"),
    r("certificates.k8s.io/v1", "CertificateSigningRequest", "io.k8s.api.certificates.v1.CertificateSigningRequest"),
    r(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_roots_required_by_the_contract() {
        let required = [
            ("v1", "Pod"),
            ("v1", "PodTemplate"),
            ("v1", "Service"),
            ("v1", "Endpoints"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "ServiceAccount"),
            ("v1", "Namespace"),
            ("v1", "Node"),
            ("v1", "Event"),
            ("v1", "PersistentVolume"),
            ("v1", "PersistentVolumeClaim"),
            ("v1", "ResourceQuota"),
            ("v1", "LimitRange"),
            ("v1", "ReplicationController"),
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("apps/v1", "ControllerRevision"),
            ("batch/v1", "Job"),
            ("batch/v1", "CronJob"),
            ("coordination.k8s.io/v1", "Lease"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("events.k8s.io/v1", "Event"),
            ("storage.k8s.io/v1", "StorageClass"),
            ("policy/v1", "PodDisruptionBudget"),
            ("networking.k8s.io/v1", "Ingress"),
            ("networking.k8s.io/v1", "IngressClass"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("autoscaling/v1", "Scale"),
        ];
        for (api_version, kind) in required {
            let ty = root_type(api_version, kind);
            assert!(ty.is_some(), "no root type for {api_version} {kind}");
            let ty = ty.unwrap_or_default();
            assert_eq!(
                field(ty, "metadata").and_then(|m| m.type_name),
                Some(OBJECT_META),
                "{ty} must reach ObjectMeta"
            );
        }
        assert_eq!(root_type("stable.example.com/v1", "CronTab"), None);
        assert_eq!(root_type("v1", "Deployment"), None);
    }

    #[test]
    fn meta_table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for ty in types() {
            assert!(names.insert(ty.name), "type {} listed twice", ty.name);
            let mut fields = std::collections::HashSet::new();
            for fld in ty.fields {
                assert!(fields.insert(fld.name), "{}.{} listed twice", ty.name, fld.name);
                let m = fld.meta;
                if m.strategy.is_some_and(PatchStrategy::merges_lists) {
                    assert!(m.list_type.is_some(), "{}.{}: merge list without list type", ty.name, fld.name);
                    // Merging objects needs a key; merging primitives must not have one.
                    assert_eq!(m.merge_key.is_some(), m.type_name.is_some(), "{}.{}", ty.name, fld.name);
                }
                if m.list_type == Some(ListType::Map) {
                    assert!(!m.map_keys.is_empty(), "{}.{}: map list without keys", ty.name, fld.name);
                    if let Some(key) = m.merge_key {
                        assert!(m.map_keys.contains(&key), "{}.{}", ty.name, fld.name);
                    }
                } else {
                    assert!(m.map_keys.is_empty(), "{}.{}", ty.name, fld.name);
                }
            }
        }
        for root in roots() {
            assert!(type_meta(root.type_name).is_some(), "root {} has no type entry", root.type_name);
        }
    }

    #[test]
    fn meta_pod_spec_matches_upstream_tags() {
        // (type, field, strategy, merge key, list type, map keys) from k8s.io/api struct tags.
        let pod_spec = "io.k8s.api.core.v1.PodSpec";
        let container = "io.k8s.api.core.v1.Container";
        type Expected = (
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            &'static [&'static str],
        );
        let cases: &[Expected] = &[
            (pod_spec, "containers", Some("merge"), Some("name"), Some("map"), &["name"]),
            (pod_spec, "initContainers", Some("merge"), Some("name"), Some("map"), &["name"]),
            (pod_spec, "ephemeralContainers", Some("merge"), Some("name"), Some("map"), &["name"]),
            (pod_spec, "volumes", Some("merge,retainKeys"), Some("name"), Some("map"), &["name"]),
            (pod_spec, "imagePullSecrets", Some("merge"), Some("name"), Some("map"), &["name"]),
            (pod_spec, "hostAliases", Some("merge"), Some("ip"), Some("map"), &["ip"]),
            (
                pod_spec,
                "topologySpreadConstraints",
                Some("merge"),
                Some("topologyKey"),
                Some("map"),
                &["topologyKey", "whenUnsatisfiable"],
            ),
            (pod_spec, "schedulingGates", Some("merge"), Some("name"), Some("map"), &["name"]),
            (pod_spec, "resourceClaims", Some("merge,retainKeys"), Some("name"), Some("map"), &["name"]),
            (pod_spec, "tolerations", None, None, Some("atomic"), &[]),
            (container, "ports", Some("merge"), Some("containerPort"), Some("map"), &["containerPort", "protocol"]),
            (container, "env", Some("merge"), Some("name"), Some("map"), &["name"]),
            (container, "envFrom", None, None, Some("atomic"), &[]),
            (container, "volumeMounts", Some("merge"), Some("mountPath"), Some("map"), &["mountPath"]),
            (container, "volumeDevices", Some("merge"), Some("devicePath"), Some("map"), &["devicePath"]),
            (container, "args", None, None, Some("atomic"), &[]),
            (
                "io.k8s.api.core.v1.ServiceSpec",
                "ports",
                Some("merge"),
                Some("port"),
                Some("map"),
                &["port", "protocol"],
            ),
            ("io.k8s.api.core.v1.PodStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"]),
            ("io.k8s.api.core.v1.PodStatus", "hostIPs", Some("merge"), Some("ip"), Some("atomic"), &[]),
            ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", Some("merge"), None, Some("set"), &[]),
            ("io.k8s.api.batch.v1.JobStatus", "conditions", Some("merge"), Some("type"), Some("atomic"), &[]),
            (OBJECT_META, "ownerReferences", Some("merge"), Some("uid"), Some("map"), &["uid"]),
            (OBJECT_META, "finalizers", Some("merge"), None, Some("set"), &[]),
            (OBJECT_META, "managedFields", None, None, Some("atomic"), &[]),
            ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", Some("retainKeys"), None, None, &[]),
            ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", Some("replace"), None, None, &[]),
        ];
        for &(ty, name, strategy, key, list_type, map_keys) in cases {
            let m = field(ty, name);
            assert!(m.is_some(), "{ty}.{name} missing");
            let Some(m) = m else { continue };
            assert_eq!(m.strategy.map(PatchStrategy::as_str), strategy, "{ty}.{name} strategy");
            assert_eq!(m.merge_key, key, "{ty}.{name} merge key");
            assert_eq!(m.list_type.map(ListType::as_str), list_type, "{ty}.{name} list type");
            assert_eq!(m.map_keys, map_keys, "{ty}.{name} map keys");
        }
    }

    #[test]
    fn meta_workload_roots_reach_pod_containers() {
        // Walking from each root must reach the pod template's container ports where the
        // kind has one, so kubectl's container patches merge.
        let paths: &[(&str, &str, &[&str])] = &[
            ("apps/v1", "Deployment", &["spec", "template", "spec", "containers"]),
            ("apps/v1", "StatefulSet", &["spec", "template", "spec", "containers"]),
            ("apps/v1", "DaemonSet", &["spec", "template", "spec", "containers"]),
            ("apps/v1", "ReplicaSet", &["spec", "template", "spec", "containers"]),
            ("v1", "ReplicationController", &["spec", "template", "spec", "containers"]),
            ("v1", "PodTemplate", &["template", "spec", "containers"]),
            ("batch/v1", "Job", &["spec", "template", "spec", "containers"]),
            ("batch/v1", "CronJob", &["spec", "jobTemplate", "spec", "template", "spec", "containers"]),
            ("v1", "Pod", &["spec", "containers"]),
        ];
        for &(api_version, kind, path) in paths {
            let mut ty = root_type(api_version, kind);
            for step in path {
                ty = ty.and_then(|t| field(t, step)).and_then(|m| m.type_name);
            }
            assert_eq!(ty, Some("io.k8s.api.core.v1.Container"), "{api_version} {kind}");
        }
    }
}
