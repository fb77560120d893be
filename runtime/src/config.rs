//! Command-line flags and `USHER_*` environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::PriorityClaim;
use crate::broker::{AddressPolicy, EntryCookie, ReturnOrigins, TrustedProxies, WaitingPage};
use crate::clock::parse_rfc3339;
use crate::pow::{DEFAULT_DIFFICULTY, MAX_DIFFICULTY};
use crate::queue::{Queueing, RoomConfig};
use crate::rules::RulesFrom;

#[derive(Parser, Debug)]
#[command(
    name = "usher",
    version,
    about = "Virtual waiting room: broker, dispatcher and demo"
)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `info` or `usher_runtime=debug`.
    #[arg(long, env = "USHER_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "USHER_LOG_JSON", global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP/SSE API of one room.
    Broker(BrokerArgs),
    /// Admit users from the front of one room's line.
    Dispatcher(DispatcherArgs),
    /// Everything in one process on an in-memory store, with a waiting page.
    Demo(DemoArgs),
    /// Print a new Ed25519 entry-token key (PKCS#8 PEM).
    Keygen,
}

/// The room's rules, written to the store at start (unless they come from
/// the store).
#[derive(Args, Debug, Clone)]
pub struct RoomArgs {
    /// Where the room's rules come from: `flags` (these flags, written to
    /// the store) or `store` (the operator writes them there; the rule
    /// flags below are then ignored, and the process is ready once the
    /// rules are there).
    #[arg(long, env = "USHER_RULES_FROM", value_enum, default_value = "flags")]
    pub rules_from: RulesFrom,
    /// Most users admitted (active) at once.
    #[arg(long, env = "USHER_CAPACITY", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub capacity: u64,
    /// Most new admissions per minute; unset = bounded by capacity only.
    #[arg(long, env = "USHER_ADMISSION_RATE", value_parser = clap::value_parser!(u64).range(1..))]
    pub admission_rate: Option<u64>,
    /// How long an admitted user keeps the slot (e.g. 15m, 90s).
    #[arg(long, env = "USHER_SESSION_DURATION", default_value = "15m", value_parser = parse_session_duration)]
    pub session_duration: Duration,
    /// FIFO, Random, Passthrough or Reject.
    #[arg(long, env = "USHER_QUEUEING", default_value = "FIFO")]
    pub queueing: Queueing,
    /// Before this RFC 3339 instant users join a pre-queue.
    #[arg(long, env = "USHER_OPENS_AT", value_parser = parse_rfc3339)]
    pub opens_at: Option<i64>,
    /// From this RFC 3339 instant joins are refused.
    #[arg(long, env = "USHER_CLOSES_AT", value_parser = parse_rfc3339)]
    pub closes_at: Option<i64>,
    /// Stop admissions, keep the line.
    #[arg(long, env = "USHER_PAUSED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub paused: bool,
    /// Drop waiting users whose client is gone (no stream, no poll) this long.
    #[arg(long, env = "USHER_ABANDON_TIMEOUT", default_value = "2m", value_parser = parse_abandon_timeout)]
    pub abandon_timeout: Duration,
    /// An admitted user who has not reached the shop's gate this long after
    /// admission loses the slot (1s to 1h); unset = no claim window.
    #[arg(long, env = "USHER_CLAIM_WINDOW", value_parser = parse_claim_window)]
    pub claim_window: Option<Duration>,
    /// The longest the shop's checkout may extend a session to, from its
    /// admission (at least the session duration); unset = no extension.
    #[arg(long, env = "USHER_MAX_SESSION_DURATION", value_parser = parse_session_duration)]
    pub max_session_duration: Option<Duration>,
    /// Shown to everyone waiting (up to 500 characters); empty = none.
    #[arg(long, env = "USHER_MESSAGE", default_value = "", hide_default_value = true, value_parser = parse_message)]
    pub message: String,
    /// Most new places one visitor address (an IPv4 address, an IPv6 /64)
    /// may take per minute, across all brokers: a burst of that many, then
    /// evenly spread; 0 = unlimited.
    #[arg(long, env = "USHER_JOINS_PER_ADDRESS", default_value_t = DEFAULT_JOINS_PER_ADDRESS)]
    pub joins_per_address: u64,
    /// Most live (waiting or admitted) places one visitor address may hold
    /// at once, across all brokers; 0 = unlimited. Raise it for visitors
    /// behind a shared address (a campus, a carrier's NAT).
    #[arg(long, env = "USHER_SESSIONS_PER_ADDRESS", default_value_t = DEFAULT_SESSIONS_PER_ADDRESS)]
    pub sessions_per_address: u64,
    /// Percent of admissions that go to the priority lane while both lanes
    /// wait; 100 = the priority lane is admitted strictly first.
    #[arg(long, env = "USHER_PRIORITY_SHARE", default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub priority_share: u8,
    /// Orders configurations: a process never replaces the room's rules with
    /// ones of a lower revision (an old pod restarting during a rollout).
    #[arg(long, env = "USHER_CONFIG_REVISION", default_value_t = 0)]
    pub config_revision: u64,
    /// Leading zero bits of the proof of work a newcomer's browser solves
    /// before joining (0-28; 0 = none; each bit doubles the work). Brokers
    /// that name users by the platform's JWT never ask for one.
    #[arg(long, env = "USHER_PROOF_OF_WORK", default_value_t = DEFAULT_DIFFICULTY, value_parser = proof_of_work_bits())]
    pub proof_of_work: u8,
}

