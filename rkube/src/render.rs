//! Everything rkube decides from a cluster record, as values: the files it writes (containerd
//! config, CNI conflist, registry mirrors, registry config), the commands that set up and tear
//! down the network, and the process table. Pure and unit-tested; `cluster` carries it out.

use std::path::{Path, PathBuf};

use crate::state::{ClusterState, NodeState, Paths};

/// The sandbox image every containerd is configured with (hack/images builds it).
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
pub const RUNC: &str = "/usr/sbin/runc";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// rkube-dns listens on the host's bridge address at the ports the kube-dns Service names.
pub const DNS_PORT: u16 = 53;
pub const DNS_METRICS_PORT: u16 = 9153;
/// Label every host iptables rule of a cluster carries, so delete finds them.
pub fn iptables_comment(state: &ClusterState) -> String {
    format!("rkube:{}", state.name)
}

pub fn containerd_config(state: &ClusterState, paths: &Paths, node: &NodeState) -> String {
    let d = paths.node(&node.spec.name);
    let d = d.display();
    let cgroup = state.cgroup(&node.spec.name);
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0

[cgroup]
  # containerd and the shims it forks live in the node's cgroup subtree, so delete can kill
  # everything of the node from there
  path = "/{cgroup}/containerd"

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  # root here lacks CAP_SYS_RESOURCE: negative oom_score_adj values fail in runc
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{d}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#
    )
}

/// bridge + host-local on the node's pod /24 (IPAM state kept per node), portmap for hostPorts.
/// No ipMasq: the bridge plugin would SNAT pod traffic to other nodes.
pub fn cni_conflist(paths: &Paths, node: &NodeState) -> String {
    let ipam = paths.node(&node.spec.name).join("cni-ipam");
    let doc = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "rkube",
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam,
                    "ranges": [[{ "subnet": node.pod_cidr.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// containerd 1.6 ignores a hosts.toml without a `[host]` table and then pulls from the
/// internet; `server` pointing at the local registry as well means there is no fallback.
pub fn hosts_toml(registry: &str) -> String {
    format!(
        "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

pub fn registry_config(state: &ClusterState, paths: &Paths) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
        paths.registry().join("data").display(),
        state.registry_addr()
    )
}

/// Where a reference lives in the cluster registry: containerd asks the mirror for the path
/// without the upstream host (`/v2/library/busybox/...?ns=docker.io`).
pub fn registry_path(reference: &str) -> String {
    let (host, rest) = split_host(reference);
    let rest = if host == "docker.io" && !rest.contains('/') { format!("library/{rest}") } else { rest.to_owned() };
    let has_tag = rest.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@'));
    if has_tag {
        rest
    } else {
        format!("{rest}:latest")
    }
}

/// The upstream host of a reference, docker.io when there is none (containerd's normalisation).
pub fn split_host(reference: &str) -> (&str, &str) {
    match reference.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => (first, rest),
        _ => ("docker.io", reference),
    }
}

/// Network commands, in order. Each is an argv; `ignore_errors` says whether a failure is
/// expected (deleting what may already be gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub ignore_errors: bool,
}

fn cmd(args: &[&str]) -> Cmd {
    Cmd { argv: args.iter().map(|s| s.to_string()).collect(), ignore_errors: false }
}

fn cmd_ignore(args: &[&str]) -> Cmd {
    Cmd { ignore_errors: true, ..cmd(args) }
}

/// The cluster's bridge with the host address and the blackhole routes.
pub fn bridge_up(state: &ClusterState) -> Vec<Cmd> {
    let p = &state.plan;
    let br = p.bridge.as_str();
    let host = format!("{}/{}", p.host_ip, p.node_network.prefix());
    let mut v = vec![
        cmd(&["ip", "link", "add", br, "type", "bridge"]),
        cmd(&["ip", "addr", "add", &host, "dev", br]),
        cmd(&["ip", "link", "set", br, "up"]),
    ];
    for net in &p.blackhole {
        v.push(cmd(&["ip", "route", "replace", "blackhole", &net.to_string()]));
    }
    v
}

/// A node: netns, veth onto the bridge, address, forwarding, and host-gw routes both ways
/// (the node to every other node's pods, the host to this node's pods).
pub fn node_net_up(state: &ClusterState, node: &NodeState) -> Vec<Cmd> {
    let ns = state.netns(&node.spec.name);
    let veth = state.veth(node);
    let br = state.plan.bridge.as_str();
    let addr = format!("{}/{}", node.ip, state.plan.node_network.prefix());
    let mut v = vec![
        cmd(&["ip", "netns", "add", &ns]),
        // A namespace deleted a moment ago (a crash, or a reboot simulated by killing everything)
        // is torn down by the kernel asynchronously; until then its veth's host end still holds
        // the name. Deleting that end destroys the pair at once.
        cmd_ignore(&["ip", "link", "del", &veth]),
        cmd(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]),
        cmd(&["ip", "link", "set", &veth, "master", br, "up"]),
        cmd(&["ip", "-n", &ns, "link", "set", "lo", "up"]),
        cmd(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]),
        cmd(&["ip", "-n", &ns, "link", "set", "eth0", "up"]),
        cmd(&["ip", "netns", "exec", &ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]),
        // per netns; kube-proxy's DNAT for same-node endpoints needs bridged traffic in iptables
        cmd_ignore(&["ip", "netns", "exec", &ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]),
        // the node itself reaches Service VIPs (OUTPUT-chain DNAT happens after routing)
        cmd(&["ip", "-n", &ns, "route", "replace", &state.plan.service_subnet.to_string(), "dev", "eth0"]),
        cmd(&["ip", "route", "replace", &node.pod_cidr.to_string(), "via", &node.ip.to_string(), "dev", br]),
    ];
    for other in state.nodes.iter().filter(|o| o.spec.name != node.spec.name) {
        let (dst, via) = (other.pod_cidr.to_string(), other.ip.to_string());
        v.push(cmd(&["ip", "-n", &ns, "route", "replace", &dst, "via", &via, "dev", "eth0"]));
    }
    v
}

