//! An apiserver for other crates' integration tests, started in-process on a real etcd with a
//! unique key prefix, a port of its own and a throwaway cert dir (whose `admin.kubeconfig` the
//! test's clients use). Only built with the `testing` feature, which only dev-dependencies
//! enable.

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::{start, Options, Running};

pub struct TestApiserver {
    pub running: Running,
    pub cert_dir: tempfile::TempDir,
    pub cancel: CancellationToken,
}

impl TestApiserver {
    pub async fn start(etcd_endpoint: &str) -> Self {
        Self::start_with_args(etcd_endpoint, &[]).await
    }

    /// Like [`TestApiserver::start`], with more flags, e.g. `["--bind-address", "198.18.0.1"]`
    /// for a server that network namespaces reach (its serving certificate then covers that
    /// address too).
    pub async fn start_with_args(etcd_endpoint: &str, extra: &[&str]) -> Self {
        let cert_dir = tempfile::tempdir().expect("a temp dir");
        let prefix = format!("/registry-{}", uuid::Uuid::new_v4());
        let mut args = vec![
            "rkube-apiserver",
            "--etcd-servers",
            etcd_endpoint,
            "--etcd-prefix",
            &prefix,
            "--secure-port",
            "0",
            "--cert-dir",
            cert_dir.path().to_str().expect("a UTF-8 temp path"),
        ];
        // As upstream's integration tests do: without a controller-manager nothing creates the
        // `default` service accounts that the ServiceAccount admission plugin requires of pods.
        if !extra.iter().any(|a| a.contains("-admission-plugins")) {
            args.push("--disable-admission-plugins=ServiceAccount");
        }
        args.extend_from_slice(extra);
        let opts = Options::parse_from(args);
        let cancel = CancellationToken::new();
        let running = start(opts, cancel.clone()).await.expect("the apiserver starts");
        Self { running, cert_dir, cancel }
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.cert_dir.path().join("admin.kubeconfig")
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}
