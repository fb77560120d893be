//! The room's rules as the runtime keeps them in Redis, built from the spec
//! (pure), and the revision that orders them. The operator writes them and
//! the runtime pods follow them live (`USHER_RULES_FROM=store`), so a pause
//! or a new capacity needs no new pods.
//!
//! The spec is turned into the runtime's own flags and checked by the
//! runtime's own code ([`RoomArgs::room_config`]), so the two can never
//! disagree on what a valid rule is.

use std::hash::{DefaultHasher, Hash, Hasher};

use usher_runtime::clock::parse_rfc3339;
use usher_runtime::config::{
    DEFAULT_JOINS_PER_ADDRESS, DEFAULT_SESSIONS_PER_ADDRESS, RoomArgs, parse_abandon_timeout,
    parse_claim_window, parse_message, parse_session_duration,
};
use usher_runtime::pow::DEFAULT_DIFFICULTY;
use usher_runtime::queue::{self, RoomConfig};
use usher_runtime::rules::RulesFrom;

use crate::crd::{Queueing, WaitingRoom};

/// The runtime's default abandon timeout: the spec does not set one.
const ABANDON_TIMEOUT: &str = "2m";

/// The runtime's name of a queueing mode.
pub fn queueing(mode: Queueing) -> queue::Queueing {
    match mode {
        Queueing::Fifo => queue::Queueing::Fifo,
        Queueing::Random => queue::Queueing::Random,
        Queueing::Passthrough => queue::Queueing::Passthrough,
        Queueing::Reject => queue::Queueing::Reject,
    }
}

/// `value` parsed, when set; errors name the spec's field.
fn optional<T>(
    name: &str,
    value: &Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    value
        .as_deref()
        .map(parse)
        .transpose()
        .map_err(|e| format!("spec.{name}: {e}"))
}

/// A per-address limit: the runtime's default when unset.
fn per_address_limit(name: &str, value: Option<i32>, default: u64) -> Result<u64, String> {
    value.map_or(Ok(default), |v| {
        u64::try_from(v).map_err(|e| format!("spec.{name}: {e}"))
    })
}

/// The rules `room` asks for, at `revision`; or why they are not valid
/// (the API server's validation should have refused such a spec already).
pub fn desired(room: &WaitingRoom, revision: u64) -> Result<RoomConfig, String> {
    let spec = &room.spec;
    let gate = spec.gate.clone().unwrap_or_default();
    let per_address = spec
        .bots
        .as_ref()
        .and_then(|bots| bots.per_address.clone())
        .unwrap_or_default();
    let field = |name: &str, e: String| format!("spec.{name}: {e}");
    let args = RoomArgs {
        rules_from: RulesFrom::Store,
        capacity: u64::try_from(spec.capacity).map_err(|e| field("capacity", e.to_string()))?,
        admission_rate: spec
            .admission_rate
            .map(u64::try_from)
            .transpose()
            .map_err(|e| field("admissionRate", e.to_string()))?,
        session_duration: parse_session_duration(&spec.session_duration)
            .map_err(|e| field("sessionDuration", e))?,
        queueing: queueing(spec.queueing),
        opens_at: optional("opensAt", &spec.opens_at, parse_rfc3339)?,
        closes_at: optional("closesAt", &spec.closes_at, parse_rfc3339)?,
        paused: spec.paused,
        abandon_timeout: parse_abandon_timeout(ABANDON_TIMEOUT)?,
        claim_window: optional("gate.claimWindow", &gate.claim_window, parse_claim_window)?,
        max_session_duration: optional(
            "gate.maxSessionDuration",
            &gate.max_session_duration,
            parse_session_duration,
        )?,
        message: parse_message(spec.message.as_deref().unwrap_or_default())
            .map_err(|e| field("message", e))?,
        joins_per_address: per_address_limit(
            "bots.perAddress.joinsPerMinute",
            per_address.joins_per_minute,
            DEFAULT_JOINS_PER_ADDRESS,
        )?,
        sessions_per_address: per_address_limit(
            "bots.perAddress.liveSessions",
            per_address.live_sessions,
            DEFAULT_SESSIONS_PER_ADDRESS,
        )?,
        priority_share: spec
            .lanes
            .as_ref()
            .and_then(|lanes| lanes.priority_share)
            .map_or(Ok(100), u8::try_from)
            .map_err(|e| field("lanes.priorityShare", e.to_string()))?,
        config_revision: revision,
        proof_of_work: spec
            .bots
            .as_ref()
            .and_then(|bots| bots.proof_of_work.as_ref())
            .map_or(Ok(DEFAULT_DIFFICULTY), |pow| u8::try_from(pow.difficulty))
            .map_err(|e| field("bots.proofOfWork.difficulty", e.to_string()))?,
    };
    args.room_config()
}

