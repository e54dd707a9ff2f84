//! Queue passes: `KEY_ID.EPOCH.EXPIRES_MS.MAC`, where MAC is the hex HMAC-SHA256, under
//! the key `KEY_ID`, of the user, the event, the room's epoch and the expiry. The signature
//! and the expiry are checked in the process, against its clock; the epoch (how many times
//! the room was turned on when the pass was given) is checked by the caller against the
//! room's current epoch in Redis, so turning a room on voids every earlier pass.
//!
//! Keys rotate without invalidating live passes: `QUEUE_PASS_KEYS` lists `id:secret`
//! pairs; new passes are signed with the first, and a pass verifies under any listed key.

use std::fmt::Write as _;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::ids::EventId;
use crate::ids::UserId;

type HmacSha256 = Hmac<Sha256>;

/// HKDF salt of the pass key derived from `JWT_SECRET`.
const PASS_KEY_SALT: &[u8] = b"stampede/queue-pass/salt/v1";
/// HKDF info (purpose) of the pass key derived from `JWT_SECRET`.
const PASS_KEY_INFO: &[u8] = b"stampede queue pass signing key v1";

/// Why a pass was refused (the label of `queue_pass_rejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassRejection {
    /// No `Queue-Pass` header.
    #[error("missing")]
    Missing,
    /// Not of the form `KEY_ID.EXPIRES_MS.MAC`.
    #[error("malformed")]
    Malformed,
    /// Signed with a key this process does not have.
    #[error("unknown_key")]
    UnknownKey,
    /// Forged, altered, or another user's or another event's pass.
    #[error("bad_signature")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Given before the room was last turned on.
    #[error("voided")]
    Voided,
}

impl PassRejection {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::Voided => "voided",
        }
    }
}

/// Why `QUEUE_PASS_KEYS` could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "QUEUE_PASS_KEYS must be a comma-separated list of id:secret (ids of letters, digits, - or _; unique; secrets of at least 16 bytes)"
)]
pub struct PassKeysError;

/// The signing keys, the first one signing.
#[derive(Clone)]
pub struct PassKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for PassKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        formatter.debug_struct("PassKeys").field("ids", &ids).finish_non_exhaustive()
    }
}

impl PassKeys {
    /// Parses `id:secret,id:secret`.
    pub fn parse(text: &Secret) -> Result<Self, PassKeysError> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for entry in text.expose().split(',') {
            let (id, secret) = entry.trim().split_once(':').ok_or(PassKeysError)?;
            let id_valid = !id.is_empty()
                && id.len() <= 32
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_valid || secret.len() < 16 || keys.iter().any(|(known, _)| known == id) {
                return Err(PassKeysError);
            }
            keys.push((id.to_owned(), secret.as_bytes().to_vec()));
        }
        Ok(Self { keys })
    }

    /// One key derived from the JWT secret, for deployments without `QUEUE_PASS_KEYS`:
    /// HKDF-SHA256 (RFC 5869) with the secret as input keying material, a fixed salt and
    /// the purpose as info, so the pass key is never the JWT key itself, and knowing a
    /// pass key tells nothing of the secret.
    pub fn derived_from(jwt_secret: &Secret) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(PASS_KEY_SALT), jwt_secret.expose().as_bytes());
        let mut key = [0_u8; 32];
        hkdf.expand(PASS_KEY_INFO, &mut key).expect("32 bytes is a valid HKDF-SHA256 output length");
        Self { keys: vec![("jwt".to_owned(), key.to_vec())] }
    }

    /// A pass for `user` in `event` during the room's `epoch`, valid until `expires_ms`.
    pub fn sign(&self, user: &UserId, event: EventId, epoch: u64, expires_ms: i64) -> String {
        let (id, key) = &self.keys[0];
        let mac = mac(key, user, event, epoch, expires_ms).finalize().into_bytes();
        let mut pass = format!("{id}.{epoch}.{expires_ms}.");
        for byte in mac {
            let _ = write!(pass, "{byte:02x}");
        }
        pass
    }

    /// Checks a pass of `user` for `event` at `now_ms` (the process clock); returns the
    /// room epoch it was given in, which the caller compares with the room's.
    pub fn verify(&self, pass: Option<&str>, user: &UserId, event: EventId, now_ms: i64) -> Result<u64, PassRejection> {
        let pass = pass.ok_or(PassRejection::Missing)?;
        let mut parts = pass.split('.');
        let (Some(id), Some(epoch), Some(expires), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PassRejection::Malformed);
        };
        let epoch: u64 = epoch.parse().map_err(|_| PassRejection::Malformed)?;
        let expires_ms: i64 = expires.parse().map_err(|_| PassRejection::Malformed)?;
        let signature = decode_hex(signature).ok_or(PassRejection::Malformed)?;
        let (_, key) = self.keys.iter().find(|(known, _)| known == id).ok_or(PassRejection::UnknownKey)?;
        mac(key, user, event, epoch, expires_ms).verify_slice(&signature).map_err(|_| PassRejection::BadSignature)?;
        if now_ms >= expires_ms {
            return Err(PassRejection::Expired);
        }
        Ok(epoch)
    }
}

