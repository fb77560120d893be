//! The Redis store: every state change is one Lua script over the room's
//! keys, all under the `{room}` hash tag; brokers and dispatchers follow the
//! room's change stream with XREAD.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamReadReply;
use redis::{FromRedisValue, Script, Value};

use super::*;

const COMMON: &str = include_str!("lua/common.lua");

/// Waiting on the change stream never blocks longer than this.
pub const MAX_BLOCK: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt to (re)connect gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts after the first one when a connection is lost. A call waits for
/// the reconnection, so during an outage it fails after about one attempt
/// per retry plus the pauses between them (well under two seconds) rather
/// than hang; the next call starts a new round.
const RECONNECT_RETRIES: usize = 1;
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The keys every script receives, in the order `lua/common.lua` names them.
const SCRIPT_KEYS: [&str; 19] = [
    "cfg",
    "meta",
    "users",
    "sessions",
    "waiting",
    "active",
    "seen",
    "admits",
    "closed",
    "events",
    "purged",
    "unclaimed",
    "addr_rate",
    "addr_live",
    "sid_addr",
    "invites",
    "redeemed",
    "joins",
    "proofs",
];
/// How long a purged room's mark stops its leftover processes from
/// restoring its rules.
const PURGED_MARK_SECONDS: u64 = 86_400;

struct Scripts {
    configure: Script,
    join: Script,
    add_invites: Script,
    session: Script,
    leave: Script,
    finish: Script,
    claim: Script,
    extend: Script,
    admit_now: Script,
    presence: Script,
    tick: Script,
    counts: Script,
    snapshot: Script,
    fairness: Script,
    spend_proof: Script,
}

impl Scripts {
    fn load() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            configure: with_common(include_str!("lua/configure.lua")),
            join: with_common(include_str!("lua/join.lua")),
            add_invites: with_common(include_str!("lua/add_invites.lua")),
            session: with_common(include_str!("lua/session.lua")),
            leave: with_common(include_str!("lua/leave.lua")),
            finish: with_common(include_str!("lua/finish.lua")),
            claim: with_common(include_str!("lua/claim.lua")),
            extend: with_common(include_str!("lua/extend.lua")),
            admit_now: with_common(include_str!("lua/admit_now.lua")),
            presence: with_common(include_str!("lua/presence.lua")),
            tick: with_common(include_str!("lua/tick.lua")),
            counts: with_common(include_str!("lua/counts.lua")),
            snapshot: with_common(include_str!("lua/snapshot.lua")),
            fairness: with_common(include_str!("lua/fairness.lua")),
            spend_proof: with_common(include_str!("lua/spend_proof.lua")),
        }
    }
}

pub struct RedisStore {
    /// Shared, multiplexed connection for scripts and short commands.
    conn: ConnectionManager,
    /// A connection of its own for XREAD BLOCK, which would stall the shared one.
    follow_conn: ConnectionManager,
    keys: Vec<String>,
    brokers_key: String,
    scripts: Scripts,
    /// Commands sent, for the "Redis commands per broker tick" metric.
    commands: AtomicU64,
}

/// The key prefix of a room; `{room}` is the Redis Cluster hash tag.
pub fn room_key_prefix(room: &str) -> String {
    format!("usher:{{{room}}}:")
}

fn unavailable(e: redis::RedisError) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn malformed(what: impl std::fmt::Display) -> QueueError {
    QueueError::Malformed(what.to_string())
}

fn field<T: FromRedisValue>(reply: &[Value], i: usize) -> Result<T> {
    let value = reply
        .get(i)
        .ok_or_else(|| malformed(format!("reply too short at {i}")))?;
    T::from_redis_value_ref(value).map_err(|e| malformed(format!("field {i}: {e}")))
}

/// Maps a script's first reply element (`ok` or an error code) to a result.
fn check_status(reply: &[Value]) -> Result<()> {
    let status: String = field(reply, 0)?;
    match status.as_str() {
        "ok" => Ok(()),
        "not_configured" => Err(QueueError::NotConfigured),
        "rejected" => Err(QueueError::Rejected),
        "room_closed" => Err(QueueError::RoomClosed),
        "unknown_session" => Err(QueueError::UnknownSession),
        "not_active" => Err(QueueError::NotActive),
        "address_full" => Err(QueueError::AddressFull),
        "invalid_invite" => Err(QueueError::InvalidInvite),
        other => Err(malformed(format!("unknown status {other:?}"))),
    }
}

