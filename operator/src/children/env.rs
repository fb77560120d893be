//! The runtime's configuration as pod environment (`USHER_*`), shared by
//! both roles, and its digest (a change rolls the pods).

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use sha2::{Digest, Sha256};

use crate::crd::{Queueing, WaitingRoom};

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The room's rules and where its Redis is: what every runtime pod gets.
pub fn room_env(room: &WaitingRoom, config_revision: i64) -> Vec<EnvVar> {
    let spec = &room.spec;
    let queueing = match spec.queueing {
        Queueing::Fifo => "FIFO",
        Queueing::Random => "Random",
        Queueing::Passthrough => "Passthrough",
        Queueing::Reject => "Reject",
    };
    let mut env = vec![
        plain("USHER_ROOM", room.event_id()),
        redis_url(room),
        plain("USHER_CAPACITY", spec.capacity.to_string()),
        plain("USHER_SESSION_DURATION", spec.session_duration.clone()),
        plain("USHER_QUEUEING", queueing),
        plain("USHER_PAUSED", spec.paused.to_string()),
        plain("USHER_CONFIG_REVISION", config_revision.to_string()),
        plain("USHER_LOG_JSON", "true"),
    ];
    if let Some(rate) = spec.admission_rate {
        env.push(plain("USHER_ADMISSION_RATE", rate.to_string()));
    }
    if let Some(at) = &spec.opens_at {
        env.push(plain("USHER_OPENS_AT", at.clone()));
    }
    if let Some(at) = &spec.closes_at {
        env.push(plain("USHER_CLOSES_AT", at.clone()));
    }
    // A room rule (dispatchers end unclaimed sessions, brokers claim them),
    // so both roles get it and it is part of the config hash.
    if let Some(window) = spec.gate.as_ref().and_then(|g| g.claim_window.as_ref()) {
        env.push(plain("USHER_CLAIM_WINDOW", window.clone()));
    }
    // Also a room rule: brokers extend, dispatchers expire.
    if let Some(longest) = spec
        .gate
        .as_ref()
        .and_then(|g| g.max_session_duration.as_ref())
    {
        env.push(plain("USHER_MAX_SESSION_DURATION", longest.clone()));
    }
    env
}

/// [`room_env`] plus the address a role listens on.
pub fn role_env(room: &WaitingRoom, config_revision: i64, port: i32) -> Vec<EnvVar> {
    let mut env = room_env(room, config_revision);
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

/// A short, stable digest of the room's runtime configuration.
pub fn config_hash(room: &WaitingRoom) -> String {
    // The revision is left out: it follows this hash, not the other way round.
    let env = room_env(room, 0);
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
    fn every_rule_becomes_an_environment_variable() {
        let room = room(serde_json::json!({
            "capacity": 500, "admissionRate": 300, "sessionDuration": "10m", "queueing": "Random",
            "opensAt": "2026-12-01T10:00:00Z", "closesAt": "2026-12-01T18:00:00Z", "paused": true,
            "eventId": "concert-2026", "redis": {"url": "redis://redis:6379/"},
            "gate": {"claimWindow": "2m", "maxSessionDuration": "30m"}
        }));
        let env = room_env(&room, 7);
        for (name, expected) in [
            ("USHER_ROOM", "concert-2026"),
            ("USHER_REDIS_URL", "redis://redis:6379/"),
            ("USHER_CAPACITY", "500"),
            ("USHER_ADMISSION_RATE", "300"),
            ("USHER_SESSION_DURATION", "10m"),
            ("USHER_QUEUEING", "Random"),
            ("USHER_OPENS_AT", "2026-12-01T10:00:00Z"),
            ("USHER_CLOSES_AT", "2026-12-01T18:00:00Z"),
            ("USHER_PAUSED", "true"),
            ("USHER_CONFIG_REVISION", "7"),
            ("USHER_CLAIM_WINDOW", "2m"),
            ("USHER_MAX_SESSION_DURATION", "30m"),
        ] {
            assert_eq!(value(&env, name), Some(expected), "{name}");
        }
    }

    #[test]
    fn optional_rules_are_left_out_and_the_room_defaults_to_the_name() {
        let env = room_env(&basic(), 1);
        assert_eq!(value(&env, "USHER_ROOM"), Some("concert"));
        assert!(value(&env, "USHER_OPENS_AT").is_none());
        assert!(value(&env, "USHER_CLOSES_AT").is_none());
        assert!(value(&env, "USHER_CLAIM_WINDOW").is_none());
    }

    #[test]
    fn a_redis_secret_is_referenced_not_copied() {
        let room = room(
            serde_json::json!({"capacity": 5, "redis": {"secretRef": {"name": "redis-creds", "key": "url"}}}),
        );
        let env = room_env(&room, 1);
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
    fn the_hash_follows_the_rules_not_the_scaling_bounds() {
        let base = basic();
        let mut scaled = basic();
        scaled.spec.broker.max_replicas = 50;
        assert_eq!(config_hash(&base), config_hash(&scaled));
        let mut paused = basic();
        paused.spec.paused = true;
        assert_ne!(config_hash(&base), config_hash(&paused));
        let mut claimed = basic();
        claimed.spec.gate = Some(crate::crd::GateSpec {
            claim_window: Some("2m".into()),
            ..Default::default()
        });
        assert_ne!(config_hash(&base), config_hash(&claimed));
    }
}
