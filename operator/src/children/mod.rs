//! The objects a WaitingRoom owns, each built by a pure function from the
//! resource and what the reconciler observed (unit-tested without a cluster).

pub mod broker;
pub mod dispatcher;
pub mod env;
mod pod;
pub mod secret;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::WaitingRoom;

/// The image both runtime roles run, unless overridden by the operator's settings.
pub const DEFAULT_IMAGE: &str = "ghcr.io/usher-dev/usher:0.1.0";
/// Label values naming the two runtime roles.
pub const BROKER: &str = "broker";
pub const DISPATCHER: &str = "dispatcher";
/// The port both runtime roles serve `/metrics` on (named `metrics`).
pub const METRICS_PORT: i32 = 9090;
/// Pod template annotation whose change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "usher.dev/config-hash";

/// What the builders need besides the WaitingRoom itself.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Runtime image.
    pub image: String,
    /// Broker replicas wanted now (from demand, within min/max, at least
    /// the pre-warm floor; 0 once the room is closed and drained).
    pub broker_replicas: i32,
    /// Dispatcher replicas: the spec's, or 0 once closed and drained.
    pub dispatcher_replicas: i32,
    /// A digest of the entry-token key, so a new key rolls the brokers.
    pub token_key_digest: String,
    /// The key Secret also holds a retired key (see `secret::RETIRED_FILE`).
    pub retired_key: bool,
}

/// Names of a room's children.
pub fn child_name(room: &WaitingRoom, role: &str) -> String {
    format!("{}-{role}", room.name_any())
}

/// Labels shared by a room's children; `role` adds the component.
pub fn labels(room: &WaitingRoom, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "usher".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), room.name_any()),
        ("app.kubernetes.io/component".to_owned(), role.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "usher-operator".to_owned(),
        ),
    ])
}

/// The labels that select a role's pods (a stable subset of [`labels`]).
pub fn selector(room: &WaitingRoom, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), room.name_any()),
        ("app.kubernetes.io/component".to_owned(), role.to_owned()),
    ])
}

fn owner(room: &WaitingRoom) -> Vec<OwnerReference> {
    room.controller_owner_ref(&()).into_iter().collect()
}

/// Metadata of a child: name, namespace, labels and the owner reference.
pub fn child_meta(room: &WaitingRoom, name: String, role: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: room.namespace(),
        labels: Some(labels(room, role)),
        owner_references: Some(owner(room)),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A WaitingRoom as the API server would hand it over (uid, generation).
    pub fn room(spec: serde_json::Value) -> WaitingRoom {
        let mut room: WaitingRoom = serde_json::from_value(serde_json::json!({
            "apiVersion": "usher.dev/v1alpha1",
            "kind": "WaitingRoom",
            "metadata": {"name": "concert", "namespace": "tickets", "uid": "u-1", "generation": 4},
            "spec": spec,
        }))
        .unwrap();
        room.metadata.resource_version = Some("1".into());
        room
    }

    pub fn basic() -> WaitingRoom {
        room(
            serde_json::json!({"capacity": 500, "admissionRate": 300, "redis": {"url": "redis://redis:6379/"}}),
        )
    }

    pub fn inputs() -> Inputs {
        Inputs {
            image: "usher:test".into(),
            broker_replicas: 3,
            dispatcher_replicas: 1,
            token_key_digest: "abc".into(),
            retired_key: false,
        }
    }
}
