//! Entry-token binding: an entry token works only in the browser that
//! waited for it. Each session has a binding secret, derived rather than
//! stored (an HMAC of room and session id under a key of its own). The
//! broker hands it to the browser as the `usher_bind` cookie next to the
//! entry cookie, and the entry token carries its SHA-256 as the `cnf`
//! claim. The gate lets a bound token through only with the secret whose
//! hash it carries, so a token copied on its own is refused. The token
//! holds the hash, not the secret: whoever sees a token can check a
//! binding but cannot make one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::MacKeys;

/// The cookie, on the shop's host, that carries the binding secret.
pub const BINDING_COOKIE: &str = "usher_bind";
/// The header in which API clients present the binding secret instead.
pub const BINDING_HEADER: &str = "usher-binding";

/// Binding secrets of a room's sessions.
#[derive(Clone)]
pub struct EntryBindings {
    keys: MacKeys,
}

impl EntryBindings {
    pub fn new(keys: MacKeys) -> Self {
        EntryBindings { keys }
    }

    /// The binding secret of session `sid` of `room`.
    pub fn secret(&self, room: &str, sid: &str) -> String {
        self.keys.sign(&format!("{room}.{sid}"))
    }
}

/// What a bound token carries of its secret: the SHA-256, base64url
/// without padding.
pub fn thumbprint(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `presented` is the secret whose thumbprint a token carries.
/// The thumbprint is public (it is in the token), so the comparison need
/// not hide its timing. On the gate's path: no allocation.
pub fn proves(thumbprint_in_token: &str, presented: &str) -> bool {
    let mut encoded = [0u8; THUMBPRINT_LEN];
    URL_SAFE_NO_PAD
        .encode_slice(Sha256::digest(presented.as_bytes()), &mut encoded)
        .is_ok_and(|len| &encoded[..len] == thumbprint_in_token.as_bytes())
}

/// Characters of a thumbprint: 32 bytes in base64 without padding.
const THUMBPRINT_LEN: usize = 43;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_belong_to_one_session_and_one_key() {
        let bindings = EntryBindings::new(MacKeys::new([3; 32], vec![]));
        let secret = bindings.secret("concert", "s1");
        assert_eq!(secret, bindings.secret("concert", "s1"));
        assert_ne!(secret, bindings.secret("concert", "s2"));
        assert_ne!(secret, bindings.secret("other", "s1"));
        let other_key = EntryBindings::new(MacKeys::new([4; 32], vec![]));
        assert_ne!(secret, other_key.secret("concert", "s1"));
        // Cookie-safe: base64url.
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn only_the_secret_proves_its_thumbprint() {
        let bindings = EntryBindings::new(MacKeys::new([3; 32], vec![]));
        let secret = bindings.secret("concert", "s1");
        let carried = thumbprint(&secret);
        assert_eq!(carried.len(), THUMBPRINT_LEN);
        assert!(proves(&carried, &secret));
        assert!(!proves(&carried, &bindings.secret("concert", "s2")));
        assert!(!proves(&carried, &carried));
        assert!(!proves(&carried, ""));
        // echo -n abc | sha256sum, in base64url.
        assert_eq!(
            thumbprint("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
