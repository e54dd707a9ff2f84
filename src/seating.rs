//! Reserved seating: seat maps, seat names, what a reserve asks for in a seated
//! category, and the live map of taken seats.
//!
//! A seated category's stock keeps its seats in Redis next to its counters (see
//! [`crate::keyspace`]): one bitmap with one bit per seat (1 = held or sold), each
//! row starting on a byte boundary, a string of 16-bit free counts (one per row),
//! a string of 16-bit row sizes, a string of 16-bit upper bounds of each row's longest
//! free run, and a hash from row name to `index:byte offset:seats` (plus `#index` to row
//! name). A reserve reads a constant number of keys whatever the venue size: the free
//! counts and run bounds (to skip rows without enough free or adjacent seats), the row
//! sizes and at most the bitmap once; named seats look their rows up in one `HMGET`.

use crate::infrastructure::RedisConnection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::CategoryId;
use crate::keyspace::Keyspace;
use crate::validation::{FieldError, FieldErrors};

/// The seat layout's Lua helpers (`seating/prelude.lua`): the seat keys by name, laying out
/// a map, taking and freeing seats, finding seats by name. Every script that touches seats
/// starts with it (the script loader concatenates it, `LuaScript::with_preludes`).
pub const PRELUDE: &str = include_str!("seating/prelude.lua");

/// Most rows in one seat map.
pub const ROWS_MAX: usize = 1000;
/// Most seats in one row.
pub const SEATS_PER_ROW_MAX: i64 = 1000;
/// Most seats in one category.
pub const SEATS_MAX: i64 = 100_000;
/// Longest row name, in characters.
pub const ROW_NAME_LENGTH_MAX: usize = 8;
/// Most seats named in one request; a seat list is also bounded by the category's
/// `max_per_user`, which the reserve script checks.
pub const SEATS_PER_REQUEST_MAX: usize = 1000;

/// One row of a seat map: its name and how many seats it has (numbered from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"row": "A", "seats": 20}))]
pub struct SeatRow {
    /// 1..8 ASCII letters and digits, case-sensitive, unique in the map.
    pub row: String,
    /// 1..1000 seats, named `ROW-1` to `ROW-N`.
    pub seats: i64,
}

/// A validated seat map: 1..1000 rows with unique names, at most 100,000 seats in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeatMap(Vec<SeatRow>);

impl SeatMap {
    /// Validates raw rows; errors name the field as `seat_map[i].row` or `seat_map[i].seats`.
    pub fn parse(rows: Vec<(Option<String>, Option<i64>)>) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        if rows.is_empty() || rows.len() > ROWS_MAX {
            errors.add("seat_map", format!("must have 1 to {ROWS_MAX} rows"));
        }
        let mut names = std::collections::HashSet::with_capacity(rows.len());
        let mut parsed = Vec::with_capacity(rows.len());
        let mut total: i64 = 0;
        for (index, (row, seats)) in rows.into_iter().enumerate() {
            let row_field = format!("seat_map[{index}].row");
            let seats_field = format!("seat_map[{index}].seats");
            let row = errors.require(&row_field, row).and_then(|row| errors.check(&row_field, parse_row_name(&row)));
            if let Some(row) = &row
                && !names.insert(row.clone())
            {
                errors.add(&row_field, "is a duplicate row name");
            }
            let seats = errors.require(&seats_field, seats).and_then(|seats| {
                let valid = (1..=SEATS_PER_ROW_MAX).contains(&seats);
                errors.check(
                    &seats_field,
                    if valid { Ok(seats) } else { Err(format!("must be 1 to {SEATS_PER_ROW_MAX}")) },
                )
            });
            total = total.saturating_add(seats.unwrap_or(0));
            if let (Some(row), Some(seats)) = (row, seats) {
                parsed.push(SeatRow { row, seats });
            }
        }
        if total > SEATS_MAX {
            errors.add("seat_map", format!("must have at most {SEATS_MAX} seats in all"));
        }
        errors.finish(|| Self(parsed))
    }

    /// The rows in map order.
    pub fn rows(&self) -> &[SeatRow] {
        &self.0
    }

    /// How many seats the map has: the category's quota.
    pub fn seat_count(&self) -> i64 {
        self.0.iter().map(|row| row.seats).sum()
    }

    /// Row sizes as 16-bit big-endian integers, one per row: the free counts a new stock
    /// starts with, and its row sizes (see the module docs).
    pub fn sizes_u16(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() * 2);
        for row in &self.0 {
            // Row sizes are at most SEATS_PER_ROW_MAX, far below u16::MAX.
            let seats = u16::try_from(row.seats).unwrap_or(u16::MAX);
            bytes.extend_from_slice(&seats.to_be_bytes());
        }
        bytes
    }

    /// The map as JSON text (how Postgres keeps it).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("seat maps serialize")
    }

    /// A map from its JSON text, trusted (it was validated when stored).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text).map(Self)
    }
}