impl RoomArgs {
    pub fn room_config(&self) -> Result<RoomConfig, String> {
        if let (Some(open), Some(close)) = (self.opens_at, self.closes_at)
            && close <= open
        {
            return Err("closesAt must be after opensAt".into());
        }
        if self
            .max_session_duration
            .is_some_and(|longest| longest < self.session_duration)
        {
            return Err("maxSessionDuration must be at least sessionDuration".into());
        }
        if self.proof_of_work > MAX_DIFFICULTY {
            return Err(format!(
                "proofOfWork.difficulty must be at most {MAX_DIFFICULTY} bits"
            ));
        }
        Ok(RoomConfig {
            capacity: self.capacity,
            admission_rate: self.admission_rate,
            session_duration_ms: self.session_duration.as_millis() as i64,
            queueing: self.queueing,
            opens_at: self.opens_at,
            closes_at: self.closes_at,
            paused: self.paused,
            abandon_timeout_ms: self.abandon_timeout.as_millis() as i64,
            claim_window_ms: self.claim_window.map_or(0, |w| w.as_millis() as i64),
            max_session_duration_ms: self
                .max_session_duration
                .map_or(0, |d| d.as_millis() as i64),
            message: self.message.clone(),
            joins_per_address_per_minute: self.joins_per_address,
            sessions_per_address: self.sessions_per_address,
            priority_share: self.priority_share,
            revision: self.config_revision,
            proof_of_work_bits: self.proof_of_work,
        })
    }
}

/// Where the room lives.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The room (event) id: 1-63 lowercase letters, digits and dashes.
    #[arg(long, env = "USHER_ROOM")]
    pub room: String,
    /// Redis URL: `redis://[user:password@]host:port/[db]`.
    #[arg(
        long,
        env = "USHER_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis_url: String,
}

/// How the broker tells users apart.
#[derive(Args, Debug, Clone)]
pub struct UserAuthArgs {
    /// `anonymous` (a signed cookie) or `jwt` (the platform's Bearer token).
    #[arg(long, env = "USHER_USER_AUTH", default_value = "anonymous", value_parser = ["anonymous", "jwt"])]
    pub user_auth: String,
    /// Algorithm of platform JWTs: HS256, RS256 or ES256.
    #[arg(long, env = "USHER_USER_JWT_ALG", default_value = "HS256", value_parser = ["HS256", "RS256", "ES256"])]
    pub user_jwt_alg: String,
    /// HS256: the shared secret; RS256/ES256: path to the PEM public key.
    #[arg(
        long,
        env = "USHER_USER_JWT_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub user_jwt_key: String,
    /// Required `iss` of platform JWTs, if set.
    #[arg(long, env = "USHER_USER_JWT_ISSUER")]
    pub user_jwt_issuer: Option<String>,
    /// Required `aud` of platform JWTs, if set.
    #[arg(long, env = "USHER_USER_JWT_AUDIENCE")]
    pub user_jwt_audience: Option<String>,
    /// Platform users whose token carries this claim join the priority
    /// lane: `name=value1,value2` (a string equal to one, or an array
    /// holding one) or `name` (any true or non-empty value).
    #[arg(long, env = "USHER_PRIORITY_CLAIM", value_parser = PriorityClaim::parse)]
    pub priority_claim: Option<PriorityClaim>,
}

