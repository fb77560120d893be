//! Platform JWTs (`USHER_USER_AUTH=jwt`): which tokens name a user.
//!
//! A configured issuer or audience is required, not only compared when the
//! token happens to carry it. `exp` is required and `nbf` honoured, both
//! with [`LEEWAY_SECS`] of clock skew. A header that marks extensions as
//! critical (`crit`, RFC 7515 §4.1.11) is refused: this verifier
//! understands none.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::{AuthConfigError, AuthError};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Longest user id (`sub`) accepted, in bytes.
const MAX_SUB_LEN: usize = 256;

/// What the broker needs to know of the platform's tokens.
pub struct JwtSettings<'a> {
    /// HS256, RS256 or ES256.
    pub algorithm: Algorithm,
    /// HS256: the shared secret itself; RS256/ES256: a PEM public key file.
    pub key: &'a str,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<&'a str>,
    /// When set, tokens must carry this `aud` (alone or in a list).
    pub audience: Option<&'a str>,
    /// When set, users whose token carries this claim join the priority lane.
    pub priority_claim: Option<PriorityClaim>,
}

/// A claim of the platform's token that puts its user in the priority
/// lane: `name` (any true or non-empty value) or `name=v1,v2` (a string
/// equal to one of the values, or an array holding one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorityClaim {
    name: String,
    values: Vec<String>,
}

impl PriorityClaim {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, values) = match text.split_once('=') {
            Some((name, values)) => (name, values.split(',').map(str::trim).collect()),
            None => (text, Vec::new()),
        };
        let name = name.trim();
        if name.is_empty() || values.iter().any(|v: &&str| v.is_empty()) {
            return Err(format!(
                "{text:?} is not a claim such as `tier=fanclub,gold` or `presale`"
            ));
        }
        Ok(PriorityClaim {
            name: name.to_owned(),
            values: values.into_iter().map(str::to_owned).collect(),
        })
    }

    fn matches(&self, claims: &serde_json::Map<String, Value>) -> bool {
        let qualifies = |value: &Value| match value {
            Value::String(text) if self.values.is_empty() => !text.is_empty(),
            Value::String(text) => self.values.contains(text),
            Value::Bool(flag) => self.values.is_empty() && *flag,
            _ => false,
        };
        match claims.get(&self.name) {
            Some(Value::Array(items)) => items.iter().any(qualifies),
            Some(value) => qualifies(value),
            None => false,
        }
    }
}

#[derive(Deserialize)]
struct UserClaims {
    sub: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// A user a platform token names.
#[derive(Debug, PartialEq, Eq)]
pub struct PlatformUser {
    pub sub: String,
    /// The token carries the priority lane's claim.
    pub priority: bool,
}

/// Checks platform JWTs and names the user they carry.
pub struct PlatformJwt {
    key: DecodingKey,
    validation: Validation,
    priority_claim: Option<PriorityClaim>,
}

impl PlatformJwt {
    pub fn new(settings: &JwtSettings<'_>) -> Result<Self, AuthConfigError> {
        Ok(PlatformJwt {
            key: decoding_key(settings)?,
            validation: validation(settings),
            priority_claim: settings.priority_claim.clone(),
        })
    }

    /// The user (`sub`) of `token`, once every check passed.
    pub fn user(&self, token: &str) -> Result<PlatformUser, AuthError> {
        refuse_critical_extensions(token).map_err(AuthError::InvalidUserToken)?;
        let data = jsonwebtoken::decode::<UserClaims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::InvalidUserToken(refusal(&e)))?;
        let UserClaims { sub, rest } = data.claims;
        if sub.is_empty() || sub.len() > MAX_SUB_LEN {
            return Err(AuthError::InvalidUserToken(format!(
                "claim `sub` must be 1 to {MAX_SUB_LEN} bytes"
            )));
        }
        let priority = self
            .priority_claim
            .as_ref()
            .is_some_and(|claim| claim.matches(&rest));
        Ok(PlatformUser { sub, priority })
    }
}

