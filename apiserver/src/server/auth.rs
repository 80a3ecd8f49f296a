//! Authentication: client certificates (CN = user, O = groups), bearer tokens from a
//! static token file (`token,user,uid,"group1,group2"`, upstream's format) and service account
//! tokens (JWTs from `serviceaccounts/token`). RBAC comes later; every authenticated user may
//! do everything.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;

use component_base::tls::PeerIdentity;

#[derive(Debug, Clone, PartialEq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    service_accounts: Option<Arc<crate::serviceaccount::Tokens>>,
}

/// What a service account token is checked against: the UID of a live object
/// (`plural`, namespace, name), from the watch cache.
pub type UidLookup<'a> = &'a dyn Fn(&str, Option<&str>, &str) -> Option<String>;

impl Authenticator {
    pub fn from_token_file(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut tokens = HashMap::new();
        if let Some(p) = path {
            let text =
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading token file {}: {e}", p.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let fields = split_csv(line);
                if fields.len() < 3 {
                    anyhow::bail!("{}:{}: want token,user,uid[,\"groups\"]", p.display(), n + 1);
                }
                let groups = fields
                    .get(3)
                    .map(|g| g.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                    .unwrap_or_default();
                tokens.insert(fields[0].clone(), UserInfo { name: fields[1].clone(), uid: fields[2].clone(), groups });
            }
        }
        Ok(Self { tokens, service_accounts: None })
    }

    /// The signer of service account tokens, for the TokenRequest subresource.
    pub fn service_account_tokens(&self) -> Option<&Arc<crate::serviceaccount::Tokens>> {
        self.service_accounts.as_ref()
    }

    /// Also accept service account tokens signed by `tokens`.
    pub fn with_service_accounts(mut self, tokens: Arc<crate::serviceaccount::Tokens>) -> Self {
        self.service_accounts = Some(tokens);
        self
    }

    /// The user a request comes from, or None (401).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        cert: Option<&PeerIdentity>,
        live: UidLookup<'_>,
    ) -> Option<UserInfo> {
        if let Some(h) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if let Some(token) = h.strip_prefix("Bearer ").map(str::trim) {
                // upstream: a presented but unknown token is a 401 even with a client cert.
                let user = self.tokens.get(token).cloned().or_else(|| self.service_account(token, live));
                return user.map(|mut u| {
                    u.groups.push("system:authenticated".into());
                    u
                });
            }
        }
        cert.map(|c| {
            let mut groups = c.groups.clone();
            groups.push("system:authenticated".into());
            UserInfo { name: c.user.clone(), uid: String::new(), groups }
        })
    }
}

impl Authenticator {
    /// upstream's validating service account authenticator: a good signature is not enough,
    /// the service account and the object the token is bound to must still exist with the UIDs
    /// the token names.
    fn service_account(&self, token: &str, live: UidLookup<'_>) -> Option<UserInfo> {
        let sa = self.service_accounts.as_ref()?;
        let claims = match sa.verify(token, crate::serviceaccount::now_unix()) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "service account token refused");
                return None;
            }
        };
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let alive = |plural: &str, ns: Option<&str>, r: &crate::serviceaccount::Ref| {
            let ok = live(plural, ns, &r.name).is_some_and(|uid| uid == r.uid);
            if !ok {
                tracing::debug!(plural, name = %r.name, "service account token refused: bound object is gone");
            }
            ok
        };
        let bound = alive("serviceaccounts", Some(ns), &k.serviceaccount)
            && k.pod.as_ref().is_none_or(|p| alive("pods", Some(ns), p))
            && k.secret.as_ref().is_none_or(|s| alive("secrets", Some(ns), s))
            && k.node.as_ref().is_none_or(|n| alive("nodes", None, n));
        bound.then(|| UserInfo {
            name: crate::serviceaccount::username(ns, &k.serviceaccount.name),
            uid: k.serviceaccount.uid.clone(),
            groups: crate::serviceaccount::groups(ns),
        })
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_groups_are_quoted_csv() {
        assert_eq!(split_csv("t0k,alice,1,\"dev,ops\""), vec!["t0k", "alice", "1", "dev,ops"]);
    }

    #[test]
    fn unknown_token_is_rejected_even_with_cert() {
        let a = Authenticator::default();
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer nope"));
        let cert = PeerIdentity { user: "admin".into(), groups: vec![] };
        assert!(a.authenticate(&h, Some(&cert), &|_, _, _| None).is_none());
        assert!(a.authenticate(&HeaderMap::new(), Some(&cert), &|_, _, _| None).is_some());
    }
}
