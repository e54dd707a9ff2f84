//! The hold record: its stored layout (one definition, in Rust), the one Rust writer of
//! records ([`record_fields_of`]), the reader ([`reservation_from_record`]), and the
//! builders that hand the layout to every Lua script that writes records.

use std::sync::LazyLock;

use crate::contract::{Reservation, ReservationStatus, seat_list};
use crate::ids::ReservationId;
use crate::infrastructure::RedisConnection;
use crate::milliseconds;
use crate::script::LuaScript;

/// Helpers the reservation scripts start with.
const PRELUDE: &str = include_str!("prelude.lua");

/// A reservation script: the common and seating preludes, the hold-record layout, the
/// reservation prelude, then the script's own file.
pub(crate) fn with_prelude(name: &'static str, body: &str) -> LuaScript {
    LuaScript::with_preludes(name, &[crate::seating::PRELUDE, &record_fields_lua(), PRELUDE], body)
}

/// A script that starts with the common and seating preludes and the hold-record
/// layout's Lua definitions ([`record_fields_lua`]), for one that writes records without
/// the reservation prelude.
pub(crate) fn with_record_layout(name: &'static str, body: &str) -> LuaScript {
    LuaScript::with_preludes(name, &[crate::seating::PRELUDE, &record_fields_lua()], body)
}

/// The Lua definitions of the hold-record layout that every prelude script (and
/// `repair_stock`) starts with: [`RECORD_FIELDS`]; `FIELD`, each field's stored name
/// by its meaning (the legacy names of [`LEGACY_RECORD_FIELDS`]); and `RECORD`, each
/// field's position in [`RECORD_FIELDS`] (from 1) by its meaning, for a record read in
/// that order.
fn record_fields_lua() -> String {
    let quoted: Vec<String> = RECORD_FIELDS.iter().map(|field| format!("'{field}'")).collect();
    let stored = RECORD_FIELDS.iter().chain(&PAYMENT_FIELDS);
    let named: Vec<String> =
        LEGACY_RECORD_FIELDS.iter().zip(stored).map(|(meaning, field)| format!("{meaning} = '{field}'")).collect();
    let positions: Vec<String> = LEGACY_RECORD_FIELDS[..RECORD_FIELDS.len()]
        .iter()
        .enumerate()
        .map(|(index, meaning)| format!("{meaning} = {}", index + 1))
        .collect();
    format!(
        "local RECORD_FIELDS = {{{}}}\nlocal FIELD = {{{}}}\nlocal RECORD = {{{}}}\n",
        quoted.join(", "),
        named.join(", "),
        positions.join(", ")
    )
}

/// A script that answers the hold-record layout the prelude scripts run with, so a
/// test can compare what Redis sees with [`RECORD_FIELDS`].
static RECORD_LAYOUT: LazyLock<LuaScript> = LazyLock::new(|| with_prelude("record_layout", "return RECORD_FIELDS"));

/// The hold-record fields as the prelude scripts see them in Redis (for tests).
pub async fn record_layout(redis: &mut RedisConnection) -> redis::RedisResult<Vec<String>> {
    RECORD_LAYOUT.run(&RECORD_LAYOUT.prepare(), redis).await
}