/// An optional human check (a CAPTCHA such as Turnstile, hCaptcha or
/// reCAPTCHA) that newcomers pass before joining.
#[derive(Args, Debug, Clone)]
pub struct HumanCheckArgs {
    /// The verifier's `siteverify` URL (such as
    /// `https://challenges.cloudflare.com/turnstile/v0/siteverify`); unset =
    /// no human check.
    #[arg(long, env = "USHER_HUMAN_CHECK_URL", requires = "human_check_secret", value_parser = parse_http_url)]
    pub human_check_url: Option<url::Url>,
    /// The secret the verifier knows this site by.
    #[arg(long, env = "USHER_HUMAN_CHECK_SECRET", hide_env_values = true)]
    pub human_check_secret: Option<String>,
}

/// Tunables of the broker's streams.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// How often positions are broadcast.
    #[arg(long, env = "USHER_POSITION_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub position_interval: Duration,
    /// How often idle streams get a keep-alive comment.
    #[arg(long, env = "USHER_KEEPALIVE_INTERVAL", default_value = "15s", value_parser = parse_interval)]
    pub keepalive_interval: Duration,
    /// `iss` claim of entry tokens.
    #[arg(long, env = "USHER_TOKEN_ISSUER", default_value = "usher")]
    pub token_issuer: String,
}

/// The round trip back to the shop: where admitted visitors may return,
/// and the entry cookie they carry there.
#[derive(Args, Debug, Clone)]
pub struct ReturnArgs {
    /// Origins (comma-separated, such as `https://shop.example`) an admitted
    /// visitor may be sent back to; paths on the waiting room's own host are
    /// always allowed.
    #[arg(long, env = "USHER_RETURN_ORIGINS", default_value = "", hide_default_value = true, value_parser = ReturnOrigins::parse)]
    pub return_origins: ReturnOrigins,
    /// `Domain` of the entry cookie (`shop.example`), when the waiting room
    /// and the shop are hosts under one parent domain; empty = the host
    /// that served it.
    #[arg(long, env = "USHER_COOKIE_DOMAIN", default_value = "", hide_default_value = true, value_parser = EntryCookie::parse)]
    pub cookie_domain: EntryCookie,
    /// Where the gate's redirect form (`/gate/redirect`, for Traefik and
    /// Envoy) sends a refused visitor: a path on the shop's host, or the
    /// waiting room's own URL (`https://queue.shop.example/`).
    #[arg(long, env = "USHER_WAITING_PAGE", default_value = "/queue/", value_parser = WaitingPage::parse)]
    pub waiting_page: WaitingPage,
    /// `on`: entry tokens are bound to the browser that waited (a second
    /// cookie, `usher_bind`, set with the entry cookie), and the gate
    /// refuses a bound token without it. `off` when the shop's proxy asks
    /// the gate with tokens that come without that browser's cookies.
    #[arg(long, env = "USHER_TOKEN_BINDING", default_value = "on", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub token_binding: bool,
}

/// How the broker finds the visitor's address behind proxies.
#[derive(Args, Debug, Clone)]
pub struct AddressArgs {
    /// Proxies (comma-separated CIDRs, such as `10.0.0.0/8`) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the visitor; empty =
    /// none, the TCP peer is the visitor.
    #[arg(long, env = "USHER_TRUSTED_PROXIES", default_value = "", hide_default_value = true, value_parser = TrustedProxies::parse)]
    pub trusted_proxies: TrustedProxies,
    /// IPv6 visitors are counted per network of this prefix length.
    #[arg(long, env = "USHER_IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix: u8,
}

impl AddressArgs {
    pub fn policy(&self) -> AddressPolicy {
        AddressPolicy {
            trusted_proxies: self.trusted_proxies.clone(),
            ipv6_prefix: self.ipv6_prefix,
        }
    }
}

