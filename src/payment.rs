//! Payments: the [`PaymentGateway`] boundary that confirm charges through, and the
//! [`SimulatedGateway`] that follows the contract's tokens.
//!
//! # Attempts
//! Every confirm charges under a fresh [`AttemptId`]. A gateway must make both calls
//! idempotent per attempt: charging an attempt twice charges once, and voiding is
//! final (a voided attempt can never be charged later; a charged one is refunded).
//! That is what lets confirm and the reaper void an attempt whose outcome is unknown
//! without asking first.
//!
//! # The simulated ledger
//! The simulated gateway keeps its ledger in Redis, so every API process and the tests
//! see the same charges: `P:{gateway}:attempt:A` (hash: `state` charged|voided|refunded,
//! `payment_id`, `amount`, `currency`, `reference`) and `P:{gateway}:reference:R` (set of
//! attempts charged for reservation `R`). Entries live 7 days.

use std::fmt;
use std::time::Duration;

use crate::infrastructure::RedisConnection;
use async_trait::async_trait;
use uuid::Uuid;

use crate::keyspace::Keyspace;
use crate::script::LuaScript;

static CHARGE: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| LuaScript::new("gateway_charge", include_str!("payment/charge.lua")));
static VOID: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| LuaScript::new("gateway_void", include_str!("payment/void.lua")));

/// How long the simulated ledger keeps an attempt.
const LEDGER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest accepted payment token, in characters.
pub const TOKEN_LENGTH_MAX: usize = 1024;

/// The simulated token that is always declined.
pub const TOKEN_DECLINE: &str = "tok_decline";

/// The simulated token whose charge fails at the gateway.
pub const TOKEN_FAIL: &str = "tok_fail";

/// One payment attempt: the unit the gateway charges and voids idempotently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(Uuid);

impl AttemptId {
    /// A fresh attempt id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses a stored attempt id.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// The gateway's id of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentId(String);

impl PaymentId {
    /// Wraps a gateway's payment id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated payment token: 1..=1024 characters. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentToken(String);

impl PaymentToken {
    /// Validates a token from a request.
    pub fn parse(text: &str) -> Result<Self, String> {
        let length = text.chars().count();
        if length == 0 || length > TOKEN_LENGTH_MAX {
            return Err(format!("must be 1 to {TOKEN_LENGTH_MAX} characters long"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The token text, for the gateway.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PaymentToken([redacted])")
    }
}

/// What to charge.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// The attempt; charging it again charges nothing more.
    pub attempt: AttemptId,
    /// Minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: &'a str,
    /// The customer's token.
    pub token: &'a PaymentToken,
    /// What is paid for (the reservation id), kept with the charge.
    pub reference: &'a str,
}

/// Why a charge or void did not succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaymentError {
    /// The payment was declined; nothing was charged.
    #[error("the payment was declined")]
    Declined,
    /// The gateway failed; whether a charge happened is unknown, so the attempt must be voided.
    #[error("the payment gateway failed: {0}")]
    Failed(String),
}

/// A payment gateway. Both calls are idempotent per attempt (see the module docs).
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Charges once per attempt; a voided attempt is never charged.
    async fn charge(&self, charge: &Charge<'_>) -> Result<PaymentId, PaymentError>;

    /// Voids an attempt: refunds it if it was charged, and makes any later charge of it fail.
    async fn void(&self, attempt: AttemptId) -> Result<(), PaymentError>;
}

/// One attempt in the simulated ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The attempt.
    pub attempt: String,
    /// `charged`, `voided` or `refunded`.
    pub state: String,
    /// The payment id of a charge.
    pub payment_id: Option<String>,
    /// Amount charged, minor units.
    pub amount: Option<i64>,
}

/// The contract's simulated gateway: `tok_decline` is declined, `tok_fail` fails, any
/// other token is charged, each after a configurable latency.
#[derive(Clone)]
pub struct SimulatedGateway {
    redis: RedisConnection,
    key_prefix: String,
    latency: Duration,
}

impl SimulatedGateway {
    /// A gateway whose ledger lives under the keyspace's prefix, answering after `latency`.
    pub fn new(redis: RedisConnection, keys: &Keyspace, latency: Duration) -> Self {
        Self { redis, key_prefix: format!("{}:{{gateway}}", keys.prefix()), latency }
    }

