//! Kubeconfig files (`apiVersion: v1`, `kind: Config`): building one for a new cluster,
//! reading and writing them, and merging into a user's existing file the way kind does for
//! `kind-<name>`. Every type keeps the fields it does not model in `extra`, so a file
//! written back loses nothing (exec plugins, extensions, auth-provider, ...).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml::Mapping;

use crate::tls::{self, CertKey};

/// Everything that can go wrong reading or writing a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("serializing kubeconfig")]
    Serialize(#[source] serde_yaml::Error),
    #[error("decoding {field} of {name:?}")]
    Decode {
        field: &'static str,
        name: String,
        #[source]
        source: base64::DecodeError,
    },
}

/// A kubeconfig file. Field order follows what kubectl writes (keys sorted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default = "default_api_version")]
    pub api_version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub clusters: Vec<NamedCluster>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default, deserialize_with = "null_as_default")]
    pub current_context: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub preferences: Mapping,
    #[serde(default, deserialize_with = "null_as_default")]
    pub users: Vec<NamedAuthInfo>,
    /// Fields this type does not model (`extensions`, ...), kept as read.
    #[serde(flatten)]
    pub extra: Mapping,
}

/// `clusters[]`: a name and how to reach that cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cluster: Cluster,
    #[serde(flatten)]
    pub extra: Mapping,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    #[serde(default, deserialize_with = "null_as_default")]
    pub server: String,
    /// Base64 of the PEM CA bundle, as kubeconfig stores it; see [`Cluster::ca_pem`].
    #[serde(rename = "certificate-authority-data", default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(rename = "certificate-authority", default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(rename = "tls-server-name", default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// `contexts[]`: a name for a (cluster, user, namespace) triple.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub context: Context,
    #[serde(flatten)]
    pub extra: Mapping,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, deserialize_with = "null_as_default")]
    pub cluster: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// `users[]`: a name and the credentials presented as that user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedAuthInfo {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: AuthInfo,
    #[serde(flatten)]
    pub extra: Mapping,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthInfo {
    /// Base64 of the PEM client certificate; see [`AuthInfo::client_cert_key`].
    #[serde(rename = "client-certificate-data", default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// Base64 of the PEM client key.
    #[serde(rename = "client-key-data", default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(rename = "client-certificate", default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(rename = "client-key", default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Fields this type does not model (`exec`, `username`, `as`, ...), kept as read.
    #[serde(flatten)]
    pub extra: Mapping,
}

impl Default for Kubeconfig {
    fn default() -> Self {
        Kubeconfig {
            api_version: default_api_version(),
            clusters: Vec::new(),
            contexts: Vec::new(),
            current_context: String::new(),
            kind: default_kind(),
            preferences: Mapping::new(),
            users: Vec::new(),
            extra: Mapping::new(),
        }
    }
}

impl Kubeconfig {
    /// A config with one cluster, one user and one context, all called `name`, and that
    /// context current. Credentials: the client certificate and/or the bearer token given.
    pub fn single(
        name: &str,
        server: &str,
        ca_pem: &str,
        user_cert: Option<&CertKey>,
        token: Option<&str>,
    ) -> Kubeconfig {
        let cluster = Cluster {
            server: server.to_owned(),
            certificate_authority_data: Some(base64_encode(ca_pem)),
            ..Cluster::default()
        };
        let user = AuthInfo {
            client_certificate_data: user_cert.map(|c| base64_encode(&c.cert_pem)),
            client_key_data: user_cert.map(|c| base64_encode(&c.key_pem)),
            token: token.map(str::to_owned),
            ..AuthInfo::default()
        };
        let context = Context { cluster: name.to_owned(), user: name.to_owned(), ..Context::default() };
        Kubeconfig {
            clusters: vec![NamedCluster { name: name.to_owned(), cluster, extra: Mapping::new() }],
            contexts: vec![NamedContext { name: name.to_owned(), context, extra: Mapping::new() }],
            users: vec![NamedAuthInfo { name: name.to_owned(), user, extra: Mapping::new() }],
            current_context: name.to_owned(),
            ..Kubeconfig::default()
        }
    }

