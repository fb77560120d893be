//! The Secret holding a room's entry-token signing key. It is created once
//! and never replaced by a reconcile: replacing it would change the key.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

use super::child_meta;
use crate::crd::WaitingRoom;

/// The key file's name inside the Secret and the mounted directory.
pub const KEY_FILE: &str = "entry.pem";
/// The previous key, kept when the Secret had to be made again, so that
/// session tokens and visitor cookies made with it keep verifying.
pub const RETIRED_FILE: &str = "retired.pem";
/// Where brokers find the Secret's files.
pub const MOUNT_PATH: &str = "/etc/usher/keys";

pub fn secret_name(room: &WaitingRoom) -> String {
    super::child_name(room, "token-key")
}

/// The file of the checkout credential inside its Secret.
pub const CHECKOUT_FILE: &str = "key";
/// Where brokers find the checkout credential.
pub const CHECKOUT_MOUNT_PATH: &str = "/etc/usher/checkout";

/// The Secret holding the room's checkout credential, which the shop's
/// checkout service mounts to call the checkout API. Apart from the
/// token key: the shop must not hold the key that signs entry tokens.
pub fn checkout_secret_name(room: &WaitingRoom) -> String {
    super::child_name(room, "checkout-key")
}

/// A new checkout-credential Secret holding `credential`.
pub fn build_checkout(room: &WaitingRoom, credential: String) -> Secret {
    Secret {
        metadata: child_meta(room, checkout_secret_name(room), "checkout-key"),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CHECKOUT_FILE.to_owned(),
            ByteString(credential.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// A new Secret with a fresh Ed25519 key (PKCS#8 PEM), and the key it
/// replaces if there was one.
pub fn build(room: &WaitingRoom, pem: String, retired: Option<Vec<u8>>) -> Secret {
    let mut data = BTreeMap::from([(KEY_FILE.to_owned(), ByteString(pem.into_bytes()))]);
    if let Some(retired) = retired {
        data.insert(RETIRED_FILE.to_owned(), ByteString(retired));
    }
    Secret {
        metadata: child_meta(room, secret_name(room), "token-key"),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The signing key in `secret`, if any.
pub fn key(secret: &Secret) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(KEY_FILE).map(|k| k.0.clone())
}

/// Whether `secret` carries a retired key too.
pub fn has_retired(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(RETIRED_FILE))
}

/// A digest of the key in `secret`, placed on the broker pods so that a new
/// key (a Secret deleted by hand and recreated) rolls them.
pub fn key_digest(secret: &Secret) -> String {
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_FILE))
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    usher_runtime::digest::hex(&Sha256::digest(key)[..8])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn the_secret_is_owned_and_holds_the_key() {
        let room = basic();
        let secret = build(&room, "PEM".into(), None);
        assert_eq!(secret.metadata.name.as_deref(), Some("concert-token-key"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("tickets"));
        let owner = &secret
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].clone());
        assert_eq!(
            owner
                .as_ref()
                .map(|o| (o.kind.as_str(), o.uid.as_str(), o.controller)),
            Some(("WaitingRoom", "u-1", Some(true)))
        );
        assert_eq!(
            key_digest(&secret),
            key_digest(&build(&room, "PEM".into(), None))
        );
        assert_ne!(
            key_digest(&secret),
            key_digest(&build(&room, "OTHER".into(), None))
        );
    }
}
