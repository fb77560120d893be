//! Entry tokens: JWTs signed with the room's asymmetric key (Ed25519 or
//! ES256), so checkout services verify them with the JWKS but cannot mint
//! them. The same key file also seeds the secrets of session tokens and
//! anonymous-user cookies, so every broker of a room agrees on them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::MacKeys;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the token key is neither an Ed25519 nor a P-256 (ES256) PKCS#8 PEM private key")]
    UnsupportedKey,
    #[error("cannot sign an entry token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The claims of an entry token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryClaims {
    pub iss: String,
    /// The event (room) the token admits to.
    pub aud: String,
    /// The user.
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    /// End of the session.
    pub exp: i64,
    pub jti: String,
    /// Confirmation (RFC 7800): the browser the token is bound to, when
    /// binding is on (see `auth/binding.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim of a bound entry token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// SHA-256 (base64url) of the binding secret the gate must be shown.
    #[serde(rename = "usher-bnd")]
    pub binding: String,
}

/// Whether a verifier checks a token's `nbf` and `exp`: the gate does; a
/// caller that only needs to know which session a token names does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenTimes {
    Checked,
    Ignored,
}

/// Clock skew allowed when checking an entry token's `nbf` and `exp`.
const VERIFY_LEEWAY_SECONDS: u64 = 5;

/// Checks entry tokens of one room: signature by one of the room's keys
/// (current or retired), audience, issuer, and times.
pub struct EntryTokenVerifier {
    keys: Vec<VerifyingKey>,
}

struct VerifyingKey {
    kid: String,
    key: DecodingKey,
    validation: Validation,
}

impl EntryTokenVerifier {
    /// The claims of `token`, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<EntryClaims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("the token names no key (kid)")?;
        let key = self
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .ok_or("the token is signed by a key this room does not use")?;
        jsonwebtoken::decode::<EntryClaims>(token, &key.key, &key.validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

/// What stays of an earlier signing key during a rotation.
struct Retired {
    jwk: serde_json::Value,
    seed: Vec<u8>,
}

/// Signs entry tokens and publishes the matching public key.
pub struct EntryTokenSigner {
    algorithm: Algorithm,
    key: EncodingKey,
    kid: String,
    jwk: serde_json::Value,
    /// Earlier signing keys, still published and accepted during a rotation.
    retired: Vec<Retired>,
    /// Secret material the derived HMAC keys come from.
    seed: Vec<u8>,
}

impl EntryTokenSigner {
    /// Loads a PKCS#8 PEM private key (Ed25519 or P-256) from `path`.
    pub fn from_file(path: &str) -> Result<Self, TokenError> {
        let pem = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem)
    }

    pub fn from_pem(pem: &str) -> Result<Self, TokenError> {
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            let public = key.verifying_key().to_bytes();
            let kid = key_id(&public);
            let jwk = serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "kid": kid, "x": URL_SAFE_NO_PAD.encode(public),
            });
            return Ok(EntryTokenSigner {
                algorithm: Algorithm::EdDSA,
                key: EncodingKey::from_ed_pem(pem.as_bytes())?,
                kid,
                jwk,
                retired: Vec::new(),
                seed: key.to_bytes().to_vec(),
            });
        }
        if let Ok(key) = p256::SecretKey::from_pkcs8_pem(pem) {
            let point = key.public_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(TokenError::UnsupportedKey);
            };
            let kid = key_id(point.as_bytes());
            let jwk = serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                "kid": kid, "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            });
            return Ok(EntryTokenSigner {
                algorithm: Algorithm::ES256,
                key: EncodingKey::from_ec_pem(pem.as_bytes())?,
                kid,
                jwk,
                retired: Vec::new(),
                seed: key.to_bytes().to_vec(),
            });
        }
        Err(TokenError::UnsupportedKey)
    }

    /// A new random Ed25519 key as PKCS#8 PEM (`usher keygen`).
    pub fn generate_pem() -> String {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        key.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map(|pem| pem.to_string())
            .unwrap_or_else(|e| unreachable!("encoding a fresh Ed25519 key cannot fail: {e}"))
    }

    /// A signer with a fresh Ed25519 key (the demo's).
    pub fn generate() -> Self {
        Self::from_pem(&Self::generate_pem())
            .unwrap_or_else(|e| unreachable!("a generated key always loads: {e}"))
    }

    pub fn sign(&self, claims: &EntryClaims) -> Result<String, TokenError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }

    /// Also publishes the public key of `retired` (an earlier signing key),
    /// so tokens it signed keep verifying while a rotation completes.
    /// Session tokens and cookies made with it keep verifying too.
    pub fn retire(&mut self, retired: &EntryTokenSigner) {
        self.retired.push(Retired {
            jwk: retired.jwk.clone(),
            seed: retired.seed.clone(),
        });
    }

    /// A verifier of this room's entry tokens, by the keys of the JWKS,
    /// checking their times or not (`times`).
    pub fn verifier(&self, room: &str, issuer: &str, times: TokenTimes) -> EntryTokenVerifier {
        let keys = std::iter::once(&self.jwk)
            .chain(self.retired.iter().map(|r| &r.jwk))
            .filter_map(|jwk| {
                let jwk: Jwk = serde_json::from_value(jwk.clone()).ok()?;
                let algorithm = match jwk.algorithm {
                    AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                    AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => return None,
                };
                let mut validation = Validation::new(algorithm);
                validation.set_audience(&[room]);
                validation.set_issuer(&[issuer]);
                validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
                let checked = times == TokenTimes::Checked;
                validation.validate_exp = checked;
                validation.validate_nbf = checked;
                validation.leeway = VERIFY_LEEWAY_SECONDS;
                Some(VerifyingKey {
                    kid: jwk.common.key_id.clone()?,
                    key: DecodingKey::from_jwk(&jwk).ok()?,
                    validation,
                })
            })
            .collect();
        EntryTokenVerifier { keys }
    }

    /// `/.well-known/jwks.json`: the signing key first, then retired ones.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<&serde_json::Value> = std::iter::once(&self.jwk)
            .chain(self.retired.iter().map(|r| &r.jwk))
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// HMAC keys for `purpose` (session tokens, cookies): the same on every
    /// broker with these keys; retired keys still verify.
    pub fn mac_keys(&self, purpose: &str) -> MacKeys {
        let retired = self
            .retired
            .iter()
            .map(|r| derive(purpose, &r.seed))
            .collect();
        MacKeys::new(derive(purpose, &self.seed), retired)
    }
}