    /// Reads a kubeconfig; an empty file is an empty config.
    pub fn load(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let text =
            fs::read_to_string(path).map_err(|source| KubeconfigError::Read { path: path.to_path_buf(), source })?;
        Kubeconfig::from_yaml(&text).map_err(|source| KubeconfigError::Parse { path: path.to_path_buf(), source })
    }

    /// Like [`Kubeconfig::load`], but a missing file is an empty config (what kubectl does
    /// with a missing `~/.kube/config`).
    pub fn load_or_default(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        if path.exists() {
            Kubeconfig::load(path)
        } else {
            Ok(Kubeconfig::default())
        }
    }

    /// Parses kubeconfig YAML (or JSON); blank text is an empty config.
    pub fn from_yaml(text: &str) -> Result<Kubeconfig, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Kubeconfig::default());
        }
        serde_yaml::from_str(text)
    }

    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        serde_yaml::to_string(self).map_err(KubeconfigError::Serialize)
    }

    /// Writes the config with mode 0600, creating parent directories.
    /// Blocking: call from `spawn_blocking` in async code.
    pub fn write(&self, path: &Path) -> Result<(), KubeconfigError> {
        let yaml = self.to_yaml()?;
        tls::write_file_mode(path, yaml.as_bytes(), 0o600)
            .map_err(|source| KubeconfigError::Write { path: path.to_path_buf(), source })
    }

    /// Adds `other`'s clusters, contexts and users, replacing entries of the same name and
    /// keeping all others; with `make_current`, `other`'s current context becomes current.
    pub fn merge(&mut self, other: Kubeconfig, make_current: bool) {
        upsert(&mut self.clusters, other.clusters, |c| &c.name);
        upsert(&mut self.contexts, other.contexts, |c| &c.name);
        upsert(&mut self.users, other.users, |u| &u.name);
        if make_current && !other.current_context.is_empty() {
            self.current_context = other.current_context;
        }
    }

    /// Removes context `name` and the cluster and user it points at (unless another context
    /// still uses them); clears `current-context` if it was `name`. Returns whether the
    /// context existed.
    pub fn remove_context(&mut self, name: &str) -> bool {
        let Some(index) = self.contexts.iter().position(|c| c.name == name) else {
            return false;
        };
        let removed = self.contexts.remove(index);
        let cluster = &removed.context.cluster;
        if !self.contexts.iter().any(|c| &c.context.cluster == cluster) {
            self.clusters.retain(|c| &c.name != cluster);
        }
        let user = &removed.context.user;
        if !self.contexts.iter().any(|c| &c.context.user == user) {
            self.users.retain(|u| &u.name != user);
        }
        if self.current_context == name {
            self.current_context.clear();
        }
        true
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name).map(|c| &c.context)
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name).map(|c| &c.cluster)
    }

    pub fn user(&self, name: &str) -> Option<&AuthInfo> {
        self.users.iter().find(|u| u.name == name).map(|u| &u.user)
    }
}

impl Cluster {
    /// The PEM CA bundle from `certificate-authority-data`, if present.
    pub fn ca_pem(&self) -> Result<Option<String>, KubeconfigError> {
        decode_field(self.certificate_authority_data.as_deref(), "certificate-authority-data", &self.server)
    }
}

impl AuthInfo {
    /// The client certificate and key from `client-certificate-data` and `client-key-data`,
    /// when both are present.
    pub fn client_cert_key(&self, user_name: &str) -> Result<Option<CertKey>, KubeconfigError> {
        let cert = decode_field(self.client_certificate_data.as_deref(), "client-certificate-data", user_name)?;
        let key = decode_field(self.client_key_data.as_deref(), "client-key-data", user_name)?;
        Ok(cert.zip(key).map(|(cert_pem, key_pem)| CertKey { cert_pem, key_pem }))
    }
}

