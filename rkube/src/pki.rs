//! The cluster's certificates and kubeconfigs, issued from the CA the apiserver uses
//! (`component_base::tls::ensure_cert_dir` on the same cert dir, with the same serving names,
//! so the apiserver reuses everything instead of reissuing).

use std::net::IpAddr;

use component_base::kubeconfig::{Kubeconfig, KubeconfigError};
use component_base::tls::{ensure_cert_dir, CertDir, TlsError};

use crate::state::{ClusterState, NodeState, Paths};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
}

/// The names rkube-apiserver puts in its serving certificate (see its `start`).
fn serving_names(state: &ClusterState) -> (Vec<String>, Vec<IpAddr>) {
    let dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ips = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::V4(state.plan.host_ip),
        IpAddr::V4(state.plan.kubernetes_service_ip),
    ];
    (dns, ips)
}

pub fn ensure_ca(state: &ClusterState, paths: &Paths) -> Result<CertDir, PkiError> {
    let (dns, ips) = serving_names(state);
    Ok(ensure_cert_dir(&paths.pki(), &dns, &ips)?)
}

fn kubeconfig(state: &ClusterState, certs: &CertDir, user: &str, groups: &[&str]) -> Result<Kubeconfig, PkiError> {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let cert = certs.ca.issue_client(user, &groups)?;
    Ok(Kubeconfig::single(&state.context_name(), &state.apiserver_url(), certs.ca_pem(), Some(&cert), None))
}

/// The admin kubeconfig (what users get) and the control-plane components' kubeconfigs.
pub fn control_plane(state: &ClusterState, paths: &Paths) -> Result<(), PkiError> {
    let certs = ensure_ca(state, paths)?;
    let admin =
        Kubeconfig::single(&state.context_name(), &state.apiserver_url(), certs.ca_pem(), Some(&certs.admin), None);
    admin.write(&paths.admin_kubeconfig())?;
    kubeconfig(state, &certs, "system:kube-scheduler", &[])?.write(&paths.kubeconfig_for("scheduler"))?;
    kubeconfig(state, &certs, "system:kube-controller-manager", &[])?
        .write(&paths.kubeconfig_for("controller-manager"))?;
    kubeconfig(state, &certs, "system:kube-dns", &[])?.write(&paths.kubeconfig_for("dns"))?;
    Ok(())
}

/// A node's kubelet serving certificate (node IP and name), its client identity
/// `system:node:<name>` in `system:nodes` (upstream's Node authorizer shape), and the proxy's.
pub fn node(state: &ClusterState, paths: &Paths, node: &NodeState) -> Result<(), PkiError> {
    let certs = ensure_ca(state, paths)?;
    let d = paths.node(&node.spec.name);
    let name = &node.spec.name;
    let serving = certs.ca.issue_serving(name, std::slice::from_ref(name), &[IpAddr::V4(node.ip)])?;
    serving.write(&d.join("pki/kubelet.crt"), &d.join("pki/kubelet.key"))?;
    kubeconfig(state, &certs, &format!("system:node:{name}"), &["system:nodes"])?
        .write(&d.join("kubelet.kubeconfig"))?;
    kubeconfig(state, &certs, "system:kube-proxy", &[])?.write(&d.join("proxy.kubeconfig"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample;

    #[test]
    fn issues_node_identities_from_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let st = sample("dev", 1);
        let paths = Paths::new(dir.path(), "dev");
        control_plane(&st, &paths).unwrap();
        node(&st, &paths, &st.nodes[0]).unwrap();
        let kc = Kubeconfig::load(&paths.node("dev-worker").join("kubelet.kubeconfig")).unwrap();
        assert_eq!(kc.current_context, "rkube-dev");
        assert_eq!(kc.cluster("rkube-dev").unwrap().server, "https://198.19.16.1:6443");
        let cert = kc.user("rkube-dev").unwrap().client_cert_key("rkube-dev").unwrap().unwrap();
        let (_, pem) = x509_subject(&cert.cert_pem);
        assert!(pem.contains("system:node:dev-worker") && pem.contains("system:nodes"), "{pem}");
        // the apiserver's own ensure_cert_dir accepts what rkube made: same CA on a second call
        let again = ensure_ca(&st, &paths).unwrap();
        let ca = std::fs::read_to_string(paths.pki().join("ca.crt")).unwrap();
        assert_eq!(again.ca_pem(), ca);
        let admin = Kubeconfig::load(&paths.admin_kubeconfig()).unwrap();
        assert!(admin.user("rkube-dev").unwrap().client_cert_key("rkube-dev").unwrap().is_some());
    }

    /// The subject as text, via openssl-free decoding: good enough to find the names.
    fn x509_subject(pem: &str) -> ((), String) {
        use base64::Engine as _;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        ((), String::from_utf8_lossy(&der).into_owned())
    }
}
