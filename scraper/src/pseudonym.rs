//! Seller pseudonyms: the keyed HMAC-SHA256 that replaces a seller's store id or nickname before
//! a record leaves the process, so the topic never holds the raw identity.

use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Maps a raw seller identity to the hex HMAC-SHA256 of it under a secret key.
#[derive(Clone)]
pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymiser(<keyed>)")
    }
}

/// The key is missing or empty.
#[derive(Debug, thiserror::Error)]
#[error(
    "scraper.seller_hmac_key is not set (or empty): set it in the config file or as \
     MARKETFLOW__SCRAPER__SELLER_HMAC_KEY; sellers are pseudonymised with it and it must stay \
     the same across runs"
)]
pub struct MissingKey;

impl Pseudonymiser {
    /// A pseudonymiser under `key`.
    ///
    /// # Errors
    /// [`MissingKey`] when there is no key or it is empty.
    pub fn new(key: Option<&SecretString>) -> Result<Self, MissingKey> {
        let key = key.map(ExposeSecret::expose_secret).unwrap_or_default();
        if key.is_empty() {
            return Err(MissingKey);
        }
        let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|_| MissingKey)?;
        Ok(Self { mac })
    }

    /// The pseudonym of `raw`: 64 lowercase hex digits.
    pub fn pseudonymise(&self, raw: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(raw.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(digest.len() * 2);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        hex
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let p = Pseudonymiser::new(Some(&SecretString::from("Jefe"))).unwrap();
        assert_eq!(
            p.pseudonymise("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_missing_or_empty_key_is_refused() {
        assert!(Pseudonymiser::new(None).is_err());
        assert!(Pseudonymiser::new(Some(&SecretString::from(""))).is_err());
    }

    #[test]
    fn different_keys_give_different_pseudonyms_and_debug_hides_the_key() {
        let a = Pseudonymiser::new(Some(&SecretString::from("key-a"))).unwrap();
        let b = Pseudonymiser::new(Some(&SecretString::from("key-b"))).unwrap();
        assert_ne!(a.pseudonymise("777"), b.pseudonymise("777"));
        assert_eq!(a.pseudonymise("777"), a.pseudonymise("777"));
        assert!(!format!("{a:?}").contains("key-a"));
    }
}