fn mac(key: &[u8], user: &UserId, event: EventId, epoch: u64, expires_ms: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("stampede-queue-pass/v2\n{}\n{epoch}\n{expires_ms}\n", event.get()).as_bytes());
    mac.update(user.as_str().as_bytes());
    mac
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> PassKeys {
        PassKeys::parse(&Secret::new(text)).unwrap()
    }

    #[test]
    fn a_pass_verifies_for_its_user_and_event_until_it_expires() {
        let keys = keys("k1:0123456789abcdef0123");
        let alice = UserId::parse("alice").unwrap();
        let event = EventId::new(7).unwrap();
        let pass = keys.sign(&alice, event, 3, 2_000);
        assert_eq!(keys.verify(Some(&pass), &alice, event, 1_999), Ok(3));
        assert_eq!(keys.verify(Some(&pass), &alice, event, 2_000), Err(PassRejection::Expired));
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(keys.verify(Some(&pass), &bob, event, 0), Err(PassRejection::BadSignature));
        assert_eq!(keys.verify(Some(&pass), &alice, EventId::new(8).unwrap(), 0), Err(PassRejection::BadSignature));
        let altered = pass.replace(".2000.", ".9000.");
        assert_eq!(keys.verify(Some(&altered), &alice, event, 0), Err(PassRejection::BadSignature));
        let other_epoch = pass.replacen(".3.", ".4.", 1);
        assert_eq!(keys.verify(Some(&other_epoch), &alice, event, 0), Err(PassRejection::BadSignature));
        assert_eq!(keys.verify(None, &alice, event, 0), Err(PassRejection::Missing));
        assert_eq!(keys.verify(Some("x.y"), &alice, event, 0), Err(PassRejection::Malformed));
    }

    #[test]
    fn rotation_keeps_old_passes_valid() {
        let alice = UserId::parse("alice").unwrap();
        let event = EventId::new(1).unwrap();
        let old = keys("old:0123456789abcdef0123").sign(&alice, event, 0, 10_000);
        let rotated = keys("new:fedcba98765432100000,old:0123456789abcdef0123");
        assert_eq!(rotated.verify(Some(&old), &alice, event, 0), Ok(0));
        assert!(rotated.sign(&alice, event, 0, 10_000).starts_with("new."));
        let retired = keys("new:fedcba98765432100000");
        assert_eq!(retired.verify(Some(&old), &alice, event, 0), Err(PassRejection::UnknownKey));
    }

    #[test]
    fn the_derived_key_is_hkdf_of_the_jwt_secret_and_never_the_secret() {
        let secret = Secret::new("a-jwt-secret-of-thirty-two-bytes!");
        let derived = PassKeys::derived_from(&secret);
        let hkdf = Hkdf::<Sha256>::new(Some(PASS_KEY_SALT), secret.expose().as_bytes());
        let mut expected = [0_u8; 32];
        hkdf.expand(PASS_KEY_INFO, &mut expected).unwrap();
        assert_eq!(derived.keys, vec![("jwt".to_owned(), expected.to_vec())]);
        assert_ne!(derived.keys[0].1, secret.expose().as_bytes());
        // A pass signed with the secret itself as the key does not verify.
        let alice = UserId::parse("alice").unwrap();
        let event = EventId::new(1).unwrap();
        let raw = PassKeys { keys: vec![("jwt".to_owned(), secret.expose().as_bytes().to_vec())] };
        let forged = raw.sign(&alice, event, 0, 10_000);
        assert_eq!(derived.verify(Some(&forged), &alice, event, 0), Err(PassRejection::BadSignature));
        assert_eq!(derived.verify(Some(&derived.sign(&alice, event, 0, 10_000)), &alice, event, 0), Ok(0));
    }

    #[test]
    fn bad_key_lists_are_refused() {
        for text in ["", "k1", "k1:short", "k.1:0123456789abcdef0123", "a:0123456789abcdef,a:0123456789abcdef"] {
            assert!(PassKeys::parse(&Secret::new(text)).is_err(), "{text}");
        }
    }
}
