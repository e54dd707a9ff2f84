//! JWT authentication: HS256 tokens under `JWT_SECRET`, and RS256 or ES256 tokens signed by
//! a key of an identity provider's key set (`JWT_JWKS_URL`), chosen by the token's `kid`.
//!
//! `none` and every other algorithm are refused; HS256 only when a secret is configured (so
//! nobody can sign with a provider's public key as an HMAC secret); a key set's key only
//! for its own algorithm. Then [`claims`] checks the claims: `exp` required, `nbf` and
//! `iat` not in the future (60 s of leeway), no `crit` header, `iss` and `aud` when
//! configured, a valid `sub`, and the role at `JWT_ROLE_CLAIM`.

pub mod claims;
pub mod key_set;

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use self::claims::ClaimRules;
pub use self::key_set::{KeySet, KeySetError, VerifyingKey};
use crate::config::Secret;
use crate::ids::UserId;

/// Why a request could not be authenticated or authorized.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The token is malformed, badly signed, expired, or has bad claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but its role may not use this endpoint.
    #[error("role {0} may not use this endpoint")]
    Forbidden(Role),
}

/// The two roles a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages events and categories, reads every reservation.
    Admin,
    /// Buys tickets.
    User,
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Role::Admin => "admin",
            Role::User => "user",
        })
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who is calling (`sub`).
    pub user_id: UserId,
    /// What the caller may do.
    pub role: Role,
}

impl Caller {
    /// Admits only admins.
    pub fn require_admin(self) -> Result<Self, AuthError> {
        match self.role {
            Role::Admin => Ok(self),
            Role::User => Err(AuthError::Forbidden(self.role)),
        }
    }
}

#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    role: String,
    exp: u64,
    iat: u64,
}

/// Mints HS256 tokens with one secret (the `token` CLI, `--dev`, tests).
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
}

impl Jwt {
    /// A minter for a secret.
    pub fn new(secret: &Secret) -> Self {
        Self { encoding: EncodingKey::from_secret(secret.expose().as_bytes()) }
    }

    /// Mints a token for `subject` with `role` in a top-level `role` claim, valid for `ttl` from now.
    pub fn mint(&self, subject: &UserId, role: Role, ttl: Duration) -> String {
        let issued_at = unix_now_seconds();
        let claims = MintedClaims {
            sub: subject.as_str(),
            role: role.to_string(),
            exp: issued_at + ttl.as_secs(),
            iat: issued_at,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }
}

/// The validations of the three accepted algorithms, built once.
#[derive(Clone)]
struct Validations {
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
}

/// Verifies bearer tokens: HS256 with `JWT_SECRET`, RS256 and ES256 by `kid` from the
/// identity provider's key set, each only when configured.
#[derive(Clone)]
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    key_set: Option<KeySet>,
    rules: ClaimRules,
    validations: Validations,
}

impl Authenticator {
    /// A verifier of HS256 tokens under `secret` (when given) and of the key set's tokens
    /// (when given), whose claims must satisfy `rules`.
    pub fn new(secret: Option<&Secret>, key_set: Option<KeySet>, rules: ClaimRules) -> Self {
        let validations = Validations {
            hs256: rules.validation(Algorithm::HS256),
            rs256: rules.validation(Algorithm::RS256),
            es256: rules.validation(Algorithm::ES256),
        };
        let hs256 = secret.map(|secret| DecodingKey::from_secret(secret.expose().as_bytes()));
        Self { hs256, key_set, rules, validations }
    }

    /// Authenticates an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Invalid("expected `Bearer <token>`".to_owned()))?
            .trim();
        self.verify(token).await
    }

    /// Verifies a bare token and returns its caller. Waits for the key set only when the
    /// token names a `kid` not yet known (see [`KeySet::key`] for the bound).
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| AuthError::Invalid(error.to_string()))?;
        claims::check_header(&header)?;
        let from_set;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or_else(|| {
                    AuthError::Invalid(
                        "HS256 tokens are not accepted: only an identity provider's key set is".to_owned(),
                    )
                })?;
                (key, &self.validations.hs256)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                from_set = self.key_from_set(&header).await?;
                let validation =
                    if header.alg == Algorithm::RS256 { &self.validations.rs256 } else { &self.validations.es256 };
                (&from_set.key, validation)
            }
            other => return Err(AuthError::Invalid(format!("algorithm {other:?} is not accepted"))),
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, validation)
            .map_err(|error| AuthError::Invalid(error.to_string()))?;
        self.rules.caller(&data.claims, unix_now_seconds())
    }

    /// The key set's key named by the header, which must be of the header's algorithm.
    async fn key_from_set(&self, header: &Header) -> Result<std::sync::Arc<VerifyingKey>, AuthError> {
        let key_set = self.key_set.as_ref().ok_or_else(|| {
            AuthError::Invalid(format!("{:?} tokens need JWT_JWKS_URL, which is not set", header.alg))
        })?;
        let kid = header.kid.as_deref().ok_or_else(|| AuthError::Invalid("missing kid".to_owned()))?;
        let key = key_set.key(kid).await.ok_or_else(|| AuthError::Invalid(format!("unknown kid {kid:?}")))?;
        if key.algorithm != header.alg {
            return Err(AuthError::Invalid(format!(
                "token algorithm {:?} differs from key {kid:?}'s {:?}",
                header.alg, key.algorithm
            )));
        }
        Ok(key)
    }
}