/// The stored names of a hold record's fields: one or two letters, because a record is
/// otherwise mostly its field names (issue #15, "Memory per hold"). Each constant's
/// name is the field's meaning, which was also its stored name before (see
/// [`LEGACY_RECORD_FIELDS`]).
///
/// | stored | meaning | value |
/// | --- | --- | --- |
/// | `s` | `status` | held, paying, confirmed, cancelled or expired |
/// | `u` | `user_id` | the owner |
/// | `e` | `event_id` | the category's event |
/// | `c` | `category_id` | the category (also in the key's hash tag) |
/// | `q` | `quantity` | tickets held |
/// | `a` | `amount` | price * quantity, in minor units |
/// | `m` | `currency` | ISO 4217 code |
/// | `tc` | `created_at_ms` | when the hold was made (Redis time, ms) |
/// | `tx` | `expires_at_ms` | the hold's absolute deadline (ms) |
/// | `tf` | `confirmed_at_ms` | when it was confirmed (ms), once confirmed |
/// | `p` | `payment_id` | the gateway's payment id, once confirmed |
/// | `n` | `seats` | comma-separated seat names, in seated categories only |
/// | `pa` | `attempt` | the running payment attempt (kept after confirm) |
/// | `tp` | `paying_until_ms` | end of the payment window, while paying |
/// | `pk` | `payment_key` | key of the payment's idempotency record or '', while paying |
pub mod record_field {
    /// `status`.
    pub const STATUS: &str = "s";
    /// `user_id`.
    pub const USER_ID: &str = "u";
    /// `event_id`.
    pub const EVENT_ID: &str = "e";
    /// `category_id`.
    pub const CATEGORY_ID: &str = "c";
    /// `quantity`.
    pub const QUANTITY: &str = "q";
    /// `amount`.
    pub const AMOUNT: &str = "a";
    /// `currency`.
    pub const CURRENCY: &str = "m";
    /// `created_at_ms`.
    pub const CREATED_AT_MS: &str = "tc";
    /// `expires_at_ms`.
    pub const EXPIRES_AT_MS: &str = "tx";
    /// `confirmed_at_ms`.
    pub const CONFIRMED_AT_MS: &str = "tf";
    /// `payment_id`.
    pub const PAYMENT_ID: &str = "p";
    /// `seats`.
    pub const SEATS: &str = "n";
    /// `attempt`.
    pub const ATTEMPT: &str = "pa";
    /// `paying_until_ms`.
    pub const PAYING_UNTIL_MS: &str = "tp";
    /// `payment_key`.
    pub const PAYMENT_KEY: &str = "pk";
}

/// Fields of a hold record, in the order the scripts return them: the one definition of
/// the layout (names and meanings in [`record_field`]). The prelude scripts get it as
/// their `RECORD_FIELDS` table at load (`engine::with_prelude`); `reserve.lua` writes
/// these names itself, which an integration test checks against this list.
pub const RECORD_FIELDS: [&str; 12] = [
    record_field::STATUS,
    record_field::USER_ID,
    record_field::EVENT_ID,
    record_field::CATEGORY_ID,
    record_field::QUANTITY,
    record_field::AMOUNT,
    record_field::CURRENCY,
    record_field::CREATED_AT_MS,
    record_field::EXPIRES_AT_MS,
    record_field::CONFIRMED_AT_MS,
    record_field::PAYMENT_ID,
    record_field::SEATS,
];

/// The fields a record has while a payment runs, after [`RECORD_FIELDS`].
pub const PAYMENT_FIELDS: [&str; 3] = [record_field::ATTEMPT, record_field::PAYING_UNTIL_MS, record_field::PAYMENT_KEY];

/// The stored names of [`RECORD_FIELDS`] then [`PAYMENT_FIELDS`] in the layout before
/// issue #15, which records written by earlier versions still have (a rolling deploy,
/// or live holds across an upgrade). Every reader accepts both layouts: the scripts
/// rewrite such a record in today's layout before they touch it (the prelude's
/// `upgrade_record`), and plain reads ask for both names ([`RECORD_FIELDS_OF_BOTH_LAYOUTS`]).
pub const LEGACY_RECORD_FIELDS: [&str; 15] = [
    "status",
    "user_id",
    "event_id",
    "category_id",
    "quantity",
    "amount",
    "currency",
    "created_at_ms",
    "expires_at_ms",
    "confirmed_at_ms",
    "payment_id",
    "seats",
    "attempt",
    "paying_until_ms",
    "payment_key",
];

/// What a plain read (`HMGET`) of a record asks for: [`RECORD_FIELDS`], then the same
/// fields by their legacy names; [`either_layout`] picks the half the record has.
pub const RECORD_FIELDS_OF_BOTH_LAYOUTS: [&str; 24] = {
    let mut names = [""; 24];
    let mut index = 0;
    while index < RECORD_FIELDS.len() {
        names[index] = RECORD_FIELDS[index];
        names[RECORD_FIELDS.len() + index] = LEGACY_RECORD_FIELDS[index];
        index += 1;
    }
    names
};

/// The record fields of a read of [`RECORD_FIELDS_OF_BOTH_LAYOUTS`], in [`RECORD_FIELDS`]
/// order: today's half when the record has a status under its stored name, else the
/// legacy half (a record is wholly in one layout: the upgrade rewrites it in one script).
pub fn either_layout(mut fields: Vec<Option<String>>) -> Vec<Option<String>> {
    let legacy = fields.split_off(fields.len().min(RECORD_FIELDS.len()));
    if fields.first().is_some_and(Option::is_some) { fields } else { legacy }
}