fn upsert<T>(into: &mut Vec<T>, from: Vec<T>, name: impl Fn(&T) -> &String) {
    for item in from {
        match into.iter().position(|existing| name(existing) == name(&item)) {
            Some(index) => into[index] = item,
            None => into.push(item),
        }
    }
}

fn base64_encode(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn decode_field(data: Option<&str>, field: &'static str, name: &str) -> Result<Option<String>, KubeconfigError> {
    let Some(data) = data else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|source| KubeconfigError::Decode { field, name: name.to_owned(), source })?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn default_api_version() -> String {
    "v1".to_owned()
}

fn default_kind() -> String {
    "Config".to_owned()
}

/// kubectl writes `clusters: null` and the like for empty lists; read them as empty.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    const USER_FILE: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod.example:6443
    certificate-authority: /etc/prod-ca.crt
    proxy-url: http://proxy.example:3128
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: prod}
- name: kind-dev
  cluster:
    server: https://127.0.0.1:1111
contexts:
- name: prod
  context: {cluster: prod, user: prod-admin, namespace: web}
- name: kind-dev
  context: {cluster: kind-dev, user: kind-dev}
current-context: prod
preferences: {colors: true}
users:
- name: prod-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: aws
      args: [eks, get-token]
- name: kind-dev
  user: {token: old}
extensions:
- name: top-level
  extension: {x: 1}