#[derive(Args, Debug)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub room: RoomArgs,
    #[command(flatten)]
    pub users: UserAuthArgs,
    #[command(flatten)]
    pub streams: StreamArgs,
    #[command(flatten)]
    pub round_trip: ReturnArgs,
    #[command(flatten)]
    pub addresses: AddressArgs,
    #[command(flatten)]
    pub human_check: HumanCheckArgs,
    /// Address to serve visitors (HTTP/SSE) and the probes on.
    #[arg(long, env = "USHER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address to serve /metrics on, apart from the visitors.
    #[arg(long, env = "USHER_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// PKCS#8 PEM private key (Ed25519 or P-256) that signs entry tokens.
    #[arg(long, env = "USHER_TOKEN_KEY")]
    pub token_key: String,
    /// Earlier signing keys (comma-separated PEM paths) whose public keys
    /// stay in the JWKS during a key rotation.
    #[arg(long, env = "USHER_TOKEN_RETIRED_KEYS", value_delimiter = ',')]
    pub token_retired_keys: Vec<String>,
    /// Names this broker in load reports; defaults to the host (pod) name.
    #[arg(long, env = "USHER_BROKER_ID")]
    pub broker_id: Option<String>,
    /// File holding the room's checkout key (at least 32 printable bytes),
    /// which the shop sends to complete or revoke sessions; unset turns the
    /// checkout API off.
    #[arg(long, env = "USHER_CHECKOUT_KEY")]
    pub checkout_key: Option<String>,
    /// File of invite codes for the priority lane, one per line, each good
    /// for one place; loaded at start, then read again when it changes
    /// (codes redeemed before stay spent).
    #[arg(long, env = "USHER_INVITE_CODES")]
    pub invite_codes: Option<String>,
}

#[derive(Args, Debug)]
pub struct DispatcherArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub room: RoomArgs,
    /// How often the dispatcher admits (it also admits at once when a slot frees).
    #[arg(long, env = "USHER_DISPATCH_TICK", default_value = "250ms", value_parser = parse_interval)]
    pub tick: Duration,
    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(long, env = "USHER_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address to serve the demo on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Also serve /metrics on this address (by default the demo serves none).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Simulated visitors to add, so the line moves for a newcomer.
    #[arg(long, default_value_t = 0)]
    pub simulate: u64,
    /// Most visitors admitted at once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub capacity: u64,
    /// How long an admitted visitor keeps the slot.
    #[arg(long, default_value = "2m", value_parser = parse_session_duration)]
    pub session_duration: Duration,
    /// How often the dispatcher admits.
    #[arg(long, default_value = "250ms", value_parser = parse_interval)]
    pub tick: Duration,
    /// Leading zero bits of the proof of work the page solves before joining.
    #[arg(long, default_value_t = DEFAULT_DIFFICULTY, value_parser = proof_of_work_bits())]
    pub proof_of_work: u8,
}

/// A proof-of-work difficulty, 0 to [`MAX_DIFFICULTY`] bits.
fn proof_of_work_bits() -> clap::builder::RangedI64ValueParser<u8> {
    clap::value_parser!(u8).range(0..=i64::from(MAX_DIFFICULTY))
}

/// An `http(s)://` URL.
pub fn parse_http_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} is not an http(s) URL"));
    }
    Ok(url)
}

/// Longest an admitted visitor keeps the slot (and an entry token lives).
pub const MAX_SESSION_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest a waiting visitor may go unseen before being dropped.
pub const MAX_ABANDON_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Longest period of a process's timers: broadcasts, keep-alives, ticks.
pub const MAX_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The engine counts time in milliseconds: nothing shorter means anything.
const MIN_DURATION: Duration = Duration::from_millis(1);
/// Brokers mark their visitors present at most once a second: a shorter
/// abandon timeout would drop visitors who are still there.
pub const MIN_ABANDON_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest claim window: the round trip from the waiting page to the
/// shop's gate takes a moment, and the dispatcher checks on its tick.
pub const MIN_CLAIM_WINDOW: Duration = Duration::from_secs(1);
/// Longest claim window: past it, a no-show holds the slot too long to matter.
pub const MAX_CLAIM_WINDOW: Duration = Duration::from_secs(3600);