/// Builds the contract's view of a stored hold record (fields in [`RECORD_FIELDS`]
/// order); `None` when the record is absent or malformed. `paying` reads as `held`.
pub fn reservation_from_record(id: ReservationId, fields: &[Option<String>]) -> Option<Reservation> {
    let [
        status,
        user_id,
        event_id,
        category_id,
        quantity,
        amount,
        currency,
        created,
        expires,
        confirmed,
        payment,
        seats,
    ] = fields
    else {
        return None;
    };
    let number = |field: &Option<String>| field.as_deref().and_then(|text| text.parse::<i64>().ok());
    let confirmed_at = match confirmed.as_deref() {
        None | Some("") => None,
        Some(text) => Some(milliseconds::to_time(text.parse().ok()?)),
    };
    Some(Reservation {
        id: id.uuid(),
        status: ReservationStatus::parse(status.as_deref()?)?,
        event_id: number(event_id)?,
        category_id: number(category_id)?,
        user_id: user_id.clone()?,
        quantity: number(quantity)?,
        amount: number(amount)?,
        currency: currency.clone()?,
        created_at: milliseconds::to_time(number(created)?),
        expires_at: milliseconds::to_time(number(expires)?),
        confirmed_at,
        payment_id: payment.clone().filter(|payment| !payment.is_empty()),
        seats: seats.as_deref().and_then(seat_list),
    })
}

