//! Identifiers, validated at the edge: event, category, user and reservation ids.
//!
//! A leaf module: everything else in the crate may use it, it uses nothing of the crate.

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

/// Longest accepted `sub`, in characters.
pub const SUBJECT_LENGTH_MAX: usize = 128;

/// A positive event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EventId(i64);

impl EventId {
    /// Accepts only positive ids.
    pub fn new(id: i64) -> Option<Self> {
        (id > 0).then_some(Self(id))
    }

    /// The numeric id.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A stored id that is not valid: a row that breaks the schema's constraints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} id {id}")]
pub struct InvalidId {
    /// Which id.
    pub kind: &'static str,
    /// The value.
    pub id: i64,
}

impl TryFrom<i64> for EventId {
    type Error = InvalidId;

    fn try_from(id: i64) -> Result<Self, InvalidId> {
        Self::new(id).ok_or(InvalidId { kind: "event", id })
    }
}

/// A positive ticket-category id, below 2^32 so that reservation ids can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CategoryId(i64);

impl CategoryId {
    /// Accepts only ids in `1..2^32`.
    pub fn new(id: i64) -> Option<Self> {
        (id > 0 && id <= i64::from(u32::MAX)).then_some(Self(id))
    }

    /// The numeric id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for CategoryId {
    type Error = InvalidId;

    fn try_from(id: i64) -> Result<Self, InvalidId> {
        Self::new(id).ok_or(InvalidId { kind: "category", id })
    }
}

/// A validated caller identity (`sub`): non-empty, at most 128 characters, no control
/// characters (Unicode `Cc`: C0, DEL and C1). The subject becomes the `user_id` of every
/// event and row of the caller; a NUL there is a value Postgres refuses to store, so it
/// would poison the pipeline instead of failing the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UserId(String);

impl UserId {
    /// Validates a subject.
    pub fn parse(subject: &str) -> Result<Self, String> {
        if subject.is_empty() {
            return Err("sub must not be empty".to_owned());
        }
        if subject.chars().count() > SUBJECT_LENGTH_MAX {
            return Err(format!("sub must be at most {SUBJECT_LENGTH_MAX} characters"));
        }
        if subject.chars().any(char::is_control) {
            return Err("sub must not contain control characters".to_owned());
        }
        if subject.chars().any(is_format_character) {
            return Err("sub must not contain Unicode format characters (bidi overrides, zero-width)".to_owned());
        }
        Ok(Self(subject.to_owned()))
    }

    /// The subject text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The code points of Unicode's general category Cf (format), as of Unicode 15.1: bidi
/// overrides, zero-width joiners and spaces, tags. They render as nothing or reorder text,
/// so a subject holding one could pass for another in admin views and logs.
const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `character` is in Unicode's general category Cf.
fn is_format_character(character: char) -> bool {
    FORMAT_CHARACTERS.iter().any(|&(first, last)| (first..=last).contains(&character))
}

/// A reservation id: a UUID (version 8) whose last four bytes carry the category id,
/// so every request can find the reservation's Redis hash tag from the id alone.
///
/// Layout: bytes 0..6 Unix milliseconds (for index locality only; never used for
/// expiry), then random bits around the version and variant, then the category id
/// as a big-endian `u32` in bytes 12..16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationId {
    uuid: Uuid,
    category: CategoryId,
}

impl ReservationId {
    /// A new id for a reservation in `category`.
    pub fn generate(category: CategoryId) -> Self {
        let millis = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        let mut bytes = *Uuid::new_v4().as_bytes();
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        let category_bits = u32::try_from(category.get()).expect("category ids fit in 32 bits");
        bytes[12..].copy_from_slice(&category_bits.to_be_bytes());
        let uuid = Uuid::new_v8(bytes);
        Self { uuid, category }
    }

    /// Parses a reservation id; `None` for anything that is not one of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let uuid = Uuid::try_parse(text).ok()?;
        Self::from_uuid(uuid)
    }

    /// Interprets a UUID as a reservation id.
    pub fn from_uuid(uuid: Uuid) -> Option<Self> {
        if uuid.get_version_num() != 8 {
            return None;
        }
        let bytes = uuid.as_bytes();
        let category = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let category = CategoryId::new(i64::from(category))?;
        Some(Self { uuid, category })
    }

    /// The UUID.
    pub fn uuid(self) -> Uuid {
        self.uuid
    }

    /// The category the reservation belongs to.
    pub fn category(self) -> CategoryId {
        self.category
    }
}

impl std::fmt::Display for ReservationId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.uuid.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive() {
        assert!(EventId::new(0).is_none());
        assert!(CategoryId::new(-3).is_none());
        assert!(CategoryId::new(i64::from(u32::MAX) + 1).is_none());
        assert_eq!(CategoryId::new(7).unwrap().get(), 7);
    }

    #[test]
    fn reservation_ids_carry_their_category() {
        let category = CategoryId::new(4_000_000_000).unwrap();
        let id = ReservationId::generate(category);
        let parsed = ReservationId::parse(&id.to_string()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.category(), category);
        assert_eq!(id.uuid().get_version_num(), 8);
    }

    #[test]
    fn foreign_uuids_are_not_reservation_ids() {
        assert!(ReservationId::parse(&Uuid::new_v4().to_string()).is_none());
        assert!(ReservationId::parse("not-a-uuid").is_none());
        assert!(ReservationId::from_uuid(Uuid::new_v8([0; 16])).is_none(), "category 0 is invalid");
    }
}