impl sqlx::Type<sqlx::Postgres> for SeatMap {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'row> sqlx::Decode<'row, sqlx::Postgres> for SeatMap {
    fn decode(value: sqlx::postgres::PgValueRef<'row>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(Self::from_json(text)?)
    }
}

fn parse_row_name(row: &str) -> Result<String, String> {
    let valid = (1..=ROW_NAME_LENGTH_MAX).contains(&row.len()) && row.bytes().all(|byte| byte.is_ascii_alphanumeric());
    if valid { Ok(row.to_owned()) } else { Err(format!("must be 1 to {ROW_NAME_LENGTH_MAX} ASCII letters and digits")) }
}

/// A well-formed seat name `ROW-N`: a row name and a number from 1 without leading
/// zeros. Whether the seat exists is the reserve script's check, against the map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeatName(String);

impl SeatName {
    /// Accepts `ROW-N` with a valid row name and N in 1..=1000 written without leading zeros.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}` is not a seat: seats are named ROW-N, such as A-1");
        let (row, number) = text.rsplit_once('-').ok_or_else(invalid)?;
        parse_row_name(row).map_err(|_| invalid())?;
        let digits_only = !number.is_empty() && number.bytes().all(|byte| byte.is_ascii_digit());
        if !digits_only || number.starts_with('0') || number.len() > 4 {
            return Err(invalid());
        }
        let value: i64 = number.parse().map_err(|_| invalid())?;
        if value > SEATS_PER_ROW_MAX {
            return Err(invalid());
        }
        Ok(Self(text.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a reserve in a seated category asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SeatSelection {
    /// No seat fields: the best adjacent seats, or else the first free ones in map order
    /// (also how a counted category is reserved).
    Any,
    /// `"adjacent": true`: only the best run of adjacent seats.
    Adjacent,
    /// These seats (distinct, in request order), all or nothing.
    Named(Vec<SeatName>),
}

impl SeatSelection {
    /// The mode the reserve script takes: `any`, `adjacent` or `named`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Adjacent => "adjacent",
            Self::Named(_) => "named",
        }
    }
}

/// One row of the live map: which seats are held or sold now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LiveRow {
    /// The row name.
    pub row: String,
    /// Seats in the row.
    pub seats: i64,
    /// Numbers of the seats held or sold now, ascending.
    pub taken: Vec<i64>,
}

/// `GET /categories/{id}/seats`: a seated category's live map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({"category_id": 7, "rows": [{"row": "A", "seats": 20, "taken": [3, 4, 17]},
    {"row": "B", "seats": 20, "taken": []}]}))]
pub struct LiveSeats {
    /// The category.
    pub category_id: i64,
    /// Rows in map order.
    pub rows: Vec<LiveRow>,
}

/// Bit `seat` (0-based, across the whole bitmap) of a Redis bitmap: bit 0 is the
/// highest bit of the first byte, as `SETBIT` counts.
fn bit_is_set(bitmap: &[u8], bit: usize) -> bool {
    bitmap.get(bit / 8).is_some_and(|byte| byte & (0x80 >> (bit % 8)) != 0)
}

