//! Parses resource URLs (`/api/v1/namespaces/ns/pods/web/status`) into their parts.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Path segments after the subresource (proxy paths).
    pub rest: Vec<String>,
    /// The legacy `/watch/` prefix was used.
    pub watch_prefix: bool,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Parses a path under `/api` or `/apis`; None if it names no resource.
pub fn parse(path: &str) -> Option<ApiPath> {
    let segs: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let (group, version, mut rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 3 => (String::new(), segs[1].clone(), segs[2..].to_vec()),
        Some("apis") if segs.len() >= 4 => (segs[1].clone(), segs[2].clone(), segs[3..].to_vec()),
        _ => return None,
    };
    let mut watch_prefix = false;
    if rest.first().map(String::as_str) == Some("watch") {
        watch_prefix = true;
        rest.remove(0);
    }
    if rest.iter().any(String::is_empty) && rest.len() > 1 {
        // An empty name segment (`/pods//status`) names nothing.
        return None;
    }
    let mut p = ApiPath {
        group,
        version,
        plural: String::new(),
        namespace: None,
        name: None,
        subresource: None,
        rest: Vec::new(),
        watch_prefix,
    };
    match rest.as_slice() {
        [] => return None,
        [ns_kw, ns, plural, tail @ ..]
            if ns_kw == "namespaces" && !(tail.is_empty() && (plural == "status" || plural == "finalize")) =>
        {
            p.namespace = Some(ns.clone());
            p.plural = plural.clone();
            if let Some((name, more)) = tail.split_first() {
                p.name = Some(name.clone());
                if let Some((sub, more)) = more.split_first() {
                    p.subresource = Some(sub.clone());
                    p.rest = more.to_vec();
                }
            }
        }
        [plural, tail @ ..] => {
            p.plural = plural.clone();
            if let Some((name, more)) = tail.split_first() {
                p.name = Some(name.clone());
                if let Some((sub, more)) = more.split_first() {
                    p.subresource = Some(sub.clone());
                    p.rest = more.to_vec();
                }
            }
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_subresource() {
        let p = parse("/api/v1/namespaces/default/pods/web/status").expect("parses");
        assert_eq!(
            (p.plural.as_str(), p.namespace.as_deref(), p.name.as_deref(), p.subresource.as_deref()),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
    }

    #[test]
    fn namespace_object_and_its_status() {
        let p = parse("/api/v1/namespaces/kube-system").expect("parses");
        assert_eq!((p.plural.as_str(), p.name.as_deref(), p.namespace), ("namespaces", Some("kube-system"), None));
        let p = parse("/api/v1/namespaces/x/finalize").expect("parses");
        assert_eq!(
            (p.plural.as_str(), p.name.as_deref(), p.subresource.as_deref()),
            ("namespaces", Some("x"), Some("finalize"))
        );
    }

    #[test]
    fn group_collection_in_namespace() {
        let p = parse("/apis/apps/v1/namespaces/ns1/deployments").expect("parses");
        assert_eq!(
            (p.group.as_str(), p.plural.as_str(), p.namespace.as_deref(), p.name),
            ("apps", "deployments", Some("ns1"), None)
        );
    }

    #[test]
    fn legacy_watch_prefix() {
        let p = parse("/api/v1/watch/namespaces/default/pods").expect("parses");
        assert!(p.watch_prefix);
        assert_eq!(p.plural, "pods");
    }
}