/// Decodes `session_reply` from `lua/common.lua`.
fn decode_session(reply: &[Value]) -> Result<SessionView> {
    check_status(reply)?;
    let state: String = field(reply, 2)?;
    let admitted_at: Millis = field(reply, 4)?;
    let expires_at: Millis = field(reply, 5)?;
    let reason: String = field(reply, 6)?;
    let state = match state.as_str() {
        "w" => SessionState::Waiting,
        "a" => SessionState::Active {
            admitted_at,
            expires_at,
        },
        "c" => SessionState::Closed(
            CloseReason::parse(&reason).ok_or_else(|| malformed(format!("reason {reason:?}")))?,
        ),
        other => return Err(malformed(format!("state {other:?}"))),
    };
    let position: u64 = field(reply, 8)?;
    Ok(SessionView {
        session: Session {
            id: field(reply, 1)?,
            user: field(reply, 7)?,
            ticket: field(reply, 3)?,
            state,
        },
        position: (position > 0).then_some(position),
        waiting: field(reply, 9)?,
    })
}

fn decode_change(fields: &std::collections::HashMap<String, Value>) -> Result<(u64, Change)> {
    let get = |name: &str| -> Result<String> {
        let value = fields
            .get(name)
            .ok_or_else(|| malformed(format!("change lacks {name}")))?;
        String::from_redis_value_ref(value).map_err(malformed)
    };
    let num = |name: &str| -> Result<i64> {
        get(name)?
            .parse()
            .map_err(|e| malformed(format!("{name}: {e}")))
    };
    let reason = |name: &str| -> Result<CloseReason> {
        let r = get(name)?;
        CloseReason::parse(&r).ok_or_else(|| malformed(format!("reason {r:?}")))
    };
    let seq = num("n")? as u64;
    let change = match get("k")?.as_str() {
        "j" => Change::Joined {
            ticket: num("t")? as u64,
        },
        "a" => Change::Admitted {
            sid: get("s")?,
            user: get("u")?,
            ticket: num("t")? as u64,
            admitted_at: num("aa")?,
            expires_at: num("ex")?,
        },
        "d" => Change::Dequeued {
            sid: get("s")?,
            ticket: num("t")? as u64,
            reason: reason("r")?,
        },
        "x" => Change::Extended {
            sid: get("s")?,
            user: get("u")?,
            admitted_at: num("aa")?,
            expires_at: num("ex")?,
        },
        "e" => Change::Ended {
            sid: get("s")?,
            reason: reason("r")?,
        },
        "o" => Change::Opened,
        "c" => Change::Reconfigured,
        other => return Err(malformed(format!("change kind {other:?}"))),
    };
    Ok((seq, change))
}

