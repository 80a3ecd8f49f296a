//! Images: reading the references inside oci- and docker-archives, pushing them into a
//! cluster's registry (skopeo) under the paths containerd's mirror requests, and listing it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::render::registry_path;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: {detail}", path.display())]
    Archive { path: PathBuf, detail: String },
    #[error("pushing {reference}: {detail}")]
    Push { reference: String, detail: String },
    #[error("registry {addr}: {detail}")]
    Registry { addr: String, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Oci,
    Docker,
}

impl ArchiveKind {
    fn transport(&self) -> &'static str {
        match self {
            ArchiveKind::Oci => "oci-archive",
            ArchiveKind::Docker => "docker-archive",
        }
    }
}

/// The references an archive carries, grouped by image (the manifest digest for OCI, the
/// config for docker), first reference first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub kind: ArchiveKind,
    pub images: Vec<Vec<String>>,
}

fn tar_member(path: &Path, member: &str) -> Option<String> {
    for name in [member.to_owned(), format!("./{member}")] {
        let out = std::process::Command::new("tar").arg("-xOf").arg(path).arg(&name).output().ok()?;
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
    }
    None
}

/// Reads `index.json` (oci-archive) or `manifest.json` (docker-archive).
pub fn inspect(path: &Path) -> Result<Archive, ImageError> {
    let bad = |detail: &str| ImageError::Archive { path: path.to_path_buf(), detail: detail.to_owned() };
    if !path.is_file() {
        return Err(bad("no such file"));
    }
    if let Some(index) = tar_member(path, "index.json") {
        let archive = parse_oci_index(&index).map_err(|e| bad(&e))?;
        if archive.images.is_empty() {
            return Err(bad("the OCI index names no image (org.opencontainers.image.ref.name)"));
        }
        return Ok(archive);
    }
    if let Some(manifest) = tar_member(path, "manifest.json") {
        let archive = parse_docker_manifest(&manifest).map_err(|e| bad(&e))?;
        if archive.images.is_empty() {
            return Err(bad("the docker archive has no RepoTags"));
        }
        return Ok(archive);
    }
    Err(bad("neither an oci-archive (index.json) nor a docker-archive (manifest.json)"))
}

pub fn parse_oci_index(text: &str) -> Result<Archive, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("index.json: {e}"))?;
    let mut by_digest: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for m in v["manifests"].as_array().into_iter().flatten() {
        let Some(name) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() else {
            continue;
        };
        let digest = m["digest"].as_str().unwrap_or_default().to_owned();
        if !by_digest.contains_key(&digest) {
            order.push(digest.clone());
        }
        by_digest.entry(digest).or_default().push(name.to_owned());
    }
    Ok(Archive { kind: ArchiveKind::Oci, images: order.into_iter().filter_map(|d| by_digest.remove(&d)).collect() })
}

pub fn parse_docker_manifest(text: &str) -> Result<Archive, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("manifest.json: {e}"))?;
    let images = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)).collect())
        .filter(|tags: &Vec<String>| !tags.is_empty())
        .collect();
    Ok(Archive { kind: ArchiveKind::Docker, images })
}

