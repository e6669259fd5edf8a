//! The cluster key and the frame authentication tag (HMAC-SHA256/128).

use core::fmt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of the authentication tag on every frame.
pub const TAG_LEN: usize = 16;
/// Shortest accepted cluster secret: 128 bits.
pub const MIN_KEY_LEN: usize = 16;

/// The cluster's shared secret, ready to tag and verify frames.
///
/// The HMAC pads are hashed once here, so each frame pays only for its own
/// bytes. The secret itself is not kept.
#[derive(Clone)]
pub struct Key {
    keyed: Hmac<Sha256>,
}

/// Why a secret was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeyError {
    /// The secret is shorter than [`MIN_KEY_LEN`] bytes.
    TooShort {
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooShort { len } => write!(
                f,
                "cluster secret is {len} bytes; at least {MIN_KEY_LEN} random bytes are required"
            ),
        }
    }
}

impl core::error::Error for KeyError {}

impl Key {
    /// Prepares `secret` (at least [`MIN_KEY_LEN`] bytes) for use.
    pub fn new(secret: &[u8]) -> Result<Key, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        let keyed = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| KeyError::TooShort { len: secret.len() })?;
        Ok(Key { keyed })
    }

    /// The tag of `bytes`.
    #[must_use]
    pub fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// A 32-byte secret for `context`, derived from this key with
    /// HMAC-SHA256 as a pseudo-random function (one block of HKDF-Expand).
    /// Knowing the derived secret reveals nothing of this key: a dongle is
    /// given such a secret so it never holds the cluster key.
    #[must_use]
    pub fn derive(&self, context: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(context);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `bytes`, compared in constant time.
    #[must_use]
    pub fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.keyed.clone();
        mac.update(bytes);
        tag.len() == TAG_LEN && mac.verify_truncated_left(tag).is_ok()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_short_secrets() {
        assert_eq!(
            Key::new(b"short").unwrap_err(),
            KeyError::TooShort { len: 5 }
        );
    }

    #[test]
    fn tag_verifies_only_under_the_same_key_and_bytes() {
        let a = Key::new(b"0123456789abcdef").unwrap();
        let b = Key::new(b"0123456789abcdeg").unwrap();
        let tag = a.tag(b"frame");
        assert!(a.verify(b"frame", &tag));
        assert!(!b.verify(b"frame", &tag));
        assert!(!a.verify(b"frams", &tag));
        assert!(!a.verify(b"frame", &tag[..15]));
    }

    #[test]
    fn matches_rfc_4231_case_2_truncated() {
        // RFC 4231 test case 2 uses a 4-byte key; pad it by the HMAC rule
        // (keys shorter than a block are zero-padded), which gives the same tag.
        let mut secret = [0u8; 16];
        secret[..4].copy_from_slice(b"Jefe");
        let key = Key::new(&secret).unwrap();
        let tag = key.tag(b"what do ya want for nothing?");
        assert_eq!(
            tag,
            [
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7
            ]
        );
    }
}