/// Reads the taken seats of `map` from the category's bitmap in one `GET`; `None` when
/// the bitmap is missing (the stock was lost).
pub async fn live_seats(
    redis: &mut RedisConnection,
    keys: &Keyspace,
    category: CategoryId,
    map: &SeatMap,
) -> redis::RedisResult<Option<LiveSeats>> {
    let bitmap: Option<Vec<u8>> = redis::cmd("GET").arg(keys.seats(category)).query_async(redis).await?;
    let Some(bitmap) = bitmap else { return Ok(None) };
    Ok(Some(taken_seats(category, map, &bitmap)))
}

/// The live map of `map` given its bitmap (rows start on byte boundaries).
pub fn taken_seats(category: CategoryId, map: &SeatMap, bitmap: &[u8]) -> LiveSeats {
    let mut rows = Vec::with_capacity(map.rows().len());
    let mut byte_offset = 0usize;
    for row in map.rows() {
        let seats = usize::try_from(row.seats).unwrap_or(0);
        let taken = (0..seats)
            .filter(|&seat| bit_is_set(bitmap, byte_offset * 8 + seat))
            .filter_map(|seat| i64::try_from(seat + 1).ok())
            .collect();
        rows.push(LiveRow { row: row.row.clone(), seats: row.seats, taken });
        byte_offset += seats.div_ceil(8);
    }
    LiveSeats { category_id: category.get(), rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[(&str, i64)]) -> Result<SeatMap, Vec<FieldError>> {
        SeatMap::parse(rows.iter().map(|(row, seats)| (Some(row.to_string()), Some(*seats))).collect())
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|error| error.field).collect()
    }

    #[test]
    fn seat_maps_are_validated() {
        let valid = map(&[("A", 20), ("B2", 1000)]).unwrap();
        assert_eq!(valid.seat_count(), 1020);
        assert_eq!(valid.sizes_u16(), vec![0, 20, 3, 232]);
        assert_eq!(fields(map(&[]).unwrap_err()), ["seat_map"]);
        assert_eq!(fields(map(&[("A", 1), ("A", 2)]).unwrap_err()), ["seat_map[1].row"]);
        assert_eq!(
            fields(map(&[("A-1", 1), ("ABCDEFGHI", 0)]).unwrap_err()),
            ["seat_map[0].row", "seat_map[1].row", "seat_map[1].seats"]
        );
        let too_many: Vec<(String, i64)> = (0..101).map(|index| (format!("R{index}"), 1000)).collect();
        let too_many: Vec<(&str, i64)> = too_many.iter().map(|(row, seats)| (row.as_str(), *seats)).collect();
        assert_eq!(fields(map(&too_many).unwrap_err()), ["seat_map"]);
        assert_eq!(fields(SeatMap::parse(vec![(None, None)]).unwrap_err()), ["seat_map[0].row", "seat_map[0].seats"]);
    }

    #[test]
    fn seat_maps_round_trip_as_json() {
        let valid = map(&[("A", 3)]).unwrap();
        assert_eq!(valid.to_json(), r#"[{"row":"A","seats":3}]"#);
        assert_eq!(SeatMap::from_json(&valid.to_json()).unwrap(), valid);
    }

    #[test]
    fn seat_names_are_row_dash_number() {
        for good in ["A-1", "AB12-20", "z-1000"] {
            assert!(SeatName::parse(good).is_ok(), "{good}");
        }
        for bad in ["A-0", "A-03", "A-", "-1", "A1", "A-1001", "A B-1", "ABCDEFGHI-1", "A--1", "A-1a"] {
            assert!(SeatName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_live_map_reads_byte_aligned_rows() {
        let seats = map(&[("A", 10), ("B", 3)]).unwrap();
        // Row A: bits 0..10 (bytes 0-1), seats 3 and 10 taken; row B: byte 2, seat 1 taken.
        let bitmap = [0b0010_0000, 0b0100_0000, 0b1000_0000];
        let live = taken_seats(CategoryId::new(7).unwrap(), &seats, &bitmap);
        assert_eq!(live.rows[0].taken, [3, 10]);
        assert_eq!(live.rows[1].taken, [1]);
        assert_eq!(live.category_id, 7);
    }
}