    fn attempt_key(&self, attempt: &str) -> String {
        format!("{}:attempt:{attempt}", self.key_prefix)
    }

    fn reference_key(&self, reference: &str) -> String {
        format!("{}:reference:{reference}", self.key_prefix)
    }

    /// The state of one attempt, if the ledger knows it.
    pub async fn entry(&self, attempt: &str) -> Result<Option<LedgerEntry>, redis::RedisError> {
        let (state, payment_id, amount): (Option<String>, Option<String>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.attempt_key(attempt))
            .arg(&["state", "payment_id", "amount"])
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(state.map(|state| LedgerEntry { attempt: attempt.to_owned(), state, payment_id, amount }))
    }

    /// Every attempt that was ever charged for `reference`, with its state now.
    pub async fn charges_of(&self, reference: &str) -> Result<Vec<LedgerEntry>, redis::RedisError> {
        let attempts: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.reference_key(reference)).query_async(&mut self.redis.clone()).await?;
        let mut entries = Vec::with_capacity(attempts.len());
        for attempt in attempts {
            entries.extend(self.entry(&attempt).await?);
        }
        Ok(entries)
    }

    fn unavailable(error: redis::RedisError) -> PaymentError {
        PaymentError::Failed(format!("ledger unavailable: {error}"))
    }
}

#[async_trait]
impl PaymentGateway for SimulatedGateway {
    async fn charge(&self, charge: &Charge<'_>) -> Result<PaymentId, PaymentError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        match charge.token.expose() {
            TOKEN_DECLINE => return Err(PaymentError::Declined),
            TOKEN_FAIL => return Err(PaymentError::Failed("simulated gateway failure".to_owned())),
            _ => {}
        }
        let attempt = charge.attempt.to_string();
        let payment_id = format!("pay_{}", charge.attempt.0.simple());
        let mut invocation = CHARGE.prepare();
        invocation
            .key(self.attempt_key(&attempt))
            .key(self.reference_key(charge.reference))
            .arg(&attempt)
            .arg(&payment_id)
            .arg(charge.amount)
            .arg(charge.currency)
            .arg(charge.reference)
            .arg(LEDGER_TTL.as_secs());
        let reply: Vec<String> = CHARGE.run(&invocation, &mut self.redis.clone()).await.map_err(Self::unavailable)?;
        match reply.as_slice() {
            [state, payment_id] if state == "charged" => Ok(PaymentId::new(payment_id.clone())),
            [state, ..] => Err(PaymentError::Failed(format!("attempt {attempt} is {state}; it cannot be charged"))),
            [] => Err(PaymentError::Failed("empty ledger reply".to_owned())),
        }
    }

    async fn void(&self, attempt: AttemptId) -> Result<(), PaymentError> {
        let mut invocation = VOID.prepare();
        invocation.key(self.attempt_key(&attempt.to_string())).arg(LEDGER_TTL.as_secs());
        let _: String = VOID.run(&invocation, &mut self.redis.clone()).await.map_err(Self::unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bounded_and_never_print() {
        assert!(PaymentToken::parse("").is_err());
        assert!(PaymentToken::parse(&"x".repeat(TOKEN_LENGTH_MAX + 1)).is_err());
        let token = PaymentToken::parse("tok_visa_4242").unwrap();
        assert_eq!(token.expose(), "tok_visa_4242");
        assert!(!format!("{token:?}").contains("4242"));
    }

    #[test]
    fn attempt_ids_round_trip() {
        let attempt = AttemptId::generate();
        assert_eq!(AttemptId::parse(&attempt.to_string()), Some(attempt));
        assert_eq!(AttemptId::parse("nope"), None);
    }
}