fn derive(purpose: &str, seed: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"usher/");
    hash.update(purpose.as_bytes());
    hash.update(b"/");
    hash.update(seed);
    hash.finalize().into()
}

fn key_id(public: &[u8]) -> String {
    crate::digest::hex(&Sha256::digest(public)[..8])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};

    fn claims() -> EntryClaims {
        EntryClaims {
            iss: "usher".into(),
            aud: "concert".into(),
            sub: "alice".into(),
            sid: "s1".into(),
            iat: 1_900_000_000,
            nbf: 1_900_000_000,
            exp: 4_000_000_000,
            jti: "s1".into(),
            cnf: None,
        }
    }

    fn verify_with_jwks(signer: &EntryTokenSigner, token: &str) -> EntryClaims {
        let set: JwkSet = serde_json::from_value(signer.jwks()).unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&["concert"]);
        validation.set_issuer(&["usher"]);
        jsonwebtoken::decode(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn ed25519_tokens_verify_with_the_published_jwks() {
        let signer = EntryTokenSigner::generate();
        let token = signer.sign(&claims()).unwrap();
        assert_eq!(verify_with_jwks(&signer, &token), claims());
    }

    #[test]
    fn a_bound_token_carries_its_binding_as_cnf() {
        let signer = EntryTokenSigner::generate();
        let bound = EntryClaims {
            cnf: Some(Confirmation {
                binding: "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0".into(),
            }),
            ..claims()
        };
        let token = signer.sign(&bound).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            json["cnf"],
            serde_json::json!({"usher-bnd": "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"})
        );
        assert_eq!(verify_with_jwks(&signer, &token), bound);
        // Unbound tokens carry no cnf at all.
        let unbound = signer.sign(&claims()).unwrap();
        let payload = unbound.split('.').nth(1).unwrap();
        assert!(
            !String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap())
                .unwrap()
                .contains("cnf")
        );
    }

    #[test]
    fn es256_keys_are_accepted() {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, Default::default()).unwrap();
        let signer = EntryTokenSigner::from_pem(&pem).unwrap();
        let token = signer.sign(&claims()).unwrap();
        assert_eq!(verify_with_jwks(&signer, &token), claims());
    }

    #[test]
    fn another_key_does_not_verify() {
        let token = EntryTokenSigner::generate().sign(&claims()).unwrap();
        let other = EntryTokenSigner::generate();
        let set: JwkSet = serde_json::from_value(other.jwks()).unwrap();
        let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["concert"]);
        assert!(jsonwebtoken::decode::<EntryClaims>(&token, &key, &validation).is_err());
    }

    #[test]
    fn retired_keys_stay_published_during_a_rotation() {
        let old = EntryTokenSigner::generate();
        let token = old.sign(&claims()).unwrap();
        let mut new = EntryTokenSigner::generate();
        let session =
            crate::auth::SessionTokens::new(old.mac_keys("session-token")).issue("r", "s");
        new.retire(&old);
        assert_eq!(new.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(verify_with_jwks(&new, &token), claims());
        // Sessions begun under the old key go on under the new one.
        let tokens = crate::auth::SessionTokens::new(new.mac_keys("session-token"));
        assert_eq!(tokens.verify(&session, "r", "s"), Ok(()));
        assert_ne!(tokens.issue("r", "s"), session);
    }

    #[test]
    fn the_verifier_checks_key_room_issuer_and_times() {
        let old = EntryTokenSigner::generate();
        let mut signer = EntryTokenSigner::generate();
        signer.retire(&old);
        let verifier = signer.verifier("concert", "usher", TokenTimes::Checked);
        let live = EntryClaims {
            nbf: 1_000_000_000,
            exp: 4_000_000_000,
            ..claims()
        };
        assert_eq!(verifier.verify(&signer.sign(&live).unwrap()).unwrap(), live);
        assert!(verifier.verify(&old.sign(&live).unwrap()).is_ok());
        let stranger = EntryTokenSigner::generate();
        for refused in [
            stranger.sign(&live).unwrap(),
            signer
                .sign(&EntryClaims {
                    aud: "other".into(),
                    ..live.clone()
                })
                .unwrap(),
            signer
                .sign(&EntryClaims {
                    iss: "someone".into(),
                    ..live.clone()
                })
                .unwrap(),
            signer
                .sign(&EntryClaims {
                    exp: 1_000,
                    ..live.clone()
                })
                .unwrap(),
            signer
                .sign(&EntryClaims {
                    nbf: 4_000_000_000,
                    ..live.clone()
                })
                .unwrap(),
            "garbage".into(),
        ] {
            assert!(verifier.verify(&refused).is_err(), "{refused}");
        }
        let expired = signer
            .sign(&EntryClaims {
                exp: 1_000,
                ..live.clone()
            })
            .unwrap();
        let names = signer.verifier("concert", "usher", TokenTimes::Ignored);
        assert_eq!(names.verify(&expired).unwrap().sid, live.sid);
    }

    #[test]
    fn garbage_keys_are_refused_clearly() {
        assert!(matches!(
            EntryTokenSigner::from_pem("nope"),
            Err(TokenError::UnsupportedKey)
        ));
        assert!(matches!(
            EntryTokenSigner::from_file("/nonexistent"),
            Err(TokenError::Read { .. })
        ));
    }

    #[test]
    fn derived_keys_depend_on_key_and_purpose() {
        let pem = EntryTokenSigner::generate_pem();
        let a = crate::auth::SessionTokens::new(
            EntryTokenSigner::from_pem(&pem).unwrap().mac_keys("x"),
        );
        let b = crate::auth::SessionTokens::new(
            EntryTokenSigner::from_pem(&pem).unwrap().mac_keys("x"),
        );
        let other_purpose = crate::auth::SessionTokens::new(
            EntryTokenSigner::from_pem(&pem).unwrap().mac_keys("y"),
        );
        let other_key = crate::auth::SessionTokens::new(EntryTokenSigner::generate().mac_keys("x"));
        let token = a.issue("r", "s");
        assert_eq!(b.verify(&token, "r", "s"), Ok(()));
        assert!(other_purpose.verify(&token, "r", "s").is_err());
        assert!(other_key.verify(&token, "r", "s").is_err());
    }
}
