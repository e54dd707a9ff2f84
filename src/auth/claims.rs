//! The checks every token passes after its signature verified, whoever signed it: the
//! time claims (`exp` required, `nbf` and `iat` not in the future, 60 s of leeway), no
//! `crit` header, `iss` and `aud` when configured, a valid `sub`, and the role found at
//! the role claim's dot path.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

use super::{AuthError, Caller, Role};
use crate::ids::UserId;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

/// The longest role claim path, in segments (bounds the walk).
const ROLE_CLAIM_SEGMENTS_MAX: usize = 8;

/// What a token's claims must satisfy beyond its signature.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    issuer: Option<String>,
    audience: Option<String>,
    role_path: Vec<String>,
}

/// Why the claim settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("JWT_ROLE_CLAIM {0:?} is not a dot path of 1 to 8 non-empty names (such as `role` or `realm_access.roles`)")]
pub struct RoleClaimError(String);

impl ClaimRules {
    /// Rules for `JWT_ISSUER`, `JWT_AUDIENCE` and `JWT_ROLE_CLAIM`.
    pub fn new(issuer: Option<String>, audience: Option<String>, role_claim: &str) -> Result<Self, RoleClaimError> {
        let role_path: Vec<String> = role_claim.split('.').map(str::to_owned).collect();
        if role_path.len() > ROLE_CLAIM_SEGMENTS_MAX || role_path.iter().any(String::is_empty) {
            return Err(RoleClaimError(role_claim.to_owned()));
        }
        let nonempty = |value: Option<String>| value.filter(|value| !value.is_empty());
        Ok(Self { issuer: nonempty(issuer), audience: nonempty(audience), role_path })
    }

    /// The rules of a plain HS256 deployment: a top-level `role`, no issuer or audience.
    pub fn role_claim_only() -> Self {
        Self { issuer: None, audience: None, role_path: vec!["role".to_owned()] }
    }

    /// The library's validation for tokens signed with `algorithm`: only that algorithm,
    /// `exp` required, `exp` and `nbf` checked with the leeway, `iss` and `aud` when set.
    pub fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// The caller of a token whose signature, `exp`, `nbf`, `iss` and `aud` verified.
    pub fn caller(&self, claims: &Map<String, Value>, now_seconds: u64) -> Result<Caller, AuthError> {
        if let Some(issued_at) = claims.get("iat") {
            let issued_at = issued_at.as_u64().ok_or_else(|| invalid("iat is not a number of seconds"))?;
            if issued_at > now_seconds + LEEWAY_SECONDS {
                return Err(invalid("iat is in the future"));
            }
        }
        let subject = claims.get("sub").ok_or_else(|| invalid("missing sub"))?;
        let subject = subject.as_str().ok_or_else(|| invalid("sub is not a string"))?;
        let user_id = UserId::parse(subject).map_err(AuthError::Invalid)?;
        let role = self.role(claims)?;
        Ok(Caller { user_id, role })
    }

    /// The role at the role claim's path: admin when it holds `"admin"`, else user when it
    /// holds `"user"`.
    fn role(&self, claims: &Map<String, Value>) -> Result<Role, AuthError> {
        let (first, rest) = self.role_path.split_first().expect("a role path has at least one segment");
        let mut value = claims.get(first);
        for segment in rest {
            value = value.and_then(|value| value.get(segment));
        }
        let holds = |role: &str| match value {
            Some(Value::String(text)) => text == role,
            Some(Value::Array(items)) => items.iter().any(|item| item.as_str() == Some(role)),
            _ => false,
        };
        if holds("admin") {
            Ok(Role::Admin)
        } else if holds("user") {
            Ok(Role::User)
        } else if value.is_none() {
            Err(invalid(&format!("missing role claim {}", self.role_path.join("."))))
        } else {
            Err(invalid(&format!("role claim {} holds neither admin nor user", self.role_path.join("."))))
        }
    }
}

/// Refuses a header with `crit`: no extension is understood here, and RFC 7515 §4.1.11
/// says a recipient must then reject the token (an empty list is invalid too).
pub fn check_header(header: &Header) -> Result<(), AuthError> {
    match &header.crit {
        Some(names) => {
            Err(invalid(&format!("crit header names parameters this server does not understand: {names:?}")))
        }
        None => Ok(()),
    }
}

fn invalid(message: &str) -> AuthError {
    AuthError::Invalid(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_role_is_read_at_a_dot_path_from_a_string_or_an_array() {
        let rules = ClaimRules::new(None, None, "realm_access.roles").unwrap();
        let caller = |roles: Value| rules.caller(&claims(json!({"sub": "a", "realm_access": {"roles": roles}})), 0);
        assert_eq!(caller(json!(["offline", "user", "admin"])).unwrap().role, Role::Admin);
        assert_eq!(caller(json!(["offline", "user"])).unwrap().role, Role::User);
        assert_eq!(caller(json!("user")).unwrap().role, Role::User);
        assert!(caller(json!(["offline"])).is_err());
        assert!(caller(json!(7)).is_err());
        assert!(rules.caller(&claims(json!({"sub": "a", "role": "admin"})), 0).is_err());
    }

    #[test]
    fn bad_role_paths_are_refused() {
        for path in ["", ".role", "a..b", "a.b.c.d.e.f.g.h.i"] {
            assert!(ClaimRules::new(None, None, path).is_err(), "{path:?}");
        }
    }

    #[test]
    fn a_future_iat_beyond_the_leeway_is_refused() {
        let rules = ClaimRules::role_claim_only();
        let at = |iat: u64| rules.caller(&claims(json!({"sub": "a", "role": "user", "iat": iat})), 1_000);
        assert!(at(1_000 + LEEWAY_SECONDS).is_ok());
        assert!(at(1_000 + LEEWAY_SECONDS + 1).is_err());
        assert!(rules.caller(&claims(json!({"sub": "a", "role": "user", "iat": "soon"})), 0).is_err());
    }

    #[test]
    fn any_crit_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        assert!(check_header(&header).is_ok());
        header.crit = Some(vec!["exp".to_owned()]);
        assert!(check_header(&header).is_err());
        header.crit = Some(Vec::new());
        assert!(check_header(&header).is_err());
    }
}
