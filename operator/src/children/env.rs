//! The runtime's configuration as pod environment (`USHER_*`), shared by
//! both roles, and its digest (a change rolls the pods).

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use sha2::{Digest, Sha256};

use crate::crd::WaitingRoom;

/// A variable with a literal value.
pub fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The variables that have a value, each with it.
pub fn present<'a>(vars: impl IntoIterator<Item = (&'a str, Option<String>)>) -> Vec<EnvVar> {
    vars.into_iter()
        .filter_map(|(name, value)| value.map(|value| plain(name, value)))
        .collect()
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

/// `name` set from a Secret's key, which the kubelet reads: the value is
/// never in the pod template.
fn from_secret(name: &str, secret: &SecretKeySelector) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn redis_url(room: &WaitingRoom) -> EnvVar {
    match (&room.spec.redis.url, &room.spec.redis.secret_ref) {
        (_, Some(secret)) => from_secret("USHER_REDIS_URL", secret),
        (url, None) => plain("USHER_REDIS_URL", url.clone().unwrap_or_default()),
    }
}

/// The human check's verifier and site secret, for the brokers: a process
/// setting (a change rolls the brokers), not a rule.
pub fn human_check_env(room: &WaitingRoom) -> Vec<EnvVar> {
    let Some(check) = room.spec.bots.as_ref().and_then(|b| b.human_check.as_ref()) else {
        return Vec::new();
    };
    vec![
        plain("USHER_HUMAN_CHECK_URL", check.url.clone()),
        from_secret("USHER_HUMAN_CHECK_SECRET", &check.secret_ref),
    ]
}

/// A short, stable digest of what the pods are started with.
pub fn config_hash(room: &WaitingRoom) -> String {
    let env = room_env(room);
    let text = serde_json::to_string(&env).unwrap_or_default();
    usher_runtime::digest::hex(&Sha256::digest(text.as_bytes())[..8])
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
    fn a_human_check_reaches_the_brokers_with_its_secret_referenced() {
        assert!(human_check_env(&basic()).is_empty());
        let room = room(serde_json::json!({
            "capacity": 5, "redis": {"url": "redis://r:6379/"},
            "bots": {"humanCheck": {
                "url": "https://verifier.example/siteverify",
                "secretRef": {"name": "captcha", "key": "secret"}
            }}
        }));
        let env = human_check_env(&room);
        assert_eq!(
            value(&env, "USHER_HUMAN_CHECK_URL"),
            Some("https://verifier.example/siteverify")
        );
        let secret = env
            .iter()
            .find(|e| e.name == "USHER_HUMAN_CHECK_SECRET")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref());
        assert_eq!(
            secret.map(|r| (r.name.as_str(), r.key.as_str())),
            Some(("captcha", "secret"))
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
