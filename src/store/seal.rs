//! Encryption at rest for the tokens a session keeps (ID token for logout, refresh token):
//! ChaCha20-Poly1305 with a random nonce, under a key derived with HKDF-SHA256 from key
//! material every replica shares. Sealing uses the current key; opening also tries the
//! previous keys, so a key can roll without making stored sessions unreadable.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// What a sealer's keys are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Tokens kept in stored sessions (refresh token, ID token).
    SessionTokens,
    /// Logins in progress, in the browser's login cookie.
    LoginCookies,
    /// The one-time codes that carry a new personal access token to `authgate login`.
    CliCodes,
}

/// Seals and opens token strings.
#[derive(Clone)]
pub struct Sealer {
    /// The current key's cipher, then the previous keys'.
    ciphers: Vec<ChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Derives the key from shared key material (a key file's bytes).
    pub fn from_material(material: &[u8]) -> Sealer {
        Self::with_previous(material, &[])
    }

    /// Seals with a key derived from `current`; opens with it or one from `previous`.
    pub fn with_previous(current: &[u8], previous: &[Vec<u8>]) -> Sealer {
        Self::for_purpose(Purpose::SessionTokens, current, previous)
    }

    /// As [`Self::with_previous`], with keys of their own for `purpose`: what one purpose
    /// sealed never opens as another's.
    pub fn for_purpose(purpose: Purpose, current: &[u8], previous: &[Vec<u8>]) -> Sealer {
        let salt: &[u8] = match purpose {
            Purpose::SessionTokens => b"authgate session tokens v1",
            Purpose::LoginCookies => b"authgate login cookies v1",
            Purpose::CliCodes => b"authgate cli codes v1",
        };
        let cipher = |material: &[u8]| {
            let mut key = [0u8; 32];
            Hkdf::<Sha256>::new(Some(salt), material)
                .expand(b"chacha20poly1305", &mut key)
                .expect("32 bytes is a valid HKDF output length");
            ChaCha20Poly1305::new(&Key::from(key))
        };
        Sealer {
            ciphers: std::iter::once(current)
                .chain(previous.iter().map(Vec::as_slice))
                .map(cipher)
                .collect(),
        }
    }

    /// Encrypts `plain` → `base64url(nonce || ciphertext)`.
    pub fn seal(&self, plain: &str) -> String {
        let nonce_bytes: [u8; 12] = rand::random();
        let sealed = self.ciphers[0]
            .encrypt(&Nonce::from(nonce_bytes), plain.as_bytes())
            .expect("encryption of a string cannot fail");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts what [`Sealer::seal`] produced, under the current or a previous key; `None` if it
    /// was tampered with or sealed under another key.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let nonce = Nonce::from(nonce);
        let plain = self
            .ciphers
            .iter()
            .find_map(|c| c.decrypt(&nonce, ciphertext).ok())?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_tampering_and_other_keys() {
        let a = Sealer::from_material(b"key material");
        let sealed = a.seal("refresh-token-value");
        assert!(!sealed.contains("refresh"));
        assert_eq!(a.open(&sealed).as_deref(), Some("refresh-token-value"));
        assert_ne!(a.seal("x"), a.seal("x"), "random nonces");
        let b = Sealer::from_material(b"other material");
        assert_eq!(b.open(&sealed), None);
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(a.open(&String::from_utf8(tampered).unwrap()), None);
    }

    #[test]
    fn a_rolled_key_still_opens_what_the_previous_one_sealed() {
        let old = Sealer::from_material(b"old");
        let rolled = Sealer::with_previous(b"new", &[b"old".to_vec()]);
        let sealed_before = old.seal("t1");
        assert_eq!(rolled.open(&sealed_before).as_deref(), Some("t1"));
        let sealed_after = rolled.seal("t2");
        assert_eq!(
            Sealer::from_material(b"new").open(&sealed_after).as_deref(),
            Some("t2")
        );
        assert_eq!(
            old.open(&sealed_after),
            None,
            "sealed with the new key only"
        );
    }
}