impl RedisStore {
    /// The store of `room` at `url` (the room id must already be validated),
    /// without connecting yet: the first call connects, and every call after
    /// a lost connection tries again. Fails only on a malformed URL, so a
    /// process can start while Redis is away.
    pub fn open(url: &str, room: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let manager = |response: Duration| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(response))
                .set_number_of_retries(RECONNECT_RETRIES)
                .set_min_delay(RECONNECT_PAUSE)
                .set_max_delay(RECONNECT_PAUSE * 2);
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)
        };
        let conn = manager(COMMAND_TIMEOUT)?;
        let follow_conn = manager(MAX_BLOCK + COMMAND_TIMEOUT)?;
        let prefix = room_key_prefix(room);
        Ok(RedisStore {
            conn,
            follow_conn,
            keys: SCRIPT_KEYS.iter().map(|k| format!("{prefix}{k}")).collect(),
            brokers_key: format!("{prefix}brokers"),
            scripts: Scripts::load(),
            commands: AtomicU64::new(0),
        })
    }

    /// [`RedisStore::open`], then checks that Redis answers.
    pub async fn connect(url: &str, room: &str) -> Result<Self> {
        let store = Self::open(url, room)?;
        store.ping().await?;
        Ok(store)
    }

    /// The shared connection, counting the command about to be sent.
    fn conn(&self) -> ConnectionManager {
        self.commands.fetch_add(1, Relaxed);
        self.conn.clone()
    }

    async fn run(&self, script: &Script, args: &[String]) -> Result<Vec<Value>> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The id of the newest change, or `0-0` when there is none.
    async fn last_change_id(&self) -> Result<String> {
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.events_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(last
            .ids
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |entry| entry.id))
    }

    /// Runs `lua/configure.lua` in `mode` (`start` or `restore`).
    async fn write_rules(&self, c: &RoomConfig, mode: &str) -> Result<bool> {
        let fields = [
            ("capacity", c.capacity.to_string()),
            ("rate", c.admission_rate.unwrap_or(0).to_string()),
            ("session_ms", c.session_duration_ms.to_string()),
            ("mode", c.queueing.as_str().to_owned()),
            ("opens_at", c.opens_at.unwrap_or(0).to_string()),
            ("closes_at", c.closes_at.unwrap_or(0).to_string()),
            ("paused", if c.paused { "1" } else { "0" }.to_owned()),
            ("abandon_ms", c.abandon_timeout_ms.to_string()),
            ("claim_ms", c.claim_window_ms.to_string()),
            ("max_session_ms", c.max_session_duration_ms.to_string()),
            ("message", c.message.clone()),
            ("addr_rate", c.joins_per_address_per_minute.to_string()),
            ("addr_live", c.sessions_per_address.to_string()),
            ("priority_share", c.priority_share.to_string()),
            ("pow_bits", c.proof_of_work_bits.to_string()),
        ];
        let args: Vec<String> = [mode.to_owned(), c.revision.to_string()]
            .into_iter()
            .chain(
                fields
                    .into_iter()
                    .flat_map(|(name, value)| [name.to_owned(), value]),
            )
            .collect();
        let reply = self.run(&self.scripts.configure, &args).await?;
        check_status(&reply)?;
        Ok(field::<i64>(&reply, 1)? == 1)
    }

    /// Runs `lua/finish.lua`: ends an active session with `reason`.
    async fn finish(&self, sid: &str, now: Millis, reason: CloseReason) -> Result<SessionView> {
        let args = [now.to_string(), sid.to_owned(), reason.as_str().to_owned()];
        decode_session(&self.run(&self.scripts.finish, &args).await?)
    }

    fn events_key(&self) -> &str {
        &self.keys[9]
    }

    fn joins_key(&self) -> &str {
        &self.keys[17]
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn configure(&self, c: &RoomConfig) -> Result<bool> {
        self.write_rules(c, "start").await
    }

    async fn restore(&self, c: &RoomConfig) -> Result<bool> {
        self.write_rules(c, "restore").await
    }

    async fn config(&self) -> Result<Option<RoomConfig>> {
        let map: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.keys[0])
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        let num = |name: &str| -> Result<i64> {
            map.get(name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| malformed(format!("config field {name}")))
        };
        // 0 when absent: rules written before the setting existed.
        let optional_num = |name: &str| map.get(name).map_or(Ok(0), |_| num(name));
        let optional = |v: i64| (v > 0).then_some(v);
        Ok(Some(RoomConfig {
            capacity: num("capacity")? as u64,
            admission_rate: optional(num("rate")?).map(|r| r as u64),
            session_duration_ms: num("session_ms")?,
            queueing: map
                .get("mode")
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| malformed("config field mode"))?,
            opens_at: optional(num("opens_at")?),
            closes_at: optional(num("closes_at")?),
            paused: num("paused")? == 1,
            abandon_timeout_ms: num("abandon_ms")?,
            claim_window_ms: optional_num("claim_ms")?,
            max_session_duration_ms: optional_num("max_session_ms")?,
            message: map.get("message").cloned().unwrap_or_default(),
            joins_per_address_per_minute: optional_num("addr_rate")? as u64,
            sessions_per_address: optional_num("addr_live")? as u64,
            priority_share: map
                .get("priority_share")
                .map_or(Ok(100), |_| num("priority_share"))?
                .clamp(0, 100) as u8,
            revision: num("revision")? as u64,
            proof_of_work_bits: optional_num("pow_bits")?
                .clamp(0, i64::from(crate::pow::MAX_DIFFICULTY))
                as u8,
        }))
    }

    async fn join(&self, request: &JoinRequest<'_>, now: Millis) -> Result<JoinOutcome> {
        let args = [
            now.to_string(),
            request.user.to_owned(),
            request.new_sid.to_owned(),
            request.address.unwrap_or_default().to_owned(),
            request.lane.code().to_owned(),
            request.invite.unwrap_or_default().to_owned(),
        ];
        let reply = self.run(&self.scripts.join, &args).await?;
        if field::<String>(&reply, 0)? == "address_rate" {
            return Err(QueueError::AddressRateLimited {
                retry_after_ms: field(&reply, 1)?,
            });
        }
        let view = decode_session(&reply)?;
        let created: i64 = field(&reply, 10)?;
        Ok(JoinOutcome {
            view,
            created: created == 1,
        })
    }

    async fn add_invites(&self, hashes: &[String]) -> Result<u64> {
        let mut added = 0;
        for chunk in hashes.chunks(TICK_BATCH) {
            let reply = self.run(&self.scripts.add_invites, chunk).await?;
            check_status(&reply)?;
            added += field::<u64>(&reply, 1)?;
        }
        Ok(added)
    }

    async fn session(&self, sid: &str, touch: Option<Millis>) -> Result<SessionView> {
        let args = [touch.unwrap_or(0).to_string(), sid.to_owned()];
        decode_session(&self.run(&self.scripts.session, &args).await?)
    }

    async fn leave(&self, sid: &str, now: Millis) -> Result<SessionView> {
        let args = [now.to_string(), sid.to_owned()];
        decode_session(&self.run(&self.scripts.leave, &args).await?)
    }

    async fn complete(&self, sid: &str, now: Millis) -> Result<SessionView> {
        self.finish(sid, now, CloseReason::Completed).await
    }

    async fn revoke(&self, sid: &str, now: Millis) -> Result<SessionView> {
        self.finish(sid, now, CloseReason::Revoked).await
    }

    async fn admit_now(&self, request: &str, count: u64, now: Millis) -> Result<AdmitNow> {
        let args = [now.to_string(), count.to_string(), request.to_owned()];
        let reply = self.run(&self.scripts.admit_now, &args).await?;
        check_status(&reply)?;
        Ok(AdmitNow {
            admitted: field(&reply, 1)?,
            left: field(&reply, 2)?,
        })
    }

    async fn extend(&self, sid: &str, for_ms: Millis, now: Millis) -> Result<SessionView> {
        let args = [now.to_string(), sid.to_owned(), for_ms.to_string()];
        decode_session(&self.run(&self.scripts.extend, &args).await?)
    }

    async fn claim(&self, sid: &str, now: Millis) -> Result<ClaimOutcome> {
        let args = [now.to_string(), sid.to_owned()];
        let reply = self.run(&self.scripts.claim, &args).await?;
        Ok(ClaimOutcome {
            view: decode_session(&reply)?,
            lapsed: field::<i64>(&reply, 10)? == 1,
        })
    }

    async fn touch(&self, sids: &[String], now: Millis) -> Result<()> {
        for chunk in sids.chunks(TICK_BATCH) {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&self.keys[6]).arg("XX").arg("GT");
            for sid in chunk {
                cmd.arg(now).arg(sid);
            }
            let _: i64 = cmd
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn presence_lapsed(&self, now: Millis) -> Result<()> {
        check_status(&self.run(&self.scripts.presence, &[now.to_string()]).await?)
    }

    async fn tick(&self, now: Millis, seed: &SealedSeed) -> Result<TickReport> {
        let args = [
            now.to_string(),
            seed.seed.to_string(),
            seed.salt.clone(),
            seed.commitment.clone(),
        ];
        let reply = self.run(&self.scripts.tick, &args).await?;
        check_status(&reply)?;
        Ok(TickReport {
            admitted: field(&reply, 1)?,
            expired: field(&reply, 2)?,
            abandoned: field(&reply, 3)?,
            closed: field(&reply, 4)?,
            more: field::<i64>(&reply, 5)? == 1,
            unclaimed: field(&reply, 6)?,
        })
    }

    async fn counts(&self) -> Result<RoomCounts> {
        let reply = self.run(&self.scripts.counts, &[]).await?;
        Ok(RoomCounts {
            waiting: field(&reply, 0)?,
            active: field(&reply, 1)?,
            admitted_total: field(&reply, 2)?,
            opened: field::<i64>(&reply, 3)? == 1,
        })
    }

    async fn fairness(&self) -> Result<Option<Fairness>> {
        let reply = self.run(&self.scripts.fairness, &[]).await?;
        if reply.is_empty() {
            return Ok(None);
        }
        let revealed = if reply.len() > 1 {
            Some(Revealed {
                seed: field(&reply, 1)?,
                salt: field(&reply, 2)?,
                shuffled_at: field(&reply, 3)?,
                general: field(&reply, 4)?,
                priority: field(&reply, 5)?,
            })
        } else {
            None
        };
        Ok(Some(Fairness {
            commitment: field(&reply, 0)?,
            revealed,
        }))
    }

    async fn joins(&self, offset: u64, limit: u64) -> Result<Vec<u64>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Redis takes indexes up to i64::MAX.
        let index = |i: u64| i.min(i64::MAX as u64);
        redis::cmd("LRANGE")
            .arg(self.joins_key())
            .arg(index(offset))
            .arg(index(offset.saturating_add(limit - 1)))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn snapshot(&self) -> Result<LineSnapshot> {
        let reply = self.run(&self.scripts.snapshot, &[]).await?;
        let closed_count: usize = field(&reply, 2)?;
        let closed = (3..3 + closed_count)
            .map(|i| field(&reply, i))
            .collect::<Result<Vec<String>>>()?;
        let first_waiting = 3 + closed_count;
        let mut waiting = Vec::with_capacity(reply.len().saturating_sub(first_waiting) / 2);
        for i in (first_waiting..reply.len()).step_by(2) {
            waiting.push((field(&reply, i)?, field(&reply, i + 1)?));
        }
        Ok(LineSnapshot {
            cursor: field(&reply, 0)?,
            seq: field(&reply, 1)?,
            waiting,
            closed,
        })
    }

    async fn changes(&self, cursor: &str, max: usize, block: Duration) -> Result<ChangeBatch> {
        // XREAD's own `$` would come back as the cursor of an empty read and
        // skip what happens before the next one: start from a real entry id.
        let cursor = if cursor == LATEST {
            &self.last_change_id().await?
        } else {
            cursor
        };
        let block = block.min(MAX_BLOCK);
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.events_key())
            .arg(cursor)
            .query_async(&mut {
                self.commands.fetch_add(1, Relaxed);
                self.follow_conn.clone()
            })
            .await
            .map_err(unavailable)?;
        let mut batch = ChangeBatch {
            cursor: cursor.to_owned(),
            changes: Vec::new(),
        };
        for stream in reply.into_iter().flat_map(|r| r.keys) {
            for entry in stream.ids {
                batch.changes.push(decode_change(&entry.map)?);
                batch.cursor = entry.id;
            }
        }
        Ok(batch)
    }

    async fn report_broker(&self, broker_id: &str, connected: u64, now: Millis) -> Result<()> {
        let _: i64 = redis::cmd("HSET")
            .arg(&self.brokers_key)
            .arg(broker_id)
            .arg(format!("{connected}:{now}"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn connected(&self, since: Millis) -> Result<u64> {
        let reports: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.brokers_key)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(reports
            .values()
            .filter_map(|report| {
                let (connected, at) = report.split_once(':')?;
                let at: Millis = at.parse().ok()?;
                (at >= since)
                    .then(|| connected.parse::<u64>().ok())
                    .flatten()
            })
            .sum())
    }

    async fn purge(&self) -> Result<()> {
        let purged_key = &self.keys[10];
        let _: () = redis::pipe()
            .atomic()
            .del(&self.keys)
            .ignore()
            .del(&self.brokers_key)
            .ignore()
            .set_ex(purged_key, 1, PURGED_MARK_SECONDS)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn spend_proof(&self, id: &str, expires_at: Millis, now: Millis) -> Result<bool> {
        let args = [now.to_string(), id.to_owned(), expires_at.to_string()];
        let reply = self.run(&self.scripts.spend_proof, &args).await?;
        check_status(&reply)?;
        Ok(field::<i64>(&reply, 1)? == 1)
    }

    fn commands_sent(&self) -> u64 {
        self.commands.load(Relaxed)
    }

    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