/// A digest of the rules, revision aside: the operator starts a new
/// revision when it changes.
pub fn digest(rules: &RoomConfig) -> String {
    let unversioned = RoomConfig {
        revision: 0,
        ..rules.clone()
    };
    let mut hasher = DefaultHasher::new();
    format!("{unversioned:?}").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The revision to write `digest`'s rules at. The same rules keep the
/// revision they were first written at. New rules get the time in
/// milliseconds: above any generation-based revision of earlier versions,
/// and of a room deleted and made again with its keys kept. Either way the
/// revision is above that of other rules in the store (written by a process
/// running on its own flags), since the WaitingRoom is what decides.
pub fn revision(
    previous: Option<(&str, u64)>,
    digest: &str,
    in_store: Option<&RoomConfig>,
    now_ms: i64,
) -> u64 {
    let kept = match previous {
        Some((hash, revision)) if hash == digest => revision,
        _ => u64::try_from(now_ms).unwrap_or_default(),
    };
    match in_store {
        Some(rules) if self::digest(rules) != digest && rules.revision >= kept => {
            rules.revision + 1
        }
        _ => kept,
    }
}

/// What changed from `before` to `after`, for an Event: `paused: false ->
/// true`, one entry per rule. The message is named, not quoted.
pub fn changes(before: &RoomConfig, after: &RoomConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut compare = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} -> {b}"));
        }
    };
    let duration = |ms: i64| format!("{}s", ms as f64 / 1000.0);
    let instant = |at: Option<i64>| at.map_or("unset".into(), usher_runtime::clock::rfc3339);
    let rate = |rate: Option<u64>| rate.map_or("unset".into(), |r| format!("{r}/min"));
    compare(
        "capacity",
        before.capacity.to_string(),
        after.capacity.to_string(),
    );
    compare(
        "admissionRate",
        rate(before.admission_rate),
        rate(after.admission_rate),
    );
    compare(
        "sessionDuration",
        duration(before.session_duration_ms),
        duration(after.session_duration_ms),
    );
    compare(
        "queueing",
        before.queueing.as_str().into(),
        after.queueing.as_str().into(),
    );
    compare("opensAt", instant(before.opens_at), instant(after.opens_at));
    compare(
        "closesAt",
        instant(before.closes_at),
        instant(after.closes_at),
    );
    compare(
        "paused",
        before.paused.to_string(),
        after.paused.to_string(),
    );
    compare(
        "claimWindow",
        duration(before.claim_window_ms),
        duration(after.claim_window_ms),
    );
    compare(
        "maxSessionDuration",
        duration(before.max_session_duration_ms),
        duration(after.max_session_duration_ms),
    );
    compare(
        "proofOfWork",
        format!("{} bits", before.proof_of_work_bits),
        format!("{} bits", after.proof_of_work_bits),
    );
    if before.message != after.message {
        out.push(if after.message.is_empty() {
            "message withdrawn".to_owned()
        } else {
            format!(
                "message ({} characters) sent",
                after.message.chars().count()
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::children::fixtures::room;

    fn concert(extra: serde_json::Value) -> WaitingRoom {
        let mut spec = serde_json::json!({
            "capacity": 500, "sessionDuration": "10m", "redis": {"url": "redis://r:6379/"}
        });
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        room(spec)
    }

    #[test]
    fn every_rule_of_the_spec_reaches_the_store() {
        let room = concert(serde_json::json!({
            "admissionRate": 300, "queueing": "Random", "paused": true,
            "opensAt": "2026-12-01T10:00:00Z", "closesAt": "2026-12-01T18:00:00Z",
            "message": "Doors open at 10",
            "gate": {"claimWindow": "2m", "maxSessionDuration": "30m"},
            "bots": {
                "perAddress": {"joinsPerMinute": 0, "liveSessions": 4},
                "proofOfWork": {"difficulty": 24}
            }
        }));
        let rules = desired(&room, 7).unwrap();
        assert_eq!(
            rules,
            RoomConfig {
                capacity: 500,
                admission_rate: Some(300),
                session_duration_ms: 600_000,
                queueing: queue::Queueing::Random,
                opens_at: Some(parse_rfc3339("2026-12-01T10:00:00Z").unwrap()),
                closes_at: Some(parse_rfc3339("2026-12-01T18:00:00Z").unwrap()),
                paused: true,
                abandon_timeout_ms: 120_000,
                claim_window_ms: 120_000,
                max_session_duration_ms: 1_800_000,
                message: "Doors open at 10".into(),
                joins_per_address_per_minute: 0,
                sessions_per_address: 4,
                priority_share: 100,
                revision: 7,
                proof_of_work_bits: 24,
            }
        );
        // Without a word on bots: the runtime's default; 0 turns it off.
        let plain = desired(&concert(serde_json::json!({})), 1).unwrap();
        assert_eq!(plain.proof_of_work_bits, DEFAULT_DIFFICULTY);
        let off = concert(serde_json::json!({"bots": {"proofOfWork": {"difficulty": 0}}}));
        assert_eq!(desired(&off, 1).unwrap().proof_of_work_bits, 0);
    }

    #[test]
    fn the_runtime_checks_the_rules() {
        for (spoiled, complaint) in [
            (
                serde_json::json!({"sessionDuration": "soon"}),
                "sessionDuration",
            ),
            (
                serde_json::json!({"opensAt": "2026-12-01T10:00:00Z", "closesAt": "2026-12-01T09:00:00Z"}),
                "closesAt must be after opensAt",
            ),
            (
                serde_json::json!({"gate": {"maxSessionDuration": "5m"}}),
                "maxSessionDuration must be at least sessionDuration",
            ),
            (
                serde_json::json!({"message": "x".repeat(501)}),
                "spec.message",
            ),
            (serde_json::json!({"capacity": -1}), "spec.capacity"),
            (
                serde_json::json!({"bots": {"perAddress": {"liveSessions": -1}}}),
                "spec.bots.perAddress.liveSessions",
            ),
            (
                serde_json::json!({"bots": {"proofOfWork": {"difficulty": 29}}}),
                "proofOfWork.difficulty must be at most 28",
            ),
            (
                serde_json::json!({"bots": {"proofOfWork": {"difficulty": -1}}}),
                "spec.bots.proofOfWork.difficulty",
            ),
        ] {
            let error = desired(&concert(spoiled.clone()), 1).unwrap_err();
            assert!(error.contains(complaint), "{spoiled}: {error}");
        }
    }

    #[test]
    fn new_rules_get_a_new_revision_and_the_same_rules_keep_theirs() {
        let now = 1_800_000_000_000;
        let open = desired(&concert(serde_json::json!({})), 0).unwrap();
        let paused = desired(&concert(serde_json::json!({"paused": true})), 0).unwrap();
        let (open_digest, paused_digest) = (digest(&open), digest(&paused));
        assert_ne!(open_digest, paused_digest);
        assert_eq!(revision(None, &open_digest, None, now), now as u64);
        let written = RoomConfig {
            revision: 5,
            ..open.clone()
        };
        // The same rules keep their revision, whatever the store holds.
        assert_eq!(
            revision(Some((&open_digest, 5)), &open_digest, Some(&written), now),
            5
        );
        // New rules: the time.
        assert_eq!(
            revision(Some((&open_digest, 5)), &paused_digest, Some(&written), now),
            now as u64
        );
        // Other rules in the store at a higher revision are outranked.
        let foreign = RoomConfig {
            revision: now as u64 + 10,
            ..paused.clone()
        };
        assert_eq!(
            revision(Some((&open_digest, 5)), &open_digest, Some(&foreign), now),
            now as u64 + 11
        );
    }

    #[test]
    fn changes_name_each_rule_that_moved() {
        let before = desired(&concert(serde_json::json!({})), 1).unwrap();
        let after = desired(
            &concert(serde_json::json!({
                "paused": true, "capacity": 800, "message": "Hello",
                "bots": {"proofOfWork": {"difficulty": 25}}
            })),
            2,
        )
        .unwrap();
        assert_eq!(
            changes(&before, &after),
            [
                "capacity: 500 -> 800",
                "paused: false -> true",
                format!("proofOfWork: {DEFAULT_DIFFICULTY} bits -> 25 bits").as_str(),
                "message (5 characters) sent"
            ]
        );
        assert!(changes(&before, &before).is_empty());
        assert_eq!(
            changes(&after, &before).last().unwrap(),
            "message withdrawn"
        );
    }
}