"#;

    #[test]
    fn single_builds_one_context() {
        let cert = CertKey { cert_pem: "CERT".to_owned(), key_pem: "KEY".to_owned() };
        let config = Kubeconfig::single("kind-dev", "https://127.0.0.1:6443", CA_PEM, Some(&cert), Some("t0k"));
        assert_eq!(config.current_context, "kind-dev");
        let context = config.context("kind-dev").unwrap();
        assert_eq!((context.cluster.as_str(), context.user.as_str()), ("kind-dev", "kind-dev"));
        let cluster = config.cluster("kind-dev").unwrap();
        assert_eq!(cluster.server, "https://127.0.0.1:6443");
        assert_eq!(cluster.ca_pem().unwrap().as_deref(), Some(CA_PEM));
        let user = config.user("kind-dev").unwrap();
        assert_eq!(user.token.as_deref(), Some("t0k"));
        assert_eq!(user.client_cert_key("kind-dev").unwrap(), Some(cert));

        let yaml = config.to_yaml().unwrap();
        for key in [
            "apiVersion: v1",
            "kind: Config",
            "current-context: kind-dev",
            "preferences: {}",
            "certificate-authority-data: ",
            "client-certificate-data: ",
            "client-key-data: ",
            "token: t0k",
        ] {
            assert!(yaml.contains(key), "{key} missing from\n{yaml}");
        }
        assert!(!yaml.contains("insecure-skip-tls-verify"), "{yaml}");
        assert_eq!(Kubeconfig::from_yaml(&yaml).unwrap(), config);
    }

    #[test]
    fn unknown_fields_round_trip() {
        let config = Kubeconfig::from_yaml(USER_FILE).unwrap();
        let again = Kubeconfig::from_yaml(&config.to_yaml().unwrap()).unwrap();
        assert_eq!(again, config);
        let original: serde_yaml::Value = serde_yaml::from_str(USER_FILE).unwrap();
        let written: serde_yaml::Value = serde_yaml::from_str(&config.to_yaml().unwrap()).unwrap();
        assert_eq!(written, original);
    }

    #[test]
    fn merge_replaces_same_names_and_keeps_foreign_entries() {
        let mut config = Kubeconfig::from_yaml(USER_FILE).unwrap();
        let ours = Kubeconfig::single("kind-dev", "https://127.0.0.1:6443", CA_PEM, None, Some("new"));
        config.merge(ours, true);

        assert_eq!(config.current_context, "kind-dev");
        let names: Vec<_> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["prod", "kind-dev"]);
        assert_eq!(config.contexts.len(), 2);
        assert_eq!(config.users.len(), 2);
        assert_eq!(config.cluster("kind-dev").unwrap().server, "https://127.0.0.1:6443");
        assert_eq!(config.user("kind-dev").unwrap().token.as_deref(), Some("new"));

        // Foreign entries and everything we do not model survive a write.
        let written: serde_yaml::Value = serde_yaml::from_str(&config.to_yaml().unwrap()).unwrap();
        let prod = &written["clusters"][0]["cluster"];
        assert_eq!(prod["proxy-url"].as_str(), Some("http://proxy.example:3128"));
        assert_eq!(prod["extensions"][0]["extension"]["audience"].as_str(), Some("prod"));
        assert_eq!(written["users"][0]["user"]["exec"]["command"].as_str(), Some("aws"));
        assert_eq!(written["contexts"][0]["context"]["namespace"].as_str(), Some("web"));
        assert_eq!(written["preferences"]["colors"].as_bool(), Some(true));
        assert_eq!(written["extensions"][0]["name"].as_str(), Some("top-level"));
    }

    #[test]
    fn merge_without_make_current_keeps_current_context() {
        let mut config = Kubeconfig::from_yaml(USER_FILE).unwrap();
        config.merge(Kubeconfig::single("kind-new", "https://127.0.0.1:7443", CA_PEM, None, None), false);
        assert_eq!(config.current_context, "prod");
        assert!(config.context("kind-new").is_some());
    }

    #[test]
    fn remove_context_removes_its_cluster_and_user() {
        let mut config = Kubeconfig::from_yaml(USER_FILE).unwrap();
        config.current_context = "kind-dev".to_owned();
        assert!(config.remove_context("kind-dev"));
        assert!(!config.remove_context("kind-dev"));
        assert_eq!(config.current_context, "");
        assert!(config.context("kind-dev").is_none());
        assert!(config.cluster("kind-dev").is_none());
        assert!(config.user("kind-dev").is_none());
        assert!(config.cluster("prod").is_some());
        assert!(config.user("prod-admin").is_some());
    }

    #[test]
    fn remove_context_keeps_cluster_used_by_another_context() {
        let mut config = Kubeconfig::from_yaml(USER_FILE).unwrap();
        config.contexts.push(NamedContext {
            name: "prod-2".to_owned(),
            context: Context { cluster: "prod".to_owned(), user: "someone".to_owned(), ..Context::default() },
            extra: Mapping::new(),
        });
        assert!(config.remove_context("prod"));
        assert!(config.cluster("prod").is_some());
        assert!(config.user("prod-admin").is_none());
    }

    #[test]
    fn kubectl_null_lists_and_empty_files_read_as_empty() {
        let config = Kubeconfig::from_yaml(
            "apiVersion: v1\nclusters: null\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {}\nusers: null\n",
        )
        .unwrap();
        assert_eq!(config, Kubeconfig::default());
        assert_eq!(Kubeconfig::from_yaml("  \n").unwrap(), Kubeconfig::default());
    }

    #[test]
    fn write_and_load_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/.kube/config");
        assert_eq!(Kubeconfig::load_or_default(&path).unwrap(), Kubeconfig::default());
        let config = Kubeconfig::single("kind-dev", "https://127.0.0.1:6443", CA_PEM, None, Some("t"));
        config.write(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Kubeconfig::load(&path).unwrap(), config);
        assert!(matches!(Kubeconfig::load(&dir.path().join("missing")), Err(KubeconfigError::Read { .. })));
        fs::write(&path, "clusters: [oops").unwrap();
        assert!(matches!(Kubeconfig::load(&path), Err(KubeconfigError::Parse { .. })));
    }
}
