//! Logins in progress, kept in the browser, not on the server: a stranger's navigation writes
//! nothing that could displace a session or a revocation in the store.
//!
//! Each pending login is a 256-bit secret from which `state`, `nonce` and the PKCE verifier are
//! derived (HKDF-SHA256, one label each), the same-origin return target, and an expiry. The
//! browser's one login cookie holds the latest [`MAX_PENDING`] of them, sealed (encrypted and
//! authenticated) with the session-token key, so a few tabs can log in at once and the cookie
//! stays under 2.5 KB. The callback takes the entry whose `state` it names out of the cookie:
//! a `state` works once per browser, and only in the browser that started it; the provider's
//! single-use code (bound to the PKCE verifier) covers a copied cookie.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::Sealer;

/// Most logins one browser may have in progress (tabs opened at once); a new one beyond this
/// replaces the oldest.
pub const MAX_PENDING: usize = 3;

/// Longest return target kept (path and query); a longer one keeps only its path, and a longer
/// path returns to `/`.
pub const MAX_RETURN_TO: usize = 512;

/// One login in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The secret everything else is derived from (base64url, 43 characters).
    #[serde(rename = "s")]
    secret: String,
    /// Where the browser goes afterwards (same origin, path and query only).
    #[serde(rename = "r")]
    pub return_to: String,
    /// Unix seconds after which the login is refused.
    #[serde(rename = "e")]
    expires_at: u64,
    /// A login that asked the provider to authenticate the person again (`prompt=login`,
    /// `max_age=0`): when it started.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub fresh_since: Option<u64>,
}

impl Pending {
    /// A new login in progress.
    pub fn new(return_to: &str, expires_at: u64) -> Pending {
        Pending {
            secret: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            return_to: bounded_return(return_to).to_string(),
            expires_at,
            fresh_since: None,
        }
    }

    /// The same login, asking the provider to authenticate the person again; started at `now`.
    pub fn fresh(mut self, now: u64) -> Pending {
        self.fresh_since = Some(now);
        self
    }

    /// The OAuth `state`.
    pub fn state(&self) -> String {
        self.derive(b"authgate login state")
    }

    /// The OIDC `nonce`.
    pub fn nonce(&self) -> String {
        self.derive(b"authgate login nonce")
    }

    /// The PKCE code verifier (43 characters of base64url, as RFC 7636 asks).
    pub fn pkce_verifier(&self) -> String {
        self.derive(b"authgate login pkce")
    }

    fn derive(&self, label: &[u8]) -> String {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(None, self.secret.as_bytes())
            .expand(label, &mut out)
            .expect("32 bytes is a valid HKDF output length");
        URL_SAFE_NO_PAD.encode(out)
    }
}

/// The return target, cut to [`MAX_RETURN_TO`]: whole, else its path, else `/`.
fn bounded_return(target: &str) -> &str {
    if target.len() <= MAX_RETURN_TO {
        return target;
    }
    match target.split_once('?') {
        Some((path, _)) if path.len() <= MAX_RETURN_TO => path,
        _ => "/",
    }
}

/// The logins in progress of one browser: read from its login cookie, written back into it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PendingLogins(Vec<Pending>);

impl PendingLogins {
    /// The live logins in a login cookie's value (none if absent, tampered with or sealed under
    /// a key this replica does not have).
    pub fn open(sealer: &Sealer, cookie: Option<&str>, now: u64) -> PendingLogins {
        let Some(plain) = cookie.and_then(|c| sealer.open(c)) else {
            return PendingLogins::default();
        };
        let mut logins: Vec<Pending> = serde_json::from_str(&plain).unwrap_or_default();
        logins.retain(|p| p.expires_at > now && p.secret.len() == 43);
        logins.truncate(MAX_PENDING);
        PendingLogins(logins)
    }

    /// Adds a login, dropping the oldest beyond [`MAX_PENDING`].
    pub fn add(&mut self, login: Pending) {
        self.0.push(login);
        if self.0.len() > MAX_PENDING {
            self.0.remove(0);
        }
    }

    /// Takes out the login whose `state` this is.
    pub fn take(&mut self, state: &str) -> Option<Pending> {
        let i = self.0.iter().position(|p| p.state() == state)?;
        Some(self.0.remove(i))
    }

    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sealed cookie value.
    pub fn seal(&self, sealer: &Sealer) -> String {
        sealer.seal(&serde_json::to_string(&self.0).expect("plain data serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_material(b"test key")
    }

    #[test]
    fn state_nonce_and_verifier_are_distinct_and_stable() {
        let p = Pending::new("/x", 100);
        assert_eq!(p.state(), p.state());
        assert_ne!(p.state(), p.nonce());
        assert_ne!(p.nonce(), p.pkce_verifier());
        assert_eq!(p.pkce_verifier().len(), 43);
        assert_ne!(
            p.state(),
            Pending::new("/x", 100).state(),
            "random per login"
        );
    }

    #[test]
    fn a_cookie_holds_a_few_logins_and_each_state_works_once() {
        let sealer = sealer();
        let mut logins = PendingLogins::default();
        let first = Pending::new("/first", 100);
        logins.add(first.clone());
        for i in 0..MAX_PENDING {
            logins.add(Pending::new(&format!("/{i}"), 100));
        }
        let cookie = logins.seal(&sealer);
        let mut read = PendingLogins::open(&sealer, Some(&cookie), 50);
        assert_eq!(read.0.len(), MAX_PENDING);
        assert!(
            read.take(&first.state()).is_none(),
            "the oldest was dropped"
        );
        let last = read.0.last().unwrap().clone();
        assert_eq!(read.take(&last.state()), Some(last.clone()));
        assert!(read.take(&last.state()).is_none(), "once");
        assert!(
            PendingLogins::open(&sealer, Some(&cookie), 100).is_empty(),
            "expired"
        );
        assert!(
            PendingLogins::open(&Sealer::from_material(b"other"), Some(&cookie), 50).is_empty()
        );
        assert!(PendingLogins::open(&sealer, Some("garbage"), 50).is_empty());
    }

    #[test]
    fn the_cookie_stays_small_whatever_the_return_target() {
        let sealer = sealer();
        let mut logins = PendingLogins::default();
        for _ in 0..MAX_PENDING {
            logins.add(Pending::new(&format!("/{}", "p".repeat(500)), 100));
        }
        assert!(logins.seal(&sealer).len() < 2500);
        assert_eq!(bounded_return(&format!("/a?{}", "q".repeat(4000))), "/a");
        assert_eq!(bounded_return(&format!("/{}", "p".repeat(4000))), "/");
        assert_eq!(bounded_return("/a?b=c"), "/a?b=c");
    }
}