/// New places one address may take per minute, unless configured.
pub const DEFAULT_JOINS_PER_ADDRESS: u64 = 30;
/// Live places one address may hold, unless configured.
pub const DEFAULT_SESSIONS_PER_ADDRESS: u64 = 20;

/// The longest message to everyone waiting, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// A message to everyone waiting: at most [`MAX_MESSAGE_CHARS`] characters.
pub fn parse_message(text: &str) -> Result<String, String> {
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(format!(
            "the message has {chars} characters; at most {MAX_MESSAGE_CHARS}"
        ));
    }
    Ok(text.to_owned())
}

/// A session duration, 1ms to [`MAX_SESSION_DURATION`].
pub fn parse_session_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text, MAX_SESSION_DURATION)
}

/// An abandon timeout, [`MIN_ABANDON_TIMEOUT`] to [`MAX_ABANDON_TIMEOUT`].
pub fn parse_abandon_timeout(text: &str) -> Result<Duration, String> {
    parse_duration_within(text, MIN_ABANDON_TIMEOUT, MAX_ABANDON_TIMEOUT)
}

/// A claim window, [`MIN_CLAIM_WINDOW`] to [`MAX_CLAIM_WINDOW`].
pub fn parse_claim_window(text: &str) -> Result<Duration, String> {
    parse_duration_within(text, MIN_CLAIM_WINDOW, MAX_CLAIM_WINDOW)
}

/// A timer period, 1ms to [`MAX_INTERVAL`].
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    parse_duration(text, MAX_INTERVAL)
}

/// A duration such as `15m`, `90s` or `250ms`, from 1ms to `longest`.
/// The bounds keep every instant the processes compute (an admission plus
/// the session, say) within what they can count and write.
fn parse_duration(text: &str, longest: Duration) -> Result<Duration, String> {
    parse_duration_within(text, MIN_DURATION, longest)
}

