//! Entry tokens: JWTs signed with the room's asymmetric key (Ed25519 or
//! ES256), so checkout services verify them with the JWKS but cannot mint
//! them. The same key file also seeds the secrets of session tokens and
//! anonymous-user cookies, so every broker of a room agrees on them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
}

/// Signs entry tokens and publishes the matching public key.
pub struct EntryTokenSigner {
    algorithm: Algorithm,
    key: EncodingKey,
    kid: String,
    jwk: serde_json::Value,
    /// Public keys of earlier signing keys, still published during a rotation.
    retired: Vec<serde_json::Value>,
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
    pub fn also_publish(&mut self, retired: &EntryTokenSigner) {
        self.retired.push(retired.jwk.clone());
    }

    /// `/.well-known/jwks.json`: the signing key first, then retired ones.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<&serde_json::Value> =
            std::iter::once(&self.jwk).chain(&self.retired).collect();
        serde_json::json!({ "keys": keys })
    }

    /// A 32-byte secret for `purpose`, the same on every broker with this key.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(b"usher/");
        hash.update(purpose.as_bytes());
        hash.update(b"/");
        hash.update(&self.seed);
        hash.finalize().into()
    }
}

fn key_id(public: &[u8]) -> String {
    let digest = Sha256::digest(public);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
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
        new.also_publish(&old);
        assert_eq!(new.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(verify_with_jwks(&new, &token), claims());
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
    fn derived_secrets_depend_on_key_and_purpose() {
        let pem = EntryTokenSigner::generate_pem();
        let a = EntryTokenSigner::from_pem(&pem).unwrap();
        let b = EntryTokenSigner::from_pem(&pem).unwrap();
        assert_eq!(a.derive_secret("x"), b.derive_secret("x"));
        assert_ne!(a.derive_secret("x"), a.derive_secret("y"));
        assert_ne!(
            a.derive_secret("x"),
            EntryTokenSigner::generate().derive_secret("x")
        );
    }
}