/// Routes to a newly added node's pods on the nodes that already exist.
pub fn routes_to(state: &ClusterState, node: &NodeState) -> Vec<Cmd> {
    state
        .nodes
        .iter()
        .filter(|o| o.spec.name != node.spec.name)
        .map(|o| {
            let ns = state.netns(&o.spec.name);
            cmd_ignore(&["ip", "-n", &ns, "route", "replace", &node.pod_cidr.to_string(), "via", &node.ip.to_string()])
        })
        .collect()
}

/// Removing a node's netns takes its veth pair, pod bridge, pod veths and iptables rules along.
pub fn node_net_down(state: &ClusterState, node: &NodeState) -> Vec<Cmd> {
    let mut v = vec![
        cmd_ignore(&["ip", "netns", "del", &state.netns(&node.spec.name)]),
        cmd_ignore(&["ip", "link", "del", &state.veth(node)]),
        cmd_ignore(&["ip", "route", "del", &node.pod_cidr.to_string()]),
    ];
    for other in state.nodes.iter().filter(|o| o.spec.name != node.spec.name) {
        let ns = state.netns(&other.spec.name);
        v.push(cmd_ignore(&["ip", "-n", &ns, "route", "del", &node.pod_cidr.to_string()]));
    }
    v
}

pub fn bridge_down(state: &ClusterState) -> Vec<Cmd> {
    let mut v = vec![cmd_ignore(&["ip", "link", "del", &state.plan.bridge])];
    for net in &state.plan.blackhole {
        v.push(cmd_ignore(&["ip", "route", "del", "blackhole", &net.to_string()]));
    }
    v
}