fn unix_now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt() -> Jwt {
        Jwt::new(&Secret::new("test-secret"))
    }

    fn verifier() -> Authenticator {
        Authenticator::new(Some(&Secret::new("test-secret")), None, ClaimRules::role_claim_only())
    }

    fn sign(claims: serde_json::Value, algorithm: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn future() -> u64 {
        unix_now_seconds() + 600
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_their_role() {
        let user = UserId::parse("alice").unwrap();
        let token = jwt().mint(&user, Role::Admin, Duration::from_secs(60));
        let caller = verifier().authenticate(Some(&format!("Bearer {token}"))).await.unwrap();
        assert_eq!(caller, Caller { user_id: user, role: Role::Admin });
    }

    #[tokio::test]
    async fn expired_tokens_are_rejected_beyond_the_leeway() {
        let past = unix_now_seconds() - 120;
        let token = sign(json!({"sub": "a", "role": "user", "exp": past}), Algorithm::HS256, "test-secret");
        assert!(matches!(verifier().verify(&token).await, Err(AuthError::Invalid(_))));
        let within_leeway = unix_now_seconds() - 30;
        let token = sign(json!({"sub": "a", "role": "user", "exp": within_leeway}), Algorithm::HS256, "test-secret");
        assert!(verifier().verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn the_none_algorithm_is_rejected() {
        // header {"alg":"none","typ":"JWT"}, payload {"sub":"a","role":"admin","exp":9999999999}
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(matches!(verifier().verify(token).await, Err(AuthError::Invalid(_))));
    }

    #[tokio::test]
    async fn other_algorithms_and_wrong_secrets_are_rejected() {
        let claims = json!({"sub": "a", "role": "user", "exp": future()});
        let hs512 = sign(claims.clone(), Algorithm::HS512, "test-secret");
        assert!(verifier().verify(&hs512).await.is_err());
        let wrong_secret = sign(claims, Algorithm::HS256, "other-secret");
        assert!(verifier().verify(&wrong_secret).await.is_err());
    }

    #[tokio::test]
    async fn missing_or_bad_claims_are_rejected() {
        let cases = [
            json!({"role": "user", "exp": future()}),
            json!({"sub": "a", "exp": future()}),
            json!({"sub": "a", "role": "user"}),
            json!({"sub": "", "role": "user", "exp": future()}),
            json!({"sub": "a".repeat(129), "role": "user", "exp": future()}),
            json!({"sub": "a", "role": "root", "exp": future()}),
        ];
        for claims in cases {
            let token = sign(claims.clone(), Algorithm::HS256, "test-secret");
            assert!(verifier().verify(&token).await.is_err(), "accepted {claims}");
        }
    }

    #[tokio::test]
    async fn headers_must_carry_a_bearer_token() {
        assert!(matches!(verifier().authenticate(None).await, Err(AuthError::Missing)));
        assert!(matches!(verifier().authenticate(Some("Basic abc")).await, Err(AuthError::Invalid(_))));
        assert!(matches!(verifier().authenticate(Some("Bearer not.a.jwt")).await, Err(AuthError::Invalid(_))));
    }

    #[tokio::test]
    async fn subjects_with_control_characters_are_refused() {
        for subject in ["a\u{0}b", "tab\there", "line\nbreak", "del\u{7f}", "c1\u{85}"] {
            assert!(UserId::parse(subject).is_err(), "{subject:?}");
        }
        assert!(UserId::parse("älice-42@example.com").is_ok());
        let token = sign(json!({"sub": "a\u{0}b", "role": "user", "exp": future()}), Algorithm::HS256, "test-secret");
        assert!(matches!(verifier().verify(&token).await, Err(AuthError::Invalid(_))));
    }

    #[test]
    fn only_admins_pass_the_admin_check() {
        let user = Caller { user_id: UserId::parse("u").unwrap(), role: Role::User };
        assert!(matches!(user.require_admin(), Err(AuthError::Forbidden(Role::User))));
        let admin = Caller { user_id: UserId::parse("a").unwrap(), role: Role::Admin };
        assert!(admin.require_admin().is_ok());
    }

    #[tokio::test]
    async fn future_nbf_and_iat_beyond_the_leeway_are_refused() {
        let now = unix_now_seconds();
        let nbf = sign(
            json!({"sub": "a", "role": "user", "exp": future(), "nbf": now + 120}),
            Algorithm::HS256,
            "test-secret",
        );
        assert!(verifier().verify(&nbf).await.is_err());
        let iat = sign(
            json!({"sub": "a", "role": "user", "exp": future(), "iat": now + 120}),
            Algorithm::HS256,
            "test-secret",
        );
        assert!(verifier().verify(&iat).await.is_err());
        let within = sign(
            json!({"sub": "a", "role": "user", "exp": future(), "nbf": now + 30, "iat": now + 30}),
            Algorithm::HS256,
            "test-secret",
        );
        assert!(verifier().verify(&within).await.is_ok());
    }

    #[tokio::test]
    async fn a_crit_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["x-unknown".to_owned()]);
        let claims = json!({"sub": "a", "role": "user", "exp": future()});
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"test-secret")).unwrap();
        assert!(matches!(verifier().verify(&token).await, Err(AuthError::Invalid(_))));
    }

    #[tokio::test]
    async fn subjects_with_format_characters_are_refused() {
        for subject in ["admin\u{202E}nimda", "a\u{200B}b", "\u{FEFF}bob", "tag\u{E0041}"] {
            let token = sign(json!({"sub": subject, "role": "user", "exp": future()}), Algorithm::HS256, "test-secret");
            assert!(matches!(verifier().verify(&token).await, Err(AuthError::Invalid(_))), "{subject:?}");
        }
    }

    #[tokio::test]
    async fn hs256_is_refused_without_a_secret() {
        let only_key_set = Authenticator::new(None, None, ClaimRules::role_claim_only());
        let token = sign(json!({"sub": "a", "role": "user", "exp": future()}), Algorithm::HS256, "test-secret");
        assert!(matches!(only_key_set.verify(&token).await, Err(AuthError::Invalid(_))));
    }
}
