//! Who is asking: users (a platform JWT, or an anonymous signed cookie) and
//! the holders of a session (an HMAC session token bound to room and session).

pub mod binding;
mod jwt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub use self::jwt::{JwtSettings, PlatformJwt, PlatformUser, PriorityClaim};

/// The cookie that carries an anonymous user's id.
pub const USER_COOKIE: &str = "usher_user";
/// The cookie that carries a session token (EventSource cannot send headers).
pub const SESSION_COOKIE: &str = "usher_session";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("an Authorization: Bearer token is required")]
    MissingUserToken,
    #[error("the user token is not valid: {0}")]
    InvalidUserToken(String),
    #[error("a session token is required (?token=, cookie or Authorization header)")]
    MissingSessionToken,
    #[error("the session token is not valid")]
    InvalidSessionToken,
    #[error("the session token belongs to another room")]
    WrongRoom,
    #[error("the session token belongs to another session")]
    WrongSession,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read the user JWT key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the user JWT key is not a valid {alg} public key: {source}")]
    Key {
        alg: &'static str,
        source: jsonwebtoken::errors::Error,
    },
    #[error("jwt user auth needs a key (USHER_USER_JWT_KEY)")]
    MissingKey,
}

/// A random URL-safe identifier with 128 bits of entropy.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC keys: new signatures use the current key; signatures by any of the
/// accepted keys verify (so a key rotation does not cut anybody off).
#[derive(Clone)]
pub struct MacKeys {
    current: [u8; 32],
    retired: Vec<[u8; 32]>,
}

impl MacKeys {
    pub fn new(current: [u8; 32], retired: Vec<[u8; 32]>) -> Self {
        MacKeys { current, retired }
    }

    fn mac(key: &[u8; 32], message: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(message);
        mac
    }

    pub(crate) fn sign(&self, message: &str) -> String {
        URL_SAFE_NO_PAD.encode(
            Self::mac(&self.current, message.as_bytes())
                .finalize()
                .into_bytes(),
        )
    }

    /// Constant-time check of `signature` over `message` against every key.
    pub(crate) fn verify(&self, message: &str, signature: &str) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        std::iter::once(&self.current)
            .chain(&self.retired)
            .any(|key| {
                Self::mac(key, message.as_bytes())
                    .verify_slice(&signature)
                    .is_ok()
            })
    }
}

/// Session tokens `room.sid.mac`: proof of holding one session of one room.
#[derive(Clone)]
pub struct SessionTokens {
    keys: MacKeys,
}

impl SessionTokens {
    pub fn new(keys: MacKeys) -> Self {
        SessionTokens { keys }
    }

    pub fn issue(&self, room: &str, sid: &str) -> String {
        let body = format!("{room}.{sid}");
        let signature = self.keys.sign(&body);
        format!("{body}.{signature}")
    }

    /// The room and session of a token with a valid signature.
    fn open<'a>(&self, token: &'a str) -> Result<(&'a str, &'a str), AuthError> {
        let (body, signature) = token
            .rsplit_once('.')
            .ok_or(AuthError::InvalidSessionToken)?;
        if !self.keys.verify(body, signature) {
            return Err(AuthError::InvalidSessionToken);
        }
        body.split_once('.').ok_or(AuthError::InvalidSessionToken)
    }

    /// Checks that `token` was issued for `sid` in `room`.
    pub fn verify(&self, token: &str, room: &str, sid: &str) -> Result<(), AuthError> {
        let (token_room, token_sid) = self.open(token)?;
        if token_room != room {
            return Err(AuthError::WrongRoom);
        }
        if token_sid != sid {
            return Err(AuthError::WrongSession);
        }
        Ok(())
    }

    /// The session of `room` that `token` was issued for, if it is valid.
    pub fn session_in<'a>(&self, token: &'a str, room: &str) -> Option<&'a str> {
        let (token_room, sid) = self.open(token).ok()?;
        (token_room == room).then_some(sid)
    }
}

/// A user, and the cookie to set when the broker just made them up.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub set_cookie: Option<String>,
    /// The platform's token qualifies the user for the priority lane.
    pub priority: bool,
}

/// How the broker tells users apart.
pub enum UserAuth {
    /// A signed cookie names the user; newcomers get one.
    Anonymous { keys: MacKeys },
    /// The platform's JWT (`Authorization: Bearer`) names the user in `sub`.
    Jwt(Box<PlatformJwt>),
}

impl UserAuth {
    pub fn jwt(settings: &JwtSettings<'_>) -> Result<Self, AuthConfigError> {
        Ok(UserAuth::Jwt(Box::new(PlatformJwt::new(settings)?)))
    }

