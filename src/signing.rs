//! The signed identity JWT apps can verify, and the JWKS that publishes its keys.
//!
//! Ed25519 (`EdDSA`): small keys, fast signatures, no parameter choices to get wrong. Tokens are
//! cached per (identity, audience) for half their lifetime, so the hot path signs once per
//! identity per half-TTL, and every token handed out is valid for at least half its TTL.

use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::identity::Identity;

/// Why a key could not be loaded or a token signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a PKCS#8 Ed25519 key.
    #[error("{path} is not a PKCS#8 PEM Ed25519 key (create one with `authgate keygen`): {reason}")]
    BadKey {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// Signing failed.
    #[error("cannot sign identity token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// An Ed25519 public key, its 32 bytes.
type PublicKey = [u8; 32];

/// The DER of an Ed25519 SubjectPublicKeyInfo before its 32 key bytes (RFC 8410 §4): the one
/// encoding such a key has.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Generates a new Ed25519 private key as PKCS#8 v1 PEM (without the embedded public key,
/// which OpenSSL 3.0 and Python's `cryptography` cannot read).
pub fn generate_key_pem() -> String {
    let key = Ed25519KeyPair::generate()
        .and_then(|k| k.to_pkcs8v1())
        .expect("generating and encoding a fresh key cannot fail");
    pem_text("PRIVATE KEY", key.as_ref())
}

/// The public half of a PKCS#8 private key, as SPKI PEM (for `extra_public_key_files` during a
/// key roll, or for apps that pin the key).
pub fn public_key_pem(private_pem: &str) -> Result<String, SigningError> {
    let bad = |reason: String| SigningError::BadKey {
        path: "<key>".into(),
        reason,
    };
    let (key, _) = private_key(private_pem).map_err(bad)?;
    let spki = key.public_key().as_der().map_err(|e| bad(e.to_string()))?;
    Ok(pem_text("PUBLIC KEY", spki.as_ref()))
}

fn pem_text(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

/// The one PEM block of a key file: a file with several keys is refused, not read in part (an
/// `extra_public_key_files` entry with two keys would publish only one, and tokens signed with
/// the other would fail at the apps during a roll).
fn one_block(text: &str) -> Result<pem::Pem, String> {
    let mut blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    match blocks.len() {
        1 => Ok(blocks.remove(0)),
        0 => Err("no PEM block".into()),
        n => Err(format!("{n} PEM blocks: one key per file")),
    }
}

/// An Ed25519 private key from PKCS#8 PEM (v1 or v2), and its DER.
fn private_key(text: &str) -> Result<(Ed25519KeyPair, Vec<u8>), String> {
    let block = one_block(text)?;
    if block.tag() != "PRIVATE KEY" {
        return Err(format!("a {:?} block, not a PRIVATE KEY", block.tag()));
    }
    let key = Ed25519KeyPair::from_pkcs8(block.contents()).map_err(|e| e.to_string())?;
    Ok((key, block.into_contents()))
}

/// The public key of a PEM file: an SPKI public key, or the public half of a private key.
fn public_key(text: &str) -> Result<PublicKey, String> {
    let block = one_block(text)?;
    match block.tag() {
        "PUBLIC KEY" => {
            let raw = block
                .contents()
                .strip_prefix(SPKI_PREFIX.as_slice())
                .and_then(|raw| PublicKey::try_from(raw).ok())
                .ok_or("not an Ed25519 public key")?;
            ParsedPublicKey::new(&ED25519, raw).map_err(|e| e.to_string())?;
            Ok(raw)
        }
        _ => private_key(text).map(|(key, _)| raw_public_key(&key)),
    }
}

fn raw_public_key(key: &Ed25519KeyPair) -> PublicKey {
    PublicKey::try_from(key.public_key().as_ref()).expect("an Ed25519 public key is 32 bytes")
}

/// The claims of the identity JWT.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    groups: &'a [String],
    iat: u64,
    nbf: u64,
    exp: u64,
    /// How the identity was established (`service_account`, `oidc_jwt`, `session`,
    /// `personal_token`, `kubernetes_user`).
    auth_method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    /// The OIDC issuer that vouched for the identity (sessions, OIDC bearer tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<&'a str>,
    /// The identity's `extra` values under the keys `identity.jwt.extra` names.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extra: std::collections::BTreeMap<&'a str, &'a [String]>,
    /// A scoped personal access token: the only namespaces it acts in. An app that takes the
    /// JWT as a credential must hold it to them too.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    namespaces: &'a [String],
}

/// A signed token and what it was signed for: a cache hit is only used when all of it equals
/// the request's (the cache is keyed by a hash, and a collision must never hand one identity
/// another's token).
struct CachedToken {
    identity: Identity,
    subject: Box<str>,
    audience: Box<str>,
    jwt: Arc<str>,
    refresh_at: u64,
}

impl CachedToken {
    /// About the bytes it holds.
    fn weight(&self) -> u32 {
        let identity = &self.identity;
        let strings = identity.user.len()
            + identity.groups.iter().map(|g| g.len() + 24).sum::<usize>()
            + identity.uid.as_ref().map_or(0, String::len)
            + identity
                .extra
                .iter()
                .map(|(k, v)| k.len() + v.iter().map(|s| s.len() + 24).sum::<usize>() + 48)
                .sum::<usize>();
        let total = 160 + strings + self.subject.len() + self.audience.len() + self.jwt.len();
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// Most bytes of signed tokens kept (about 1 KiB each: some 64,000 identities × audiences).
pub const SIGNED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Signs identity tokens and publishes the JWKS.
pub struct Signer {
    issuer: String,
    ttl: Duration,
    kid: String,
    key: EncodingKey,
    jwks: Arc<str>,
    clock: SharedClock,
    /// Keyed by a hash of (identity, subject, audience): a lookup hashes the request's values in
    /// place instead of cloning them into a key tuple.
    cache: moka::sync::Cache<u64, Arc<CachedToken>>,
    hasher: foldhash::fast::RandomState,
    /// The `extra` keys signed; `None`: all of them.
    extra_keys: Option<Vec<String>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// Loads the key from `key_file`, or generates one (logged as a warning: apps then have to
    /// refetch the JWKS after every restart, and replicas disagree).
    pub fn load(
        key_file: Option<&Path>,
        extra_public_keys: &[std::path::PathBuf],
        issuer: &str,
        ttl: Duration,
        clock: SharedClock,
    ) -> Result<Signer, SigningError> {
        let pem = match key_file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| SigningError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => {
                tracing::warn!(
                    "identity.jwt.key_file is not set: generated an ephemeral signing key; \
                     replicas will not share it and apps must refetch the JWKS after a restart"
                );
                generate_key_pem()
            }
        };
        let path_name = key_file.map_or("<generated>".into(), |p| p.display().to_string());
        let (signing, der) = private_key(&pem).map_err(|reason| SigningError::BadKey {
            path: path_name.clone(),
            reason,
        })?;
        let mut public = vec![raw_public_key(&signing)];
        for file in extra_public_keys {
            let text = std::fs::read_to_string(file).map_err(|source| SigningError::Read {
                path: file.display().to_string(),
                source,
            })?;
            let key = public_key(&text).map_err(|reason| SigningError::BadKey {
                path: file.display().to_string(),
                reason,
            })?;
            public.push(key);
        }
        let key = EncodingKey::from_ed_der(&der);
        Ok(Signer {
            issuer: issuer.trim_end_matches('/').to_string(),
            ttl,
            kid: key_id(&public[0]),
            key,
            jwks: Arc::from(jwks_json(&public)),
            clock,
            // Bounded by bytes, not entries: what a token holds (groups, extra, the JWT) varies,
            // and the audiences are bounded by `audience()` to configured hosts.
            cache: moka::sync::Cache::builder()
                .max_capacity(SIGNED_CACHE_BYTES)
                .weigher(|_, token: &Arc<CachedToken>| token.weight())
                .time_to_live(ttl)
                .build(),
            hasher: foldhash::fast::RandomState::default(),
            extra_keys: None,
        })
    }

    /// Signs only these keys of an identity's `extra` (`identity.jwt.extra`; `*` among them:
    /// all). Every token is smaller by what no app reads: of a service account's TokenReview
    /// `extra`, the pod binding is what an app can check; node and credential ids are not.
    pub fn with_extra_claims(mut self, keys: &[String]) -> Signer {
        self.extra_keys = (!keys.iter().any(|k| k == "*")).then(|| keys.to_vec());
        self
    }

    /// The JWKS document (`application/json`).
    pub fn jwks(&self) -> Arc<str> {
        self.jwks.clone()
    }

    /// The issuer (`iss`) of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token for `identity`, addressed to `audience` (the request host), with `subject` as the
    /// user header carries it (prefix included). Reused while more than half its life is left.
    pub fn token(
        &self,
        identity: &Identity,
        subject: &str,
        audience: &str,
    ) -> Result<Arc<str>, SigningError> {
        let now = self.clock.unix_now();
        let cache_key = self.hasher.hash_one((identity, subject, audience));
        if let Some(hit) = self.cache.get(&cache_key)
            && now < hit.refresh_at
            && hit.identity == *identity
            && *hit.subject == *subject
            && *hit.audience == *audience
        {
            return Ok(hit.jwt.clone());
        }
        let ttl = self.ttl.as_secs();
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            sub: subject,
            groups: &identity.groups,
            iat: now,
            nbf: now.saturating_sub(5),
            exp: now + ttl,
            auth_method: identity.method.as_str(),
            uid: identity.uid.as_deref(),
            idp: identity.issuer.as_deref(),
            extra: identity
                .extra
                .iter()
                .filter(|(key, _)| {
                    self.extra_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k == *key))
                })
                .map(|(key, values)| (key.as_str(), values.as_slice()))
                .collect(),
            namespaces: &identity.namespaces,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let jwt: Arc<str> = Arc::from(jsonwebtoken::encode(&header, &claims, &self.key)?);
        self.cache.insert(
            cache_key,
            Arc::new(CachedToken {
                identity: identity.clone(),
                subject: subject.into(),
                audience: audience.into(),
                jwt: jwt.clone(),
                refresh_at: now + ttl / 2,
            }),
        );
        Ok(jwt)
    }
}