fn decoding_key(settings: &JwtSettings<'_>) -> Result<DecodingKey, AuthConfigError> {
    if settings.key.is_empty() {
        return Err(AuthConfigError::MissingKey);
    }
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| AuthConfigError::Read {
            path: path.to_owned(),
            source,
        })
    };
    match settings.algorithm {
        Algorithm::RS256 => {
            DecodingKey::from_rsa_pem(&read(settings.key)?).map_err(|source| AuthConfigError::Key {
                alg: "RS256",
                source,
            })
        }
        Algorithm::ES256 => {
            DecodingKey::from_ec_pem(&read(settings.key)?).map_err(|source| AuthConfigError::Key {
                alg: "ES256",
                source,
            })
        }
        _ => Ok(DecodingKey::from_secret(settings.key.as_bytes())),
    }
}

/// The checks: the algorithm, `exp` and `nbf`, and the configured claims,
/// which are required. The crate counts a claim of the wrong type (a
/// numeric `iss`) as missing, so a required claim is also well-typed.
fn validation(settings: &JwtSettings<'_>) -> Validation {
    let mut validation = Validation::new(settings.algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    match settings.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = settings.issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Refuses a header with a `crit` parameter. It names extensions the
/// recipient must understand, and there are none this verifier does.
/// A header that does not decode is left for the full decode to describe.
fn refuse_critical_extensions(token: &str) -> Result<(), String> {
    let header = token.split('.').next().unwrap_or_default();
    let Some(fields) = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Map<String, Value>>(&json).ok())
    else {
        return Ok(());
    };
    match fields.get("crit") {
        None => Ok(()),
        Some(Value::Array(names)) if names.iter().all(Value::is_string) => {
            Err(if names.is_empty() {
                "header parameter `crit` must not be an empty list".to_owned()
            } else {
                "header parameter `crit` names extensions this service does not understand"
                    .to_owned()
            })
        }
        Some(_) => Err("header parameter `crit` must be a list of names".to_owned()),
    }
}

/// Why a token was refused, naming the claim that failed.
fn refusal(e: &jsonwebtoken::errors::Error) -> String {
    match e.kind() {
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("claim `{claim}` is required and missing or of the wrong type")
        }
        ErrorKind::InvalidClaimFormat(claim) => format!("claim `{claim}` has the wrong type"),
        ErrorKind::ExpiredSignature => "the token has expired (claim `exp`)".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (claim `nbf`)".to_owned(),
        ErrorKind::InvalidIssuer => "claim `iss` is not the expected issuer".to_owned(),
        ErrorKind::InvalidAudience => "claim `aud` does not name this service".to_owned(),
        ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm".to_owned(),
        _ => format!("the token is malformed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    /// An HS256 token with exactly this header and these claims.
    fn hs256(header: Value, claims: Value) -> String {
        let body = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body.as_bytes());
        format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn header() -> Value {
        serde_json::json!({"alg": "HS256", "typ": "JWT"})
    }

    fn shop() -> PlatformJwt {
        PlatformJwt::new(&JwtSettings {
            algorithm: Algorithm::HS256,
            key: "s3cret",
            issuer: Some("shop"),
            audience: Some("usher"),
            priority_claim: Some(PriorityClaim::parse("tier=fanclub,gold").unwrap()),
        })
        .unwrap()
    }

    fn now_s() -> i64 {
        crate::clock::now_ms() / 1000
    }

    /// Claims that pass every check; each case below spoils one.
    fn good_claims() -> Value {
        serde_json::json!({
            "sub": "alice", "iss": "shop", "aud": "usher",
            "exp": now_s() + 600, "nbf": now_s() - 5,
        })
    }

    #[test]
    fn a_token_meeting_every_check_names_its_user() {
        assert_eq!(
            shop().user(&hs256(header(), good_claims())).unwrap(),
            PlatformUser {
                sub: "alice".into(),
                priority: false
            }
        );
        // nbf a little ahead is clock skew, within the leeway.
        let mut skewed = good_claims();
        skewed["nbf"] = (now_s() + 10).into();
        assert!(shop().user(&hs256(header(), skewed)).is_ok());
        // An audience list naming this service is fine too.
        let mut listed = good_claims();
        listed["aud"] = serde_json::json!(["other", "usher"]);
        assert!(shop().user(&hs256(header(), listed)).is_ok());
    }

    #[test]
    fn configured_claims_are_required_and_checked() {
        let spoil = |claim: &str, value: Option<Value>| {
            let mut claims = good_claims();
            let object = claims.as_object_mut().unwrap();
            match value {
                Some(value) => object.insert(claim.to_owned(), value),
                None => object.remove(claim),
            };
            claims
        };
        for (claims, named) in [
            (spoil("iss", None), "iss"),
            (spoil("iss", Some(123.into())), "iss"),
            (spoil("iss", Some("evil".into())), "iss"),
            (spoil("aud", None), "aud"),
            (spoil("aud", Some("someone-else".into())), "aud"),
            (spoil("aud", Some(7.into())), "aud"),
            (spoil("exp", None), "exp"),
            (spoil("exp", Some((now_s() - 3_600).into())), "exp"),
            (spoil("nbf", Some((now_s() + 3_600).into())), "nbf"),
            (spoil("nbf", Some("soon".into())), "nbf"),
            (spoil("sub", Some("".into())), "sub"),
        ] {
            match shop().user(&hs256(header(), claims.clone())) {
                Err(AuthError::InvalidUserToken(message)) => assert!(
                    message.contains(&format!("`{named}`")),
                    "{claims}: {message:?} does not name {named}"
                ),
                other => panic!("{claims}: {other:?}"),
            }
        }
    }

    #[test]
    fn unconfigured_claims_are_not_required() {
        let open = PlatformJwt::new(&JwtSettings {
            algorithm: Algorithm::HS256,
            key: "s3cret",
            issuer: None,
            audience: None,
            priority_claim: None,
        })
        .unwrap();
        let claims = serde_json::json!({"sub": "bob", "exp": now_s() + 600, "tier": "gold"});
        assert_eq!(open.user(&hs256(header(), claims)).unwrap().sub, "bob");
    }

    #[test]
    fn the_priority_claim_picks_the_priority_lane() {
        let with = |tier: Value| {
            let mut claims = good_claims();
            claims["tier"] = tier;
            shop().user(&hs256(header(), claims)).unwrap().priority
        };
        assert!(with("gold".into()));
        assert!(with(serde_json::json!(["silver", "fanclub"])));
        assert!(!with("silver".into()));
        assert!(!with(serde_json::json!({"gold": true})));
        assert!(!with(Value::Null));
        let any = PriorityClaim::parse("presale").unwrap();
        let claims = |value: Value| serde_json::Map::from_iter([("presale".to_owned(), value)]);
        assert!(any.matches(&claims(true.into())));
        assert!(any.matches(&claims("yes".into())));
        assert!(!any.matches(&claims(false.into())));
        assert!(!any.matches(&claims("".into())));
        for bad in ["", "=gold", "tier=", "tier=a,,b"] {
            assert!(PriorityClaim::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!(["urn:example:unknown"]),
            serde_json::json!([]),
            serde_json::json!("exp"),
            serde_json::json!([1]),
            Value::Null,
        ] {
            let mut with_crit = header();
            with_crit["crit"] = crit.clone();
            match shop().user(&hs256(with_crit, good_claims())) {
                Err(AuthError::InvalidUserToken(message)) => {
                    assert!(message.contains("`crit`"), "{crit}: {message:?}")
                }
                other => panic!("{crit}: {other:?}"),
            }
        }
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        // Bob's claims under the signature of Alice's token.
        let alice = hs256(header(), good_claims());
        let mut bob = good_claims();
        bob["sub"] = "bob".into();
        let bob = hs256(header(), bob);
        let (bob_body, _) = bob.rsplit_once('.').unwrap();
        let (_, alice_signature) = alice.rsplit_once('.').unwrap();
        let forged = format!("{bob_body}.{alice_signature}");
        for token in [forged.as_str(), "not-a-jwt", "a.b.c", ""] {
            assert!(
                matches!(shop().user(token), Err(AuthError::InvalidUserToken(_))),
                "{token}"
            );
        }
    }
}