fn skopeo(args: &[String], reference: &str) -> Result<(), ImageError> {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ImageError::Push { reference: reference.to_owned(), detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::Push {
            reference: reference.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Pushes every reference of the archive; returns the references pushed. The first
/// reference of an image is copied from the archive, the others within the registry (the
/// blobs are already there, so that is only a manifest).
pub fn load(path: &Path, registry: &str) -> Result<Vec<String>, ImageError> {
    let archive = inspect(path)?;
    let mut pushed = Vec::new();
    for refs in &archive.images {
        let Some((first, rest)) = refs.split_first() else {
            continue;
        };
        let first_dest = format!("docker://{registry}/{}", registry_path(first));
        let src = match archive.kind {
            ArchiveKind::Oci => format!("{}:{}:{first}", archive.kind.transport(), path.display()),
            // a docker-archive is addressed by the tag as written
            ArchiveKind::Docker => format!("{}:{}:{first}", archive.kind.transport(), path.display()),
        };
        let args = |src: String, dest: String| -> Vec<String> {
            ["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]
                .iter()
                .map(|s| s.to_string())
                .chain([src, dest])
                .collect()
        };
        // --src-tls-verify is not valid for archive sources
        let mut first_args = args(src, first_dest.clone());
        first_args.retain(|a| a != "--src-tls-verify=false");
        skopeo(&first_args, first)?;
        pushed.push(first.clone());
        for r in rest {
            let dest = format!("docker://{registry}/{}", registry_path(r));
            skopeo(&args(first_dest.clone(), dest), r)?;
            pushed.push(r.clone());
        }
    }
    Ok(pushed)
}

/// A plain HTTP GET against the cluster registry (on the bridge address, never elsewhere).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), ImageError> {
    let err = |detail: String| ImageError::Registry { addr: addr.to_owned(), detail };
    let mut s = TcpStream::connect(addr).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| err(e.to_string()))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n")
        .map_err(|e| err(e.to_string()))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| err(e.to_string()))?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err(format!("bad response: {head}")))?;
    Ok((code, body.to_owned()))
}

/// Every repository:tag in the registry, sorted.
pub fn list(addr: &str) -> Result<Vec<String>, ImageError> {
    // distribution caps a catalog page at 1000 repositories
    let (code, body) = http_get(addr, "/v2/_catalog?n=1000")?;
    if code != 200 {
        return Err(ImageError::Registry {
            addr: addr.to_owned(),
            detail: format!("catalog: HTTP {code}: {}", body.trim()),
        });
    }
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| ImageError::Registry { addr: addr.to_owned(), detail: e.to_string() })?;
    let mut out = Vec::new();
    for repo in v["repositories"].as_array().into_iter().flatten().filter_map(|r| r.as_str()) {
        let (_, body) = http_get(addr, &format!("/v2/{repo}/tags/list"))?;
        let t: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        for tag in t["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
            out.push(format!("{repo}:{tag}"));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_index_groups_references_by_digest() {
        let index = r#"{"schemaVersion":2,"manifests":[
          {"digest":"sha256:aa","annotations":{"org.opencontainers.image.ref.name":"docker.io/library/nginx:latest"}},
          {"digest":"sha256:aa","annotations":{"org.opencontainers.image.ref.name":"docker.io/library/nginx:1.25"}},
          {"digest":"sha256:bb","annotations":{"org.opencontainers.image.ref.name":"registry.k8s.io/pause:3.10"}},
          {"digest":"sha256:cc"}]}"#;
        let a = parse_oci_index(index).unwrap();
        assert_eq!(a.kind, ArchiveKind::Oci);
        assert_eq!(
            a.images,
            vec![
                vec!["docker.io/library/nginx:latest".to_owned(), "docker.io/library/nginx:1.25".to_owned()],
                vec!["registry.k8s.io/pause:3.10".to_owned()],
            ]
        );
    }

    #[test]
    fn docker_manifest_tags() {
        let m =
            r#"[{"Config":"c.json","RepoTags":["app:v1","app:latest"],"Layers":[]},{"Config":"d","RepoTags":null}]"#;
        assert_eq!(parse_docker_manifest(m).unwrap().images, vec![vec!["app:v1".to_owned(), "app:latest".to_owned()]]);
    }

    #[test]
    fn inspect_reads_a_real_archive() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        std::fs::write(
            stage.join("index.json"),
            r#"{"manifests":[{"digest":"sha256:aa","annotations":{"org.opencontainers.image.ref.name":"busybox:1.36"}}]}"#,
        )
        .unwrap();
        let tar = dir.path().join("x.tar");
        let ok =
            std::process::Command::new("tar").arg("-C").arg(&stage).arg("-cf").arg(&tar).arg(".").status().unwrap();
        assert!(ok.success());
        assert_eq!(inspect(&tar).unwrap().images, vec![vec!["busybox:1.36".to_owned()]]);
        let e = inspect(&dir.path().join("missing.tar")).unwrap_err().to_string();
        assert!(e.ends_with("missing.tar: no such file"), "{e}");
    }
}