/// extraPortMappings: the host's bridge address and port forward to the node's port.
pub fn port_mapping_rules(state: &ClusterState) -> Vec<Vec<String>> {
    let comment = iptables_comment(state);
    let mut rules = Vec::new();
    for node in &state.nodes {
        for m in &node.spec.extra_port_mappings {
            for chain in ["PREROUTING", "OUTPUT"] {
                let rule = [
                    chain,
                    "-d",
                    &state.plan.host_ip.to_string(),
                    "-p",
                    m.protocol.iptables(),
                    "--dport",
                    &m.host_port.to_string(),
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &format!("{}:{}", node.ip, m.container_port),
                ];
                rules.push(rule.iter().map(|s| s.to_string()).collect());
            }
        }
    }
    rules
}

/// The `kube-system/kube-dns` Service (upstream's name, labels and ports, the well-known
/// ClusterIP, no selector) and the EndpointSlice and Endpoints that point it at rkube-dns on
/// the host's bridge address; written at every start, so they follow the record.
pub fn kube_dns_objects(state: &ClusterState) -> [serde_json::Value; 3] {
    let host = state.plan.host_ip.to_string();
    let labels = serde_json::json!({
        "k8s-app": "kube-dns",
        "kubernetes.io/cluster-service": "true",
        "kubernetes.io/name": "CoreDNS",
    });
    let service = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "clusterIP": state.plan.cluster_dns_ip.to_string(),
            "clusterIPs": [state.plan.cluster_dns_ip.to_string()],
            "ports": [
                {"name": "dns", "port": DNS_PORT, "protocol": "UDP", "targetPort": DNS_PORT},
                {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP", "targetPort": DNS_PORT},
                {"name": "metrics", "port": DNS_METRICS_PORT, "protocol": "TCP", "targetPort": DNS_METRICS_PORT},
            ],
        },
    });
    let mut slice_labels = labels.clone();
    slice_labels["kubernetes.io/service-name"] = "kube-dns".into();
    // not the EndpointSlice controller's: it leaves slices other managers own alone
    slice_labels["endpointslice.kubernetes.io/managed-by"] = "rkube-cluster-tool".into();
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-rkube", "namespace": "kube-system", "labels": slice_labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP"},
            {"name": "metrics", "port": DNS_METRICS_PORT, "protocol": "TCP"},
        ],
    });
    let endpoints = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "subsets": [{
            "addresses": [{"ip": host}],
            "ports": [
                {"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
                {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP"},
                {"name": "metrics", "port": DNS_METRICS_PORT, "protocol": "TCP"},
            ],
        }],
    });
    [service, slice, endpoints]
}

/// Which side of the bridge a process runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Host,
    /// Inside the node's network namespace and its persistent mount and UTS namespaces.
    Node {
        netns: String,
        mnt: PathBuf,
        uts: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Etcd,
    Registry,
    Apiserver,
    Scheduler,
    ControllerManager,
    Containerd,
    Kubelet,
    Proxy,
    Dns,
}