/// RFC 7638-style thumbprint of an OKP key, used as `kid`.
fn key_id(key: &PublicKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn jwks_json(keys: &[PublicKey]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": key_id(k),
                "x": URL_SAFE_NO_PAD.encode(k),
            })
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::identity::AuthMethod;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};

    fn identity() -> Identity {
        Identity {
            namespaces: Vec::new(),
            user: "system:serviceaccount:team-a:runner".into(),
            groups: vec!["system:serviceaccounts".into()],
            uid: Some("u-1".into()),
            extra: Default::default(),
            method: AuthMethod::ServiceAccount,
            issuer: None,
        }
    }

    #[test]
    fn token_verifies_against_jwks_and_is_cached_for_half_its_life() {
        let clock = ManualClock::new();
        let signer = Signer::load(
            None,
            &[],
            "https://kf.example.com/",
            Duration::from_secs(300),
            Arc::new(clock.clone()),
        )
        .unwrap();
        let id = identity();
        let t1 = signer.token(&id, &id.user, "kf.example.com").unwrap();
        clock.advance(Duration::from_secs(149));
        assert_eq!(signer.token(&id, &id.user, "kf.example.com").unwrap(), t1);
        clock.advance(Duration::from_secs(1));
        let t2 = signer.token(&id, &id.user, "kf.example.com").unwrap();
        assert_ne!(t2, t1, "re-signed after half the TTL");

        let jwks: JwkSet = serde_json::from_str(&signer.jwks()).unwrap();
        let header = jsonwebtoken::decode_header(&*t2).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["kf.example.com"]);
        validation.set_issuer(&["https://kf.example.com"]);
        validation.validate_exp = false; // the manual clock runs ahead of the real one
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &*t2,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "system:serviceaccount:team-a:runner");
        assert_eq!(data.claims["auth_method"], "service_account");
        assert_eq!(
            data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap(),
            300
        );
    }

    /// A signer with a generated key, tokens of 60 s, on a manual clock.
    fn signer() -> Signer {
        Signer::load(
            None,
            &[],
            "https://kf.example.com",
            Duration::from_secs(60),
            Arc::new(ManualClock::new()),
        )
        .unwrap()
    }

    #[test]
    fn only_the_configured_extra_keys_are_signed() {
        let claims = |keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let signer = signer().with_extra_claims(&keys);
            let mut id = identity();
            for key in [
                "authentication.kubernetes.io/pod-name",
                "authentication.kubernetes.io/credential-id",
            ] {
                id.extra.insert(key.into(), vec![format!("{key}-value")]);
            }
            let jwt = signer.token(&id, &id.user, "kf.example.com").unwrap();
            let payload = jwt.split('.').nth(1).unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            json["extra"].clone()
        };
        let pod_only = claims(&crate::config::DEFAULT_JWT_EXTRA);
        assert_eq!(pod_only.as_object().unwrap().len(), 1, "{pod_only}");
        assert!(pod_only["authentication.kubernetes.io/pod-name"].is_array());
        assert_eq!(claims(&["*"]).as_object().unwrap().len(), 2);
        assert!(claims(&[]).is_null(), "no extra claim at all");
    }

    #[test]
    fn different_audiences_get_different_tokens() {
        let signer = signer();
        let id = identity();
        assert_ne!(
            signer.token(&id, &id.user, "a.example.com").unwrap(),
            signer.token(&id, &id.user, "b.example.com").unwrap()
        );
    }

    #[test]
    fn key_files_of_other_tools_load_with_the_key_they_hold() {
        // RFC 8032 §7.1, test 1: the secret key and the public key it makes.
        let secret = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        let pem_of = |tag: &str, der_hex: &str| pem_text(tag, &hex::decode(der_hex).unwrap());
        // PKCS#8 v1 (what `openssl genpkey -algorithm ed25519` and `authgate keygen` write) and
        // v2 (with the public key, RFC 5958), and the SPKI public key (`openssl pkey -pubout`).
        let v1 = pem_of(
            "PRIVATE KEY",
            &format!("302e020100300506032b657004220420{secret}"),
        );
        let v2 = pem_of(
            "PRIVATE KEY",
            &format!("3051020101300506032b657004220420{secret}812100{public}"),
        );
        let spki = pem_of("PUBLIC KEY", &format!("302a300506032b6570032100{public}"));
        let x = URL_SAFE_NO_PAD.encode(hex::decode(public).unwrap());
        let dir = tempfile::tempdir().unwrap();
        for (name, key) in [("v1.pem", &v1), ("v2.pem", &v2)] {
            let path = dir.path().join(name);
            std::fs::write(&path, key).unwrap();
            let extra = dir.path().join("extra.pem");
            std::fs::write(&extra, &spki).unwrap();
            let signer = Signer::load(
                Some(&path),
                &[extra],
                "https://x",
                Duration::from_secs(60),
                Arc::new(ManualClock::new()),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let jwks: serde_json::Value = serde_json::from_str(&signer.jwks()).unwrap();
            assert_eq!(jwks["keys"][0]["x"], x, "{name}");
            assert_eq!(jwks["keys"][1]["x"], x, "{name}: the SPKI file");
            assert_eq!(
                jwks["keys"][0]["kid"],
                key_id(&hex::decode(public).unwrap().try_into().unwrap())
            );
        }
        assert_eq!(public_key_pem(&v1).unwrap(), spki);
        let two = format!("{spki}{}", public_key_pem(&generate_key_pem()).unwrap());
        assert!(public_key(&two).unwrap_err().contains("2 PEM blocks"));
        assert!(public_key(&pem_of("PUBLIC KEY", "3059301306072a8648ce3d0201")).is_err());
    }

    #[test]
    fn generated_keys_load_and_their_public_half_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.pub.pem");
        let old_private = generate_key_pem();
        assert!(old_private.starts_with("-----BEGIN PRIVATE KEY-----"));
        std::fs::write(&old, public_key_pem(&old_private).unwrap()).unwrap();
        let new = dir.path().join("new.pem");
        std::fs::write(&new, generate_key_pem()).unwrap();
        let signer = Signer::load(
            Some(&new),
            &[old],
            "https://x",
            Duration::from_secs(60),
            Arc::new(ManualClock::new()),
        )
        .unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&signer.jwks()).unwrap();
        assert_eq!(
            jwks["keys"].as_array().unwrap().len(),
            2,
            "both keys during a roll"
        );
    }

    #[test]
    fn rejects_a_file_that_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "not a key").unwrap();
        let err = Signer::load(
            Some(&file),
            &[],
            "https://x",
            Duration::from_secs(60),
            Arc::new(ManualClock::new()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("authgate keygen"), "{err}");
    }
}