    /// Names the user behind a request from its Authorization header and cookies.
    pub fn identify(
        &self,
        authorization: Option<&str>,
        cookies: Option<&str>,
    ) -> Result<Identity, AuthError> {
        match self {
            UserAuth::Anonymous { keys } => {
                let known = cookie(cookies, USER_COOKIE).and_then(|value| {
                    let (id, signature) = value.split_once('.')?;
                    keys.verify(id, signature).then(|| id.to_owned())
                });
                Ok(match known {
                    Some(id) => Identity {
                        user: format!("anon:{id}"),
                        set_cookie: None,
                        priority: false,
                    },
                    None => {
                        let id = random_id();
                        let value = format!("{id}.{}", keys.sign(&id));
                        Identity {
                            user: format!("anon:{id}"),
                            set_cookie: Some(format!(
                                "{USER_COOKIE}={value}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"
                            )),
                            priority: false,
                        }
                    }
                })
            }
            UserAuth::Jwt(platform) => {
                let token = bearer(authorization).ok_or(AuthError::MissingUserToken)?;
                let PlatformUser { sub, priority } = platform.user(token)?;
                Ok(Identity {
                    user: sub,
                    set_cookie: None,
                    priority,
                })
            }
        }
    }
}

/// Where a session token may come from, in the order to try them: `?token=`,
/// the `usher_session` cookie, then `Authorization: Bearer` (which in JWT
/// mode may instead carry the platform's token, so it comes last).
pub fn session_token_candidates<'a>(
    query_token: Option<&'a str>,
    authorization: Option<&'a str>,
    cookies: Option<&'a str>,
) -> Vec<&'a str> {
    [
        query_token,
        cookie(cookies, SESSION_COOKIE),
        bearer(authorization),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use jsonwebtoken::Algorithm;

    use super::*;

    #[test]
    fn session_tokens_bind_room_and_session() {
        let tokens = SessionTokens::new(MacKeys::new([7; 32], vec![]));
        let token = tokens.issue("concert", "abc");
        assert_eq!(tokens.verify(&token, "concert", "abc"), Ok(()));
        assert_eq!(
            tokens.verify(&token, "other", "abc"),
            Err(AuthError::WrongRoom)
        );
        assert_eq!(
            tokens.verify(&token, "concert", "xyz"),
            Err(AuthError::WrongSession)
        );
        let forged = token.replace("abc", "xyz");
        assert_eq!(
            tokens.verify(&forged, "concert", "xyz"),
            Err(AuthError::InvalidSessionToken)
        );
        let foreign = SessionTokens::new(MacKeys::new([8; 32], vec![])).issue("concert", "abc");
        assert_eq!(
            tokens.verify(&foreign, "concert", "abc"),
            Err(AuthError::InvalidSessionToken)
        );
        assert_eq!(
            tokens.verify("", "concert", "abc"),
            Err(AuthError::InvalidSessionToken)
        );
        assert_eq!(tokens.session_in(&token, "concert"), Some("abc"));
        assert_eq!(tokens.session_in(&token, "other"), None);
        assert_eq!(tokens.session_in(&forged, "concert"), None);
    }

    #[test]
    fn anonymous_users_keep_their_signed_cookie() {
        let auth = UserAuth::Anonymous {
            keys: MacKeys::new([1; 32], vec![]),
        };
        let first = auth.identify(None, None).unwrap();
        let set = first.set_cookie.unwrap();
        let value = set.split(';').next().unwrap();
        let again = auth.identify(None, Some(&format!("a=b; {value}"))).unwrap();
        assert_eq!((again.user, again.set_cookie), (first.user, None));
        // A tampered cookie is not trusted: its bearer becomes someone new.
        let tampered = value.replacen('=', "=x", 1);
        let other = auth.identify(None, Some(&tampered)).unwrap();
        assert!(other.set_cookie.is_some());
    }

    #[test]
    fn platform_jwts_name_the_user() {
        let auth = UserAuth::jwt(&JwtSettings {
            algorithm: Algorithm::HS256,
            key: "s3cret",
            issuer: Some("shop"),
            audience: None,
            priority_claim: None,
        })
        .unwrap();
        let make = |iss: &str, exp: i64, key: &str| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &serde_json::json!({"sub": "alice", "iss": iss, "exp": exp}),
                &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
            )
            .unwrap()
        };
        let good = format!("Bearer {}", make("shop", 4_000_000_000, "s3cret"));
        assert_eq!(auth.identify(Some(&good), None).unwrap().user, "alice");
        assert_eq!(auth.identify(None, None), Err(AuthError::MissingUserToken));
        for bad in [
            make("shop", 1_000, "s3cret"),
            make("shop", 4_000_000_000, "wrong"),
            make("evil", 4_000_000_000, "s3cret"),
        ] {
            let header = format!("Bearer {bad}");
            assert!(matches!(
                auth.identify(Some(&header), None),
                Err(AuthError::InvalidUserToken(_))
            ));
        }
    }

    #[test]
    fn headers_are_parsed_leniently() {
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(cookie(Some("a=1; b=2"), "b"), Some("2"));
        assert_eq!(cookie(Some("a=1"), "b"), None);
    }
}