impl Component {
    pub const ALL: [Component; 9] = [
        Component::Etcd,
        Component::Registry,
        Component::Apiserver,
        Component::Scheduler,
        Component::ControllerManager,
        Component::Containerd,
        Component::Kubelet,
        Component::Proxy,
        Component::Dns,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::Registry => "registry",
            Component::Apiserver => "apiserver",
            Component::Scheduler => "scheduler",
            Component::ControllerManager => "controller-manager",
            Component::Containerd => "containerd",
            Component::Kubelet => "kubelet",
            Component::Proxy => "proxy",
            Component::Dns => "dns",
        }
    }

    pub fn per_node(&self) -> bool {
        matches!(self, Component::Containerd | Component::Kubelet | Component::Proxy)
    }

    /// The executable's name, which `/proc/<pid>/comm` starts with (so a pid file left by a
    /// reboot never makes rkube kill an unrelated process).
    pub fn program(&self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::Registry => "docker-registry",
            Component::Apiserver => "rkube-apiserver",
            Component::Scheduler => "rkube-scheduler",
            Component::ControllerManager => "rkube-controller-manager",
            Component::Containerd => "containerd",
            Component::Kubelet => "rkube-kubelet",
            Component::Proxy => "rkube-proxy",
            Component::Dns => "rkube-dns",
        }
    }

    pub fn parse(s: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == s || c.program() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    pub component: Component,
    pub node: Option<String>,
    pub argv: Vec<String>,
    pub place: Place,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The default StorageClass `standard`, as kind's: local-path volumes made on the node the
/// first pod using a claim is scheduled to, deleted with the claim.
pub fn default_storage_class() -> k8s_openapi::api::storage::v1::StorageClass {
    k8s_openapi::api::storage::v1::StorageClass {
        metadata: kube::api::ObjectMeta {
            name: Some("standard".to_owned()),
            annotations: Some(
                [("storageclass.kubernetes.io/is-default-class".to_owned(), "true".to_owned())].into_iter().collect(),
            ),
            ..Default::default()
        },
        provisioner: "rancher.io/local-path".to_owned(),
        volume_binding_mode: Some("WaitForFirstConsumer".to_owned()),
        reclaim_policy: Some("Delete".to_owned()),
        ..Default::default()
    }
}

/// The control-plane processes in start order.
pub fn control_plane(state: &ClusterState, paths: &Paths) -> Vec<ProcSpec> {
    let bin = |name: &str| s(&state.bin_dir.join(name));
    let client = format!("http://127.0.0.1:{}", state.etcd_client_port);
    let peer = format!("http://127.0.0.1:{}", state.etcd_peer_port);
    let mut out = vec![
        (
            Component::Etcd,
            vec![
                "etcd".to_owned(),
                "--name".to_owned(),
                state.name.clone(),
                "--data-dir".to_owned(),
                s(&paths.etcd()),
                "--listen-client-urls".to_owned(),
                client.clone(),
                "--advertise-client-urls".to_owned(),
                client.clone(),
                "--listen-peer-urls".to_owned(),
                peer.clone(),
                "--initial-advertise-peer-urls".to_owned(),
                peer.clone(),
                "--initial-cluster".to_owned(),
                format!("{}={peer}", state.name),
                "--logger".to_owned(),
                "zap".to_owned(),
                "--log-level".to_owned(),
                "warn".to_owned(),
            ],
        ),
        (
            Component::Registry,
            vec!["docker-registry".to_owned(), "serve".to_owned(), s(&paths.registry().join("config.yml"))],
        ),
        (
            Component::Apiserver,
            vec![
                bin("rkube-apiserver"),
                "--etcd-servers".to_owned(),
                client,
                "--cert-dir".to_owned(),
                s(&paths.pki()),
                "--secure-port".to_owned(),
                state.plan.apiserver_port.to_string(),
                "--bind-address".to_owned(),
                state.plan.host_ip.to_string(),
                "--advertise-address".to_owned(),
                state.plan.host_ip.to_string(),
                "--service-cluster-ip-range".to_owned(),
                state.plan.service_subnet.to_string(),
            ],
        ),
    ];
    if state.components.scheduler {
        out.push((
            Component::Scheduler,
            vec![
                bin("rkube-scheduler"),
                "--kubeconfig".to_owned(),
                s(&paths.kubeconfig_for("scheduler")),
                "--port".to_owned(),
                state.scheduler_port.to_string(),
                // one scheduler per cluster: after a restart it must not wait out the old lease
                "--leader-elect=false".to_owned(),
            ],
        ));
    }
    if state.components.controller_manager {
        out.push((
            Component::ControllerManager,
            vec![
                bin("rkube-controller-manager"),
                "--kubeconfig".to_owned(),
                s(&paths.kubeconfig_for("controller-manager")),
                "--bind-address".to_owned(),
                format!("127.0.0.1:{}", state.controller_manager_port),
                "--leader-elect=false".to_owned(),
                // the default StorageClass's provisioner, its volumes under the state dir
                "--controllers=*,local-path-provisioner".to_owned(),
                "--local-path-root".to_owned(),
                s(&paths.local_path()),
            ]
            .into_iter()
            .chain(state.shared_storage.then(|| "--local-path-shared".to_owned()))
            .collect(),
        ));
    }
    if state.components.dns {
        // On the host side, at the bridge address: every node reaches it directly, and pods
        // through the kube-dns Service whose endpoint it is (see `kube_dns_objects`).
        out.push((
            Component::Dns,
            vec![
                bin("rkube-dns"),
                "--kubeconfig".to_owned(),
                s(&paths.kubeconfig_for("dns")),
                "--cluster-domain".to_owned(),
                CLUSTER_DOMAIN.to_owned(),
                "--listen-address".to_owned(),
                format!("{}:{DNS_PORT}", state.plan.host_ip),
                "--metrics-bind-address".to_owned(),
                format!("{}:{DNS_METRICS_PORT}", state.plan.host_ip),
            ],
        ));
    }
    out.into_iter()
        .map(|(component, argv)| ProcSpec {
            argv: with_feature_gates(state, component, argv),
            component,
            node: None,
            place: Place::Host,
            pid_file: paths.pid_file(component.name(), None),
            log_file: paths.log_file(component.name(), None),
        })
        .collect()
}

/// Adds the cluster's `--feature-gates` to the Kubernetes components (kind passes them to
/// all of them); etcd, the registry, containerd and DNS have none.
fn with_feature_gates(state: &ClusterState, component: Component, mut argv: Vec<String>) -> Vec<String> {
    let takes_gates = matches!(
        component,
        Component::Apiserver
            | Component::Scheduler
            | Component::ControllerManager
            | Component::Kubelet
            | Component::Proxy
    );
    if takes_gates && !state.feature_gates.is_empty() {
        argv.push(format!("--feature-gates={}", state.feature_gates));
    }
    argv
}

/// One node's processes in start order.
pub fn node_processes(state: &ClusterState, paths: &Paths, node: &NodeState) -> Vec<ProcSpec> {
    let n = node.spec.name.as_str();
    let d = paths.node(n);
    let bin = |name: &str| s(&state.bin_dir.join(name));
    let place = Place::Node { netns: state.netns(n), mnt: paths.mnt_ns(n), uts: paths.uts_ns(n) };
    let mut out =
        vec![(Component::Containerd, vec!["containerd".to_owned(), "--config".to_owned(), s(&d.join("config.toml"))])];
    if state.components.kubelet {
        let mut argv = vec![
            bin("rkube-kubelet"),
            "--kubeconfig".to_owned(),
            s(&d.join("kubelet.kubeconfig")),
            "--hostname-override".to_owned(),
            n.to_owned(),
            "--node-ip".to_owned(),
            node.ip.to_string(),
            "--container-runtime-endpoint".to_owned(),
            format!("unix://{}", s(&paths.containerd_sock(n))),
            "--port".to_owned(),
            "10250".to_owned(),
            "--address".to_owned(),
            node.ip.to_string(),
            "--tls-cert-file".to_owned(),
            s(&d.join("pki/kubelet.crt")),
            "--tls-private-key-file".to_owned(),
            s(&d.join("pki/kubelet.key")),
            "--client-ca-file".to_owned(),
            s(&paths.pki().join("ca.crt")),
            "--pod-cidr".to_owned(),
            node.pod_cidr.to_string(),
            "--cluster-dns".to_owned(),
            state.plan.cluster_dns_ip.to_string(),
            "--cluster-domain".to_owned(),
            CLUSTER_DOMAIN.to_owned(),
            "--root-dir".to_owned(),
            s(&d.join("kubelet")),
            "--pod-logs-dir".to_owned(),
            s(&d.join("pod-logs")),
            "--cgroup-root".to_owned(),
            format!("/{}", state.cgroup(n)),
            // As kind does: the nodes share the host's disk, so disk-based thresholds would
            // put every node under DiskPressure together on a fullish dev machine.
            "--eviction-hard".to_owned(),
            "memory.available<100Mi,nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%".to_owned(),
        ];
        if !node.spec.labels.is_empty() {
            let labels: Vec<String> = node.spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            argv.extend(["--node-labels".to_owned(), labels.join(",")]);
        }
        if !node.spec.taints.is_empty() {
            argv.extend(["--register-with-taints".to_owned(), node.spec.taints.join(",")]);
        }
        out.push((Component::Kubelet, argv));
    }
    if state.components.proxy {
        out.push((
            Component::Proxy,
            vec![
                bin("rkube-proxy"),
                "--kubeconfig".to_owned(),
                s(&d.join("proxy.kubeconfig")),
                "--hostname-override".to_owned(),
                n.to_owned(),
                "--cluster-cidr".to_owned(),
                state.plan.pod_subnet.to_string(),
            ],
        ));
    }
    out.into_iter()
        .map(|(component, argv)| ProcSpec {
            argv: with_feature_gates(state, component, argv),
            component,
            node: Some(n.to_owned()),
            place: place.clone(),
            pid_file: paths.pid_file(component.name(), Some(n)),
            log_file: paths.log_file(component.name(), Some(n)),
        })
        .collect()
}

/// The full argv to exec: `setsid` (own session, so the process outlives rkube and a Ctrl-C
/// in rkube's terminal) and, for node processes, `nsenter` into the node's namespaces. Both
/// exec, so the pid rkube records is the daemon's own.
pub fn launch_argv(spec: &ProcSpec) -> Vec<String> {
    let mut v = vec!["setsid".to_owned()];
    if let Place::Node { netns, mnt, uts } = &spec.place {
        v.push("nsenter".to_owned());
        v.push(format!("--net=/run/netns/{netns}"));
        v.push(format!("--mount={}", s(mnt)));
        v.push(format!("--uts={}", s(uts)));
        v.push("--".to_owned());
    }
    v.extend(spec.argv.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample;

    fn argv(c: &Cmd) -> String {
        c.argv.join(" ")
    }

    #[test]
    fn registry_paths_follow_containerd_mirror_requests() {
        assert_eq!(registry_path("nginx"), "library/nginx:latest");
        assert_eq!(registry_path("busybox:1.36"), "library/busybox:1.36");
        assert_eq!(registry_path("docker.io/library/nginx:1.25"), "library/nginx:1.25");
        assert_eq!(registry_path("someone/app:v1"), "someone/app:v1");
        assert_eq!(registry_path("registry.k8s.io/pause:3.10"), "pause:3.10");
        assert_eq!(registry_path("quay.io/org/img@sha256:ab"), "org/img@sha256:ab");
        assert_eq!(registry_path("localhost:5000/x"), "x:latest");
        assert_eq!(split_host("registry.k8s.io/pause:3.10"), ("registry.k8s.io", "pause:3.10"));
    }

    #[test]
    fn node_network_commands() {
        let st = sample("dev", 3);
        let cmds: Vec<String> = node_net_up(&st, &st.nodes[1]).iter().map(argv).collect();
        assert_eq!(cmds[0], "ip netns add rkube-dev-dev-worker2");
        assert_eq!(cmds[1], "ip link del rk1n1");
        assert_eq!(cmds[2], "ip link add rk1n1 type veth peer name eth0 netns rkube-dev-dev-worker2");
        assert_eq!(cmds[3], "ip link set rk1n1 master rkube1 up");
        assert!(cmds.contains(&"ip -n rkube-dev-dev-worker2 addr add 198.19.16.3/24 dev eth0".to_owned()));
        assert!(cmds.contains(&"ip route replace 198.18.17.0/24 via 198.19.16.3 dev rkube1".to_owned()));
        assert!(cmds.contains(&"ip -n rkube-dev-dev-worker2 route replace 198.19.17.0/24 dev eth0".to_owned()));
        // host-gw to both other nodes' pods
        assert!(cmds
            .contains(&"ip -n rkube-dev-dev-worker2 route replace 198.18.16.0/24 via 198.19.16.2 dev eth0".to_owned()));
        assert!(cmds
            .contains(&"ip -n rkube-dev-dev-worker2 route replace 198.18.18.0/24 via 198.19.16.4 dev eth0".to_owned()));
        let br: Vec<String> = bridge_up(&st).iter().map(argv).collect();
        assert_eq!(
            br,
            [
                "ip link add rkube1 type bridge",
                "ip addr add 198.19.16.1/24 dev rkube1",
                "ip link set rkube1 up",
                "ip route replace blackhole 198.19.16.0/20",
                "ip route replace blackhole 198.18.16.0/20",
            ]
        );
        assert!(bridge_down(&st).iter().all(|c| c.ignore_errors));
        assert!(node_net_down(&st, &st.nodes[0]).iter().all(|c| c.ignore_errors));
    }

    #[test]
    fn containerd_files() {
        let st = sample("dev", 1);
        let paths = Paths::new(Path::new("/var/lib/rkube/clusters"), "dev");
        let node = &st.nodes[0];
        let cfg = containerd_config(&st, &paths, node);
        for want in [
            "root = \"/var/lib/rkube/clusters/dev/nodes/dev-worker/root\"",
            "path = \"/rkube-dev-dev-worker/containerd\"",
            "restrict_oom_score_adj = true",
            "Root = \"/var/lib/rkube/clusters/dev/nodes/dev-worker/runc\"",
            "sandbox_image = \"registry.k8s.io/pause:3.10\"",
            "config_path = \"/var/lib/rkube/clusters/dev/nodes/dev-worker/certs.d\"",
            "netns_mounts_under_state_dir = true",
        ] {
            assert!(cfg.contains(want), "{want} missing");
        }
        let conf: serde_json::Value = serde_json::from_str(&cni_conflist(&paths, node)).unwrap();
        assert_eq!(conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "198.18.16.0/24");
        assert_eq!(conf["plugins"][0]["ipMasq"], false);
        assert_eq!(conf["plugins"][1]["type"], "portmap");
        assert_eq!(
            hosts_toml("198.19.16.1:5000"),
            "server = \"http://198.19.16.1:5000\"\n\n[host.\"http://198.19.16.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
    }

    #[test]
    fn process_table() {
        let mut st = sample("dev", 2);
        let paths = Paths::new(Path::new("/var/lib/rkube/clusters"), "dev");
        let cp: Vec<Component> = control_plane(&st, &paths).iter().map(|p| p.component).collect();
        assert_eq!(
            cp,
            [
                Component::Etcd,
                Component::Registry,
                Component::Apiserver,
                Component::Scheduler,
                Component::ControllerManager,
                Component::Dns
            ]
        );
        let dns = control_plane(&st, &paths)[5].argv.join(" ");
        assert!(
            dns.ends_with(
                "--cluster-domain cluster.local --listen-address 198.19.16.1:53 --metrics-bind-address 198.19.16.1:9153"
            ),
            "{dns}"
        );
        let api = &control_plane(&st, &paths)[2];
        assert!(api.argv.join(" ").contains("--bind-address 198.19.16.1 --advertise-address 198.19.16.1"));
        assert!(api.argv.join(" ").contains("--service-cluster-ip-range 198.19.17.0/24"));
        let sched = control_plane(&st, &paths)[3].argv.join(" ");
        assert!(sched.ends_with("--port 40003 --leader-elect=false"), "{sched}");
        let cm = control_plane(&st, &paths)[4].argv.join(" ");
        assert!(
            cm.ends_with(
                "--bind-address 127.0.0.1:40004 --leader-elect=false --controllers=*,local-path-provisioner \
                 --local-path-root /var/lib/rkube/clusters/dev/local-path"
            ),
            "{cm}"
        );
        st.shared_storage = true;
        let cm = control_plane(&st, &paths)[4].argv.join(" ");
        assert!(cm.ends_with("--local-path-root /var/lib/rkube/clusters/dev/local-path --local-path-shared"), "{cm}");
        st.shared_storage = false;
        st.feature_gates = "MaxUnavailableStatefulSet=true".into();
        let gated: Vec<Component> = control_plane(&st, &paths)
            .iter()
            .chain(&node_processes(&st, &paths, &st.nodes[0]))
            .filter(|p| p.argv.last().map(String::as_str) == Some("--feature-gates=MaxUnavailableStatefulSet=true"))
            .map(|p| p.component)
            .collect();
        assert_eq!(
            gated,
            [
                Component::Apiserver,
                Component::Scheduler,
                Component::ControllerManager,
                Component::Kubelet,
                Component::Proxy
            ]
        );
        st.feature_gates.clear();
        let node = node_processes(&st, &paths, &st.nodes[0]);
        assert_eq!(
            node.iter().map(|p| p.component).collect::<Vec<_>>(),
            [Component::Containerd, Component::Kubelet, Component::Proxy]
        );
        let kubelet = node[1].argv.join(" ");
        let proxy = node[2].argv.join(" ");
        assert!(proxy.ends_with("--hostname-override dev-worker --cluster-cidr 198.18.16.0/20"), "{proxy}");
        assert!(kubelet.contains("--hostname-override dev-worker --node-ip 198.19.16.2"), "{kubelet}");
        assert!(kubelet.contains("--pod-cidr 198.18.16.0/24"));
        assert!(kubelet.contains("--cluster-dns 198.19.17.10"));
        assert!(kubelet.contains("--cgroup-root /rkube-dev-dev-worker"));
        let launch = launch_argv(&node[0]).join(" ");
        assert!(launch.starts_with(
            "setsid nsenter --net=/run/netns/rkube-dev-dev-worker --mount=/var/lib/rkube/clusters/dev/ns/dev-worker.mnt"
        ));
        // each node component is a switch
        st.components.kubelet = false;
        let node = node_processes(&st, &paths, &st.nodes[0]);
        assert_eq!(node.iter().map(|p| p.component).collect::<Vec<_>>(), [Component::Containerd, Component::Proxy]);
    }

    #[test]
    fn kube_dns_is_a_selectorless_service_at_the_tenth_address_pointing_at_the_host() {
        let st = sample("dev", 1);
        let [svc, slice, eps] = kube_dns_objects(&st);
        assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
        assert_eq!(svc["spec"]["clusterIP"], "198.19.17.10");
        assert!(svc["spec"].get("selector").is_none(), "no selector: the endpoints are ours");
        let ports: Vec<String> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{}/{}/{}", p["name"].as_str().unwrap(), p["port"], p["protocol"].as_str().unwrap()))
            .collect();
        assert_eq!(ports, ["dns/53/UDP", "dns-tcp/53/TCP", "metrics/9153/TCP"]);
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns");
        assert_ne!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(slice["endpoints"][0]["addresses"][0], "198.19.16.1");
        assert_eq!(eps["subsets"][0]["addresses"][0]["ip"], "198.19.16.1");
        assert_eq!(eps["subsets"][0]["ports"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn port_mappings_become_dnat_rules() {
        let mut st = sample("dev", 1);
        st.nodes[0].spec.extra_port_mappings = vec![crate::config::PortMapping {
            container_port: 30080,
            host_port: 8080,
            protocol: crate::config::Protocol::Tcp,
        }];
        let rules = port_mapping_rules(&st);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].join(" "),
            "PREROUTING -d 198.19.16.1 -p tcp --dport 8080 -m comment --comment rkube:dev -j DNAT --to-destination 198.19.16.2:30080"
        );
    }
}
