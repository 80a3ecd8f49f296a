//! Service account tokens: the JWTs the `serviceaccounts/token` subresource (TokenRequest)
//! issues and the authenticator accepts as bearer tokens, as upstream's
//! `pkg/serviceaccount` does.
//!
//! Tokens are ES256 (ECDSA P-256, SHA-256) JWS compact serializations signed with one key,
//! kept as PKCS#8 PEM in the cert dir (`sa.key`, made at first start like kubeadm's) or given by
//! `--service-account-signing-key-file`. The claims follow upstream's: `iss`, `sub`
//! (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `iat`, `nbf`, `jti`, and the private
//! `kubernetes.io` claim naming the namespace, the service account and the bound object with
//! their UIDs, so a token stops working once what it is bound to is deleted.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// upstream: `--service-account-issuer` has no default there; this is the value kubeadm and
/// most distributions use.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: want an ECDSA P-256 private key in PKCS#8 PEM (\"-----BEGIN PRIVATE KEY-----\")")]
    Format { path: String },
    #[error("generating a service account signing key failed")]
    Generate,
}

/// Why a bearer token that looks like a JWT was refused. Never shown to clients (they get a
/// plain 401, as upstream); it goes to the log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a JWS compact serialization")]
    Malformed,
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("signature does not verify")]
    Signature,
    #[error("issued by {0:?}, not by this apiserver")]
    Issuer(String),
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("audiences {0:?} include none the apiserver accepts")]
    Audience(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// The user a service account token stands for (upstream's `serviceaccount.UserInfo`).
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

pub fn groups(namespace: &str) -> Vec<String> {
    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")]
}

pub fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Signs and verifies service account tokens with one key.
pub struct Tokens {
    key: EcdsaKeyPair,
    kid: String,
    pub issuer: String,
    /// What tokens must be addressed to (`--api-audiences`; the issuer when not given).
    pub api_audiences: Vec<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("kid", &self.kid).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

// The DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl Tokens {
    pub fn from_pkcs8(der: &[u8], issuer: &str, api_audiences: Vec<String>) -> Option<Self> {
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new()).ok()?;
        // upstream: the key id is the URL-safe SHA-256 of the public key's PKIX DER.
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&spki));
        let api_audiences = if api_audiences.is_empty() { vec![issuer.to_string()] } else { api_audiences };
        Some(Self { key, kid, issuer: issuer.to_string(), api_audiences })
    }

    /// Loads the signing key from `path`, or makes one there (mode 0600) when it does not exist.
    pub fn load_or_generate(path: &Path, issuer: &str, api_audiences: Vec<String>) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let pem = match std::fs::read_to_string(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                        .map_err(|_| KeyError::Generate)?;
                let pem = to_pem(doc.as_ref());
                write_private(path, &pem).map_err(|source| KeyError::Write { path: shown.clone(), source })?;
                pem
            }
            Err(source) => return Err(KeyError::Read { path: shown, source }),
        };
        let der = from_pem(&pem).ok_or_else(|| KeyError::Format { path: shown.clone() })?;
        Self::from_pkcs8(&der, issuer, api_audiences).ok_or(KeyError::Format { path: shown })
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize")),
        );
        // ring's fixed signing only fails when the system RNG does; the token is then unsigned
        // garbage that no verifier accepts, which is the safe outcome.
        let sig = self.key.sign(&SystemRandom::new(), signing_input.as_bytes()).map(|s| s.as_ref().to_vec());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.unwrap_or_default()))
    }

    /// Checks signature, issuer, validity window and audience; the caller then checks that the
    /// service account and bound object still exist with the same UIDs.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        if alg != "ES256" {
            return Err(TokenError::Algorithm(alg.to_string()));
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)?;
        let signed = &token[..h.len() + 1 + c.len()];
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        // upstream: a minute of leeway for clock skew on both ends of the window.
        const LEEWAY: i64 = 60;
        if now > claims.exp + LEEWAY {
            return Err(TokenError::Expired);
        }
        if now + LEEWAY < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if !claims.aud.iter().any(|a| self.api_audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud));
        }
        Ok(claims)
    }
}

fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

fn from_pem(pem: &str) -> Option<Vec<u8>> {
    let body = pem.split("-----BEGIN PRIVATE KEY-----").nth(1)?.split("-----END PRIVATE KEY-----").next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let dir = tempfile::tempdir().expect("tempdir");
        Tokens::load_or_generate(&dir.path().join("sa.key"), DEFAULT_ISSUER, vec![]).expect("key")
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: DEFAULT_ISSUER.into(),
            sub: username("default", "builder"),
            aud: vec![DEFAULT_ISSUER.into()],
            exp: now + 3600,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "default".into(),
                serviceaccount: Ref { name: "builder".into(), uid: "u1".into() },
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    #[test]
    fn issued_token_verifies_with_its_claims() {
        let t = tokens();
        let now = now_unix();
        let jwt = t.issue(&claims(now));
        assert_eq!(t.verify(&jwt, now), Ok(claims(now)));
    }

    #[test]
    fn key_is_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sa.key");
        let a = Tokens::load_or_generate(&path, DEFAULT_ISSUER, vec![]).expect("key");
        let b = Tokens::load_or_generate(&path, DEFAULT_ISSUER, vec![]).expect("key");
        let now = now_unix();
        assert_eq!(a.kid, b.kid);
        assert!(b.verify(&a.issue(&claims(now)), now).is_ok());
    }

    #[test]
    fn token_from_another_key_is_refused() {
        let now = now_unix();
        assert_eq!(tokens().verify(&tokens().issue(&claims(now)), now), Err(TokenError::Signature));
    }

    #[test]
    fn tampered_claims_are_refused() {
        let t = tokens();
        let now = now_unix();
        let jwt = t.issue(&claims(now));
        let mut forged = claims(now);
        forged.kubernetes.serviceaccount.name = "admin".into();
        let parts: Vec<&str> = jwt.split('.').collect();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(t.verify(&format!("{}.{body}.{}", parts[0], parts[2]), now), Err(TokenError::Signature));
    }

    #[test]
    fn alg_none_is_refused() {
        let t = tokens();
        let now = now_unix();
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now)).expect("json"));
        assert_eq!(t.verify(&format!("{h}.{c}."), now), Err(TokenError::Algorithm("none".into())));
    }

    #[test]
    fn expired_wrong_issuer_and_audience_are_refused() {
        let t = tokens();
        let now = now_unix();
        let jwt = t.issue(&claims(now - 7200));
        assert_eq!(t.verify(&jwt, now), Err(TokenError::Expired));
        let mut c = claims(now);
        c.iss = "https://elsewhere".into();
        assert_eq!(t.verify(&t.issue(&c), now), Err(TokenError::Issuer("https://elsewhere".into())));
        let mut c = claims(now);
        c.aud = vec!["vault".into()];
        assert_eq!(t.verify(&t.issue(&c), now), Err(TokenError::Audience(vec!["vault".into()])));
        assert_eq!(t.verify("a.b", now), Err(TokenError::Malformed));
    }

    #[test]
    fn a_key_that_is_not_pkcs8_p256_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sa.key");
        std::fs::write(&path, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n").expect("write");
        let err = Tokens::load_or_generate(&path, DEFAULT_ISSUER, vec![]).expect_err("refused");
        assert!(matches!(err, KeyError::Format { .. }), "{err}");
    }
}
