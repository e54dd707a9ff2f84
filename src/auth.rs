//! JWT authentication: HS256 tokens with `sub`, `role`, `exp` and `iat` claims.
//!
//! Only HS256 is accepted; `none` and every other algorithm are refused, `exp` is
//! required (with 60 s of leeway), and `sub` and `role` must be present and valid.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// Clock skew tolerated on `exp`, in seconds.
const EXPIRY_LEEWAY_SECONDS: u64 = 60;

/// Longest accepted `sub`, in characters.
pub const SUBJECT_LENGTH_MAX: usize = 128;

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
        Ok(Self(subject.to_owned()))
    }

    /// The subject text.
    pub fn as_str(&self) -> &str {
        &self.0
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

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Option<String>,
    role: Option<String>,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

/// Signs and verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Jwt {
    /// Keys for a secret.
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = EXPIRY_LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// Mints a token for `subject` with `role`, valid for `ttl` from now.
    pub fn mint(&self, subject: &UserId, role: Role, ttl: Duration) -> String {
        let issued_at = unix_now_seconds();
        let claims = Claims {
            sub: Some(subject.as_str().to_owned()),
            role: Some(role.to_string()),
            exp: issued_at + ttl.as_secs(),
            iat: Some(issued_at),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Invalid("expected `Bearer <token>`".to_owned()))?
            .trim();
        self.verify(token)
    }

    /// Verifies a bare token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| AuthError::Invalid(error.to_string()))?;
        let claims = data.claims;
        let subject = claims.sub.ok_or_else(|| AuthError::Invalid("missing sub".to_owned()))?;
        let user_id = UserId::parse(&subject).map_err(AuthError::Invalid)?;
        let role = match claims.role.as_deref() {
            Some("admin") => Role::Admin,
            Some("user") => Role::User,
            Some(other) => return Err(AuthError::Invalid(format!("unknown role {other:?}"))),
            None => return Err(AuthError::Invalid("missing role".to_owned())),
        };
        Ok(Caller { user_id, role })
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

    fn sign(claims: serde_json::Value, algorithm: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn future() -> u64 {
        unix_now_seconds() + 600
    }

    #[test]
    fn minted_tokens_verify_with_their_role() {
        let user = UserId::parse("alice").unwrap();
        let token = jwt().mint(&user, Role::Admin, Duration::from_secs(60));
        let caller = jwt().authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(caller, Caller { user_id: user, role: Role::Admin });
    }

    #[test]
    fn expired_tokens_are_rejected_beyond_the_leeway() {
        let past = unix_now_seconds() - 120;
        let token = sign(json!({"sub": "a", "role": "user", "exp": past}), Algorithm::HS256, "test-secret");
        assert!(matches!(jwt().verify(&token), Err(AuthError::Invalid(_))));
        let within_leeway = unix_now_seconds() - 30;
        let token = sign(json!({"sub": "a", "role": "user", "exp": within_leeway}), Algorithm::HS256, "test-secret");
        assert!(jwt().verify(&token).is_ok());
    }

    #[test]
    fn the_none_algorithm_is_rejected() {
        // header {"alg":"none","typ":"JWT"}, payload {"sub":"a","role":"admin","exp":9999999999}
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(matches!(jwt().verify(token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn other_algorithms_and_wrong_secrets_are_rejected() {
        let claims = json!({"sub": "a", "role": "user", "exp": future()});
        let hs512 = sign(claims.clone(), Algorithm::HS512, "test-secret");
        assert!(jwt().verify(&hs512).is_err());
        let wrong_secret = sign(claims, Algorithm::HS256, "other-secret");
        assert!(jwt().verify(&wrong_secret).is_err());
    }

    #[test]
    fn missing_or_bad_claims_are_rejected() {
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
            assert!(jwt().verify(&token).is_err(), "accepted {claims}");
        }
    }

    #[test]
    fn headers_must_carry_a_bearer_token() {
        assert!(matches!(jwt().authenticate(None), Err(AuthError::Missing)));
        assert!(matches!(jwt().authenticate(Some("Basic abc")), Err(AuthError::Invalid(_))));
        assert!(matches!(jwt().authenticate(Some("Bearer not.a.jwt")), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn subjects_with_control_characters_are_refused() {
        for subject in ["a\u{0}b", "tab\there", "line\nbreak", "del\u{7f}", "c1\u{85}"] {
            assert!(UserId::parse(subject).is_err(), "{subject:?}");
        }
        assert!(UserId::parse("älice-42@example.com").is_ok());
        let token = sign(json!({"sub": "a\u{0}b", "role": "user", "exp": future()}), Algorithm::HS256, "test-secret");
        assert!(matches!(jwt().verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn only_admins_pass_the_admin_check() {
        let user = Caller { user_id: UserId::parse("u").unwrap(), role: Role::User };
        assert!(matches!(user.require_admin(), Err(AuthError::Forbidden(Role::User))));
        let admin = Caller { user_id: UserId::parse("a").unwrap(), role: Role::Admin };
        assert!(admin.require_admin().is_ok());
    }
}
