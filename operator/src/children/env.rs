//! The runtime's configuration as pod environment (`USHER_*`), shared by
//! both roles, and its digest (a change rolls the pods).

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use sha2::{Digest, Sha256};

use crate::crd::WaitingRoom;

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Where the room lives, and that its rules are in Redis: what every
/// runtime pod gets. The rules themselves are not here: the operator writes
/// them to Redis (`crate::rules`), and the pods follow them live, so a
/// change of rules rolls no pod.
pub fn room_env(room: &WaitingRoom) -> Vec<EnvVar> {
    vec![
        plain("USHER_ROOM", room.event_id()),
        redis_url(room),
        plain("USHER_RULES_FROM", "store"),
        plain("USHER_LOG_JSON", "true"),
    ]
}

/// [`room_env`] plus the address a role listens on.
pub fn role_env(room: &WaitingRoom, port: i32) -> Vec<EnvVar> {
    let mut env = room_env(room);
    env.push(listen("USHER_LISTEN", port));
    env
}

/// `name` set to listen on `port` of every interface of the pod.
pub fn listen(name: &str, port: i32) -> EnvVar {
    plain(name, format!("0.0.0.0:{port}"))
}

fn redis_url(room: &WaitingRoom) -> EnvVar {
    match (&room.spec.redis.url, &room.spec.redis.secret_ref) {
        (_, Some(secret)) => EnvVar {
            name: "USHER_REDIS_URL".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        (url, None) => plain("USHER_REDIS_URL", url.clone().unwrap_or_default()),
    }
}

/// A short, stable digest of what the pods are started with.
pub fn config_hash(room: &WaitingRoom) -> String {
    let env = room_env(room);
    let text = serde_json::to_string(&env).unwrap_or_default();
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    #[test]
    fn pods_learn_where_the_room_lives_not_its_rules() {
        let room = room(serde_json::json!({
            "capacity": 500, "admissionRate": 300, "paused": true, "eventId": "concert-2026",
            "redis": {"url": "redis://redis:6379/"}, "gate": {"claimWindow": "2m"}
        }));
        let env = room_env(&room);
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "USHER_ROOM",
                "USHER_REDIS_URL",
                "USHER_RULES_FROM",
                "USHER_LOG_JSON"
            ]
        );
        assert_eq!(value(&env, "USHER_ROOM"), Some("concert-2026"));
        assert_eq!(value(&env, "USHER_RULES_FROM"), Some("store"));
        assert_eq!(value(&env, "USHER_ROOM"), Some("concert-2026"));
        assert_eq!(
            room_env(&basic()).first().and_then(|e| e.value.as_deref()),
            Some("concert")
        );
    }

    #[test]
    fn a_redis_secret_is_referenced_not_copied() {
        let room = room(
            serde_json::json!({"capacity": 5, "redis": {"secretRef": {"name": "redis-creds", "key": "url"}}}),
        );
        let env = room_env(&room);
        let url = env
            .iter()
            .find(|e| e.name == "USHER_REDIS_URL")
            .unwrap_or_else(|| panic!("no URL"));
        assert_eq!(url.value, None);
        let reference = url
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref());
        assert_eq!(
            reference.map(|r| (r.name.as_str(), r.key.as_str())),
            Some(("redis-creds", "url"))
        );
    }

    #[test]
    fn the_hash_follows_where_the_room_lives_not_its_rules() {
        let base = basic();
        let mut changed = basic();
        changed.spec.broker.max_replicas = 50;
        changed.spec.paused = true;
        changed.spec.capacity = 9;
        changed.spec.message = Some("hello".into());
        assert_eq!(config_hash(&base), config_hash(&changed));
        let mut moved = basic();
        moved.spec.redis.url = Some("redis://elsewhere:6379/".into());
        assert_ne!(config_hash(&base), config_hash(&moved));
    }
}