fn parse_duration_within(
    text: &str,
    shortest: Duration,
    longest: Duration,
) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 15m or 90s: {e}"))?;
    if duration < shortest || duration > longest {
        return Err(format!(
            "{text:?} is out of bounds: at least {} and at most {}",
            humantime::format_duration(shortest),
            humantime::format_duration(longest)
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn flags_build_a_room_config() {
        let cli = Cli::try_parse_from([
            "usher",
            "dispatcher",
            "--room",
            "r",
            "--capacity",
            "7",
            "--queueing",
            "random",
            "--opens-at",
            "2026-12-01T10:00:00Z",
            "--closes-at",
            "2026-12-01T18:00:00Z",
            "--paused",
        ])
        .unwrap();
        let Command::Dispatcher(args) = cli.command else {
            panic!("dispatcher expected")
        };
        let config = args.room.room_config().unwrap();
        assert_eq!(config.capacity, 7);
        assert_eq!(config.queueing, Queueing::Random);
        assert!(config.paused);
        assert_eq!(config.session_duration_ms, 900_000);
        assert_eq!(config.proof_of_work_bits, DEFAULT_DIFFICULTY);
        assert_eq!(
            config.closes_at.unwrap() - config.opens_at.unwrap(),
            8 * 3_600_000
        );
    }

    #[test]
    fn token_binding_is_on_unless_turned_off() {
        let binding = |extra: &[&str]| {
            let args = ["usher", "broker", "--room", "r", "--token-key", "k"];
            let cli = Cli::try_parse_from(args.iter().chain(extra)).map_err(|e| e.to_string())?;
            let Command::Broker(args) = cli.command else {
                panic!("broker expected")
            };
            Ok::<_, String>(args.round_trip.token_binding)
        };
        assert_eq!(binding(&[]), Ok(true));
        assert_eq!(binding(&["--token-binding", "off"]), Ok(false));
        assert_eq!(binding(&["--token-binding", "on"]), Ok(true));
        assert_eq!(binding(&["--token-binding", "false"]), Ok(false));
        assert!(binding(&["--token-binding", "maybe"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for args in [
            vec!["usher", "dispatcher", "--room", "r", "--capacity", "0"],
            vec!["usher", "dispatcher", "--room", "r", "--queueing", "lifo"],
            vec![
                "usher",
                "dispatcher",
                "--room",
                "r",
                "--session-duration",
                "soon",
            ],
            vec!["usher", "dispatcher", "--room", "r", "--tick", "0s"],
            vec![
                "usher",
                "dispatcher",
                "--room",
                "r",
                "--opens-at",
                "tomorrow",
            ],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "usher",
            "dispatcher",
            "--room",
            "r",
            "--opens-at",
            "2026-12-01T10:00:00Z",
            "--closes-at",
            "2026-12-01T09:00:00Z",
        ])
        .unwrap();
        let Command::Dispatcher(args) = cli.command else {
            panic!("dispatcher expected")
        };
        assert!(args.room.room_config().is_err());
    }

    #[test]
    fn a_human_check_needs_a_url_and_its_secret() {
        let broker = |extra: &[&str]| {
            let mut args = vec!["usher", "broker", "--room", "r", "--token-key", "k"];
            args.extend(extra);
            Cli::try_parse_from(&args).map(|cli| match cli.command {
                Command::Broker(args) => args.human_check,
                _ => panic!("broker expected"),
            })
        };
        let url = "https://verifier.example/siteverify";
        let check = broker(&["--human-check-url", url, "--human-check-secret", "s"]).unwrap();
        assert_eq!(check.human_check_url.unwrap().as_str(), url);
        assert!(broker(&["--human-check-url", url]).is_err());
        assert!(broker(&["--human-check-url", "ftp://x/", "--human-check-secret", "s"]).is_err());
        assert!(broker(&[]).unwrap().human_check_url.is_none());
    }

    /// Parses `usher <role> <flag> <value>` (with what the role requires),
    /// or says why not.
    fn parse(role: &str, flag: &str, value: &str) -> Result<Cli, String> {
        let mut args = vec!["usher", role];
        match role {
            "broker" => args.extend(["--room", "r", "--token-key", "k"]),
            "dispatcher" => args.extend(["--room", "r"]),
            _ => {}
        }
        args.extend([flag, value]);
        Cli::try_parse_from(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_have_sane_upper_bounds() {
        for (role, flag, longest, too_long) in [
            ("broker", "--session-duration", "7d", "169h"),
            ("dispatcher", "--session-duration", "168h", "8d"),
            ("demo", "--session-duration", "7d", "10000y"),
            ("broker", "--abandon-timeout", "24h", "25h"),
            ("dispatcher", "--claim-window", "1h", "61m"),
            ("broker", "--position-interval", "5m", "301s"),
            ("broker", "--keepalive-interval", "5m", "1h"),
            ("dispatcher", "--tick", "5m", "6m"),
            ("demo", "--tick", "5m", "1d"),
        ] {
            assert!(
                parse(role, flag, longest).is_ok(),
                "{role} {flag} {longest}"
            );
            let refused = parse(role, flag, too_long).unwrap_err();
            assert!(
                refused.contains("at most"),
                "{role} {flag} {too_long}: {refused}"
            );
        }
        // Below the millisecond the engine cannot count.
        assert!(parse("dispatcher", "--tick", "500us").is_err());
        assert!(parse("broker", "--session-duration", "1ms").is_ok());
        // Presence is marked at most once a second.
        assert!(parse("dispatcher", "--abandon-timeout", "4s").is_err());
        assert!(parse("dispatcher", "--abandon-timeout", "5s").is_ok());
        // A claim window shorter than a second is refused.
        assert!(parse("broker", "--claim-window", "999ms").is_err());
        assert!(parse("broker", "--claim-window", "1s").is_ok());
        // Proof of work: 0 (none) to 28 bits.
        assert!(parse("dispatcher", "--proof-of-work", "0").is_ok());
        assert!(parse("broker", "--proof-of-work", "28").is_ok());
        assert!(parse("broker", "--proof-of-work", "29").is_err());
        assert!(parse("demo", "--proof-of-work", "29").is_err());
        // Beyond what the parser can count at all.
        assert!(parse("broker", "--session-duration", "99999999999999999999h").is_err());
    }
}