/// A whole record in today's layout, fields in [`RECORD_FIELDS`] order: the one place Rust
/// writes a hold record (`worker reconcile --repair` restoring confirmed records);
/// [`reservation_from_record`] reads it back.
pub fn record_fields_of(reservation: &Reservation) -> [(&'static str, String); RECORD_FIELDS.len()] {
    [
        (record_field::STATUS, reservation.status.as_str().to_owned()),
        (record_field::USER_ID, reservation.user_id.clone()),
        (record_field::EVENT_ID, reservation.event_id.to_string()),
        (record_field::CATEGORY_ID, reservation.category_id.to_string()),
        (record_field::QUANTITY, reservation.quantity.to_string()),
        (record_field::AMOUNT, reservation.amount.to_string()),
        (record_field::CURRENCY, reservation.currency.clone()),
        (record_field::CREATED_AT_MS, reservation.created_at.timestamp_millis().to_string()),
        (record_field::EXPIRES_AT_MS, reservation.expires_at.timestamp_millis().to_string()),
        (record_field::CONFIRMED_AT_MS, milliseconds::optional_text(reservation.confirmed_at)),
        (record_field::PAYMENT_ID, reservation.payment_id.clone().unwrap_or_default()),
        (record_field::SEATS, reservation.seats.as_ref().map(|seats| seats.join(",")).unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CategoryId;

    fn record(status: &str) -> Vec<Option<String>> {
        let values = [status, "alice", "1", "7", "2", "3000", "USD", "1700000000000", "1700000600000", "", "", ""];
        values.iter().map(|value| Some(value.to_string())).collect()
    }

    #[test]
    fn records_become_the_contract_view() {
        let id = ReservationId::generate(CategoryId::new(7).unwrap());
        let held = reservation_from_record(id, &record("paying")).unwrap();
        assert_eq!(held.status, ReservationStatus::Held);
        assert_eq!((held.quantity, held.amount, held.user_id.as_str()), (2, 3000, "alice"));
        let json = serde_json::to_value(&held).unwrap();
        assert!(json.get("confirmed_at").is_none() && json.get("payment_id").is_none());
        let mut confirmed = record("confirmed");
        confirmed[9] = Some("1700000005000".into());
        confirmed[10] = Some("pay_1".into());
        let confirmed = reservation_from_record(id, &confirmed).unwrap();
        assert_eq!(confirmed.payment_id.as_deref(), Some("pay_1"));
        assert_eq!(confirmed.confirmed_at, Some(milliseconds::to_time(1_700_000_005_000)));
        let mut missing = record("held");
        missing[0] = None;
        assert!(reservation_from_record(id, &missing).is_none());
        assert!(reservation_from_record(id, &record("held")[..5]).is_none());
    }

    #[test]
    fn reads_take_the_layout_the_record_has() {
        // Goal: a read of both layouts' names yields the record in RECORD_FIELDS order whichever layout stored it.
        let stored = record("held");
        let absent = vec![None; RECORD_FIELDS.len()];
        assert_eq!(either_layout([stored.clone(), absent.clone()].concat()), stored);
        assert_eq!(either_layout([absent.clone(), stored.clone()].concat()), stored);
        assert_eq!(either_layout([absent.clone(), absent.clone()].concat()), absent);
        assert_eq!(RECORD_FIELDS_OF_BOTH_LAYOUTS[..RECORD_FIELDS.len()], RECORD_FIELDS);
        assert_eq!(RECORD_FIELDS_OF_BOTH_LAYOUTS[RECORD_FIELDS.len()..], LEGACY_RECORD_FIELDS[..RECORD_FIELDS.len()]);
    }

    #[test]
    fn the_writer_and_the_reader_agree() {
        // Goal: a record written by record_fields_of reads back as the same reservation, field names in RECORD_FIELDS order.
        let id = ReservationId::generate(CategoryId::new(7).unwrap());
        let mut confirmed = record("confirmed");
        confirmed[9] = Some("1700000005000".into());
        confirmed[10] = Some("pay_1".into());
        confirmed[11] = Some("A-1,A-2".into());
        let reservation = reservation_from_record(id, &confirmed).unwrap();
        let written = record_fields_of(&reservation);
        assert_eq!(written.clone().map(|(field, _)| field), RECORD_FIELDS);
        let values: Vec<Option<String>> = written.into_iter().map(|(_, value)| Some(value)).collect();
        assert_eq!(reservation_from_record(id, &values), Some(reservation));
    }

    /// The field names of a script's outbox XADD, in order, the optional `traceparent` last
    /// (written as `unpack(trace_fields(...))`).
    fn outbox_fields(script: &str) -> Vec<String> {
        let call = script.split("redis.call('XADD',").nth(1).unwrap().split(")\n").next().unwrap();
        let call = call.split_whitespace().collect::<Vec<_>>().join(" ");
        let (fixed, traced) = match call.split_once(", unpack(trace_fields(") {
            Some((fixed, _)) => (fixed, true),
            None => (call.as_str(), false),
        };
        let arguments: Vec<&str> = fixed.split(',').map(str::trim).skip(2).collect();
        let mut fields: Vec<String> =
            arguments.iter().step_by(2).map(|field| field.trim_matches('\'').to_owned()).collect();
        fields.extend(traced.then(|| "traceparent?".to_owned()));
        fields
    }

    #[test]
    fn the_prelude_gets_the_layout_from_rust() {
        assert!(!PRELUDE.contains("local RECORD_FIELDS"), "the layout has one definition: RECORD_FIELDS in Rust");
        assert!(!PRELUDE.contains("local FIELD "), "the stored names have one definition: record_field in Rust");
        // Pins the stored layout: changing a name strands every record written before.
        assert_eq!(
            record_fields_lua(),
            "local RECORD_FIELDS = {'s', 'u', 'e', 'c', 'q', 'a', 'm', 'tc', 'tx', 'tf', 'p', 'n'}\n\
             local FIELD = {status = 's', user_id = 'u', event_id = 'e', category_id = 'c', quantity = 'q', \
             amount = 'a', currency = 'm', created_at_ms = 'tc', expires_at_ms = 'tx', confirmed_at_ms = 'tf', \
             payment_id = 'p', seats = 'n', attempt = 'pa', paying_until_ms = 'tp', payment_key = 'pk'}\n\
             local RECORD = {status = 1, user_id = 2, event_id = 3, category_id = 4, quantity = 5, amount = 6, \
             currency = 7, created_at_ms = 8, expires_at_ms = 9, confirmed_at_ms = 10, payment_id = 11, seats = 12}\n"
        );
    }

    #[test]
    fn reserve_writes_the_outbox_entry_of_the_prelude() {
        let expected = ["event", "user_id", "payment_id", "seats", "traceparent?"];
        assert_eq!(outbox_fields(PRELUDE), expected);
        // The reserve prelude's entry: a seated hold's first, then a counted one's, which
        // has no seats and leaves the field out.
        let reserve_prelude = super::super::group_commit::RESERVE_PRELUDE;
        assert_eq!(outbox_fields(reserve_prelude), expected);
        let counted = &reserve_prelude[reserve_prelude.find("redis.call('XADD',").unwrap() + 1..];
        assert_eq!(outbox_fields(counted), ["event", "user_id", "payment_id", "traceparent?"]);
    }
}
