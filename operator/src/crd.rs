//! The `WaitingRoom` custom resource: one per sale event.
//!
//! Invalid specs are refused by the API server itself: ranges and patterns
//! come from the schema, cross-field rules are CEL (`x-kubernetes-validations`).

use k8s_openapi::api::core::v1::{ResourceRequirements, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A virtual waiting room for one sale event.
// `printcolumn(...)` repeats by design: one per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "usher.dev",
    version = "v1alpha1",
    kind = "WaitingRoom",
    plural = "waitingrooms",
    shortname = "wr",
    namespaced,
    status = "WaitingRoomStatus",
    printcolumn(name = "Event", type_ = "string", json_path = ".status.eventId"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Waiting", type_ = "integer", json_path = ".status.waiting"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.active"),
    printcolumn(name = "Capacity", type_ = "integer", json_path = ".spec.capacity"),
    printcolumn(
        name = "Brokers",
        type_ = "string",
        json_path = ".status.brokers.summary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.opensAt) || !has(self.closesAt) || timestamp(self.closesAt) > timestamp(self.opensAt)"
).message("closesAt must be after opensAt"))]
#[x_kube(validation = Rule::new(
    "!has(self.gate) || !has(self.gate.maxSessionDuration) || duration(self.gate.maxSessionDuration) >= duration(self.sessionDuration)"
).message("gate.maxSessionDuration must be at least sessionDuration"))]
#[serde(rename_all = "camelCase")]
pub struct WaitingRoomSpec {
    /// The event (room) id visitors join; defaults to the resource's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub event_id: Option<String>,
    /// Most visitors admitted (active) at once.
    #[schemars(range(min = 1))]
    pub capacity: i32,
    /// Most new admissions per minute; absent = bounded by capacity only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub admission_rate: Option<i32>,
    /// How long an admitted visitor keeps the slot, e.g. `15m`, `90s`,
    /// `1h30m`: from 1ms to 168h (7 days).
    #[serde(default = "default_session_duration")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new(
        "duration(self) >= duration('1ms') && duration(self) <= duration('168h')"
    ).message("sessionDuration must be from 1ms to 168h (7 days)"))]
    pub session_duration: String,
    /// How joins are ordered and admitted.
    #[serde(default)]
    pub queueing: Queueing,
    /// Before this instant (RFC 3339, UTC) visitors join a pre-queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"), pattern(UTC_INSTANT))]
    pub opens_at: Option<String>,
    /// From this instant (RFC 3339, UTC) joins are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"), pattern(UTC_INSTANT))]
    pub closes_at: Option<String>,
    /// Stops admissions and keeps the line.
    #[serde(default)]
    pub paused: bool,
    /// Where the room's state lives.
    pub redis: RedisSpec,
    #[serde(default)]
    pub broker: BrokerSpec,
    #[serde(default)]
    pub dispatcher: DispatcherSpec,
    /// The gate at the shop's door, and the way back to the shop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
    /// A message shown to everyone waiting (up to 500 characters). Changing
    /// it sends it at once to every open stream (SSE `message`); visitors
    /// who come later see it too. Absent or empty: no message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub message: Option<String>,
    /// Admit the next `count` visitors now, past the admission rate and a
    /// pause (never past capacity). Done once per `requestId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_next: Option<AdmitNext>,
    /// Defences against scripted joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bots: Option<BotsSpec>,
    /// A priority lane beside the general line: for holders of invite codes
    /// (a presale) and for platform users with a given claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes: Option<LanesSpec>,
}

/// Who waits in the priority lane, and how it is admitted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LanesSpec {
    /// Percent of admissions that go to the priority lane while both lanes
    /// wait (either lane takes what the other cannot use). Absent or 100:
    /// the priority lane is admitted strictly first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub priority_share: Option<i32>,
    /// A Secret key holding invite codes, one per line: each is good for
    /// one place in the priority lane. Codes are kept hashed in Redis and
    /// stay spent when the list is loaded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_codes: Option<SecretKeySelector>,
    /// Platform users (`users: jwt`) whose token carries this claim with
    /// one of these values join the priority lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_claim: Option<ClaimMatch>,
}

/// A claim of the platform's JWT and the values that qualify.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatch {
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9_.:-]+$"))]
    pub name: String,
    /// Qualifying values: a string claim equal to one, or an array claim
    /// containing one. Empty: any true or non-empty value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 128), pattern(r"^[^,]+$"))
    )]
    pub values: Vec<String>,
}

/// Defences against scripted joins.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotsSpec {
    /// Limits on the places one visitor address may take, across all
    /// brokers. Absent: the defaults (30 new places a minute, 20 live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_address: Option<PerAddressSpec>,
    /// Proxies (CIDRs such as `10.0.0.0/8`) whose `Forwarded` /
    /// `X-Forwarded-For` headers name the visitor: the ingress controller's
    /// pods. Absent: the TCP peer is the visitor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 43), pattern(CIDR)))]
    pub trusted_proxies: Vec<String>,
    /// IPv6 visitors are counted per network of this prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 128))]
    pub ipv6_prefix: Option<i32>,
    /// The proof of work a newcomer's browser solves before joining (the
    /// waiting page does it by itself). Asked of anonymous visitors only:
    /// with platform JWTs the platform names every visitor. Absent: the
    /// default difficulty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_of_work: Option<ProofOfWork>,
    /// A human check (Turnstile, hCaptcha, reCAPTCHA or any `siteverify`
    /// verifier) a newcomer passes before joining: the join carries the
    /// widget's token as `humanToken`, which the brokers verify. Absent:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_check: Option<HumanCheck>,
}

/// How hard the proof of work is. A rule: a change reaches the brokers at
/// once, with no pod rolled (raise it during an attack).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProofOfWork {
    /// Leading zero bits the solution's SHA-256 must have: 0 (none) to 28.
    /// Each bit doubles the work; the default takes a browser half a
    /// second to a second.
    #[serde(default = "default_difficulty")]
    #[schemars(range(min = 0, max = 28))]
    pub difficulty: i32,
}

fn default_difficulty() -> i32 {
    i32::from(usher_runtime::pow::DEFAULT_DIFFICULTY)
}

/// Where the brokers verify human-check tokens.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HumanCheck {
    /// The verifier's `siteverify` URL, e.g.
    /// `https://challenges.cloudflare.com/turnstile/v0/siteverify`.
    #[schemars(length(max = 2048), pattern(VERIFIER_URL))]
    pub url: String,
    /// The Secret key holding the site's secret for the verifier.
    pub secret_ref: SecretKeySelector,
}

/// Per-address limits; 0 turns a limit off.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerAddressSpec {
    /// New places one address may take per minute: a burst of that many,
    /// then evenly spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub joins_per_minute: Option<i32>,
    /// Live (waiting or admitted) places one address may hold at once.
    /// Raise it for visitors behind a shared address (a campus, a
    /// carrier's NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub live_sessions: Option<i32>,
}

/// An IPv4 or IPv6 address with an optional prefix length, as the runtime
/// reads `USHER_TRUSTED_PROXIES` (which checks the numbers themselves).
const CIDR: &str =
    r"^([0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*(/[0-9]{1,3})?)$";

/// A one-time request to admit the front of the line now.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmitNext {
    /// How many visitors, from the front of the line: 1 to 100,000.
    #[schemars(range(min = 1, max = 100_000))]
    pub count: i32,
    /// Names this request; a new id makes a new request (`kubectl usher
    /// admit` uses the time). The operator acts once per id.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._:-]+$"))]
    pub request_id: String,
}

/// How admitted visitors return to the shop.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateSpec {
    /// Origins (`https://shop.example`) the waiting page may send visitors
    /// back to, besides paths on its own host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(pattern(ORIGIN)))]
    pub return_origins: Vec<String>,
    /// A parent domain (`shop.example`) for the entry cookie, when the
    /// waiting room and the shop are on different hosts under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
    )]
    pub cookie_domain: Option<String>,
    /// How long an admitted visitor has to reach the shop's gate before the
    /// slot goes to the next in line, e.g. `2m`: from 1s to 1h. Absent = no
    /// claim window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new(
        "duration(self) >= duration('1s') && duration(self) <= duration('1h')"
    ).message("claimWindow must be from 1s to 1h"))]
    pub claim_window: Option<String>,
    /// The longest the shop's checkout may extend a session to, counted
    /// from its admission (`POST .../checkout/extend`), e.g. `45m`: at
    /// least `sessionDuration`, at most 168h. Absent = no extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new(
        "duration(self) <= duration('168h')"
    ).message("maxSessionDuration must be at most 168h (7 days)"))]
    pub max_session_duration: Option<String>,
    /// Where the gate's redirect form (`status.gateUrl` + `/redirect`, for
    /// Traefik and Envoy) sends refused visitors: a path on the shop's host
    /// (`/queue/`, the default) or the waiting room's URL
    /// (`https://queue.shop.example/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(WAITING_PAGE))]
    pub waiting_page: Option<String>,
    /// Binds each entry token to the browser that waited for it (a cookie
    /// set with the entry cookie): a token copied elsewhere is refused at
    /// the gate. Absent = true. Set false when the shop's proxy asks the
    /// gate with tokens that come without that browser's cookies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_binding: Option<bool>,
}

/// A waiting page as the runtime reads `USHER_WAITING_PAGE`: a path with one
/// leading `/`, or an http(s) URL without user info; no query, no fragment.
const WAITING_PAGE: &str = r"^(/([^/?#\\\s][^?#\\\s]*)?|https?://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[^?#\\\s]*)?)$";

/// An origin as the runtime reads `USHER_RETURN_ORIGINS`: `http(s)://host`,
/// with a port from 1 to 65535 at most, nothing else.
const ORIGIN: &str = r"^https?://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/?$";

/// A verifier's URL as the runtime reads `USHER_HUMAN_CHECK_URL`: http(s),
/// a host, a port from 1 to 65535 at most, then any path and query.
const VERIFIER_URL: &str = r"^https?://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[^\s#]*)?$";

/// An RFC 3339 instant as the runtime reads it: UTC (`Z` or `+00:00`), in
/// the years 1970 to 9999.
const UTC_INSTANT: &str = r"^(19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|\+00:00)$";

fn default_session_duration() -> String {
    "15m".into()
}

/// How joins are ordered and admitted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Queueing {
    /// First come, first served.
    #[default]
    #[serde(rename = "FIFO")]
    Fifo,
    /// The pre-queue is shuffled once at opening; FIFO after.
    Random,
    /// No line: everyone is admitted at once.
    Passthrough,
    /// New joins are refused; the line drains.
    Reject,
}

/// The room's Redis: a URL, or a Secret key holding one.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url and secretRef"))]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `redis://host:port/` (no credentials: use secretRef for those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^redis://"))]
    pub url: Option<String>,
    /// A Secret key whose value is the Redis URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// What happens to the room's Redis keys when the WaitingRoom is deleted.
    #[serde(default)]
    pub on_delete: OnDelete,
}

/// What happens to the room's Redis keys when the WaitingRoom is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnDelete {
    /// Keep them (a room recreated with the same event id picks its line up again).
    #[default]
    Retain,
    /// Delete them.
    Delete,
}

/// The brokers: they hold the visitors' streams and scale with demand.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("!has(self.prewarm) || self.prewarm.replicas <= self.maxReplicas").message("prewarm.replicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Connected plus waiting visitors one broker is sized for.
    #[serde(default = "default_connections_per_replica")]
    #[schemars(range(min = 1))]
    pub connections_per_replica: i32,
    /// Container resources; sane defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// At least `replicas` brokers from `opensAt - before` on, whatever the
    /// load (never above maxReplicas), so the opening rush meets warm
    /// brokers. Needs `opensAt`: without it, this does nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prewarm: Option<Prewarm>,
}

/// Brokers started ahead of the opening.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prewarm {
    /// The fewest brokers from `opensAt - before` on: 1 to maxReplicas.
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// How long before `opensAt` the brokers are up, e.g. `30m`: from 1m
    /// to 24h.
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new(
        "duration(self) >= duration('1m') && duration(self) <= duration('24h')"
    ).message("prewarm.before must be from 1m to 24h"))]
    pub before: String,
}

impl Default for BrokerSpec {
    fn default() -> Self {
        BrokerSpec {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            connections_per_replica: default_connections_per_replica(),
            resources: None,
            prewarm: None,
        }
    }
}

fn default_min_replicas() -> i32 {
    2
}

fn default_max_replicas() -> i32 {
    20
}

fn default_connections_per_replica() -> i32 {
    20_000
}

/// The dispatchers: they admit visitors; any number may run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatcherSpec {
    #[serde(default = "default_dispatcher_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
}

impl Default for DispatcherSpec {
    fn default() -> Self {
        DispatcherSpec {
            replicas: default_dispatcher_replicas(),
        }
    }
}

fn default_dispatcher_replicas() -> i32 {
    1
}

/// Where a sale stands, as `kubectl get wr` shows it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingRoomStatus {
    /// The event id in use (spec.eventId or the resource's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Visitors in line, read from Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<i64>,
    /// Visitors admitted and active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<BrokerStatus>,
    /// The room's URL inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The forward-auth URL for the shop's ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Digest of the room's rules as last written to Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The revision those rules were written at (a higher one always wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<i64>,
    /// The last `spec.admitNext` request carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_next: Option<AdmitNextStatus>,
    /// A Random room's commitment to the seed of its shuffle, and the seed
    /// once the shuffle took place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<FairnessStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Being set up.
    Pending,
    /// Before opensAt: the pre-queue fills.
    Scheduled,
    Open,
    Paused,
    /// After closesAt.
    Closed,
    /// Something is wrong (see the conditions), e.g. Redis unreachable.
    Degraded,
}

/// What became of a `spec.admitNext` request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmitNextStatus {
    pub request_id: String,
    /// Visitors admitted for it (fewer than asked when capacity was short).
    pub admitted: i64,
}

/// The shuffle of a Random room's pre-queue, published: SHA-256 (hex) of
/// `usher-shuffle-v1:{seed}:{salt}` before the opening, the seed and the
/// salt after it; the join list is at the room's
/// `/v1/rooms/{room}/fairness/joins`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FairnessStatus {
    pub commitment: String,
    /// The seed, in decimal, once the pre-queue was shuffled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// The salt (32 hex digits), once the pre-queue was shuffled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub desired: i32,
    pub ready: i32,
    /// `ready/desired`, for `kubectl get`.
    pub summary: String,
}

impl WaitingRoom {
    /// The event id in use: `spec.eventId`, else the resource's name.
    pub fn event_id(&self) -> String {
        self.spec
            .event_id
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// The CRD as YAML, as `usher-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&WaitingRoom::crd())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_committed_crds_match_the_rust_types() {
        let generated = crd_yaml().unwrap();
        for (path, committed) in [
            (
                "crds/waitingroom.yaml",
                include_str!("../../crds/waitingroom.yaml"),
            ),
            (
                "charts/usher/crds/waitingroom.yaml",
                include_str!("../../charts/usher/crds/waitingroom.yaml"),
            ),
        ] {
            assert!(
                committed == generated,
                "{path} is stale: run `cargo run -p usher-operator -- crd > {path}`"
            );
        }
    }

    #[test]
    fn the_crd_carries_names_columns_and_rules() {
        let yaml = crd_yaml().unwrap();
        for needle in [
            "shortNames:\n    - wr",
            "name: WAITING".to_lowercase().as_str(),
            "x-kubernetes-validations",
            "closesAt must be after opensAt",
            "minReplicas must not exceed maxReplicas",
            "prewarm.replicas must not exceed maxReplicas",
            "prewarm.before must be from 1m to 24h",
            "set exactly one of url and secretRef",
            "status: {}",
        ] {
            assert!(
                yaml.contains(needle) || yaml.to_lowercase().contains(&needle.to_lowercase()),
                "missing {needle:?}"
            );
        }
    }

    #[test]
    fn the_schema_takes_only_origins_the_runtime_takes() {
        // What the schema takes must start a broker; the schema may be
        // stricter (`-shop.example` is refused here, not by the runtime).
        let pattern = regex::Regex::new(ORIGIN).unwrap();
        for (origin, accepted) in [
            ("https://shop.example", true),
            ("http://127.0.0.1:8080", true),
            ("https://m.shop-2.example:65535", true),
            ("https://shop.example:65536", false),
            ("https://shop.example:0", false),
            ("https://shop.example/", true),
            ("https://shop.example/path", false),
            ("https://user@shop.example", false),
            ("ftp://shop.example", false),
            ("https://-shop.example", false),
            ("https://", false),
        ] {
            assert_eq!(pattern.is_match(origin), accepted, "schema: {origin}");
            if accepted {
                assert!(
                    usher_runtime::broker::ReturnOrigins::parse(origin).is_ok(),
                    "runtime: {origin}"
                );
            }
        }
    }

    #[test]
    fn the_schema_takes_only_verifiers_the_runtime_takes() {
        let pattern = regex::Regex::new(VERIFIER_URL).unwrap();
        for (url, accepted) in [
            (
                "https://challenges.cloudflare.com/turnstile/v0/siteverify",
                true,
            ),
            ("https://hcaptcha.com/siteverify", true),
            ("http://127.0.0.1:8088/siteverify?site=shop", true),
            ("https://verifier.example", true),
            ("https://verifier.example:65536/siteverify", false),
            ("https://user@verifier.example/", false),
            ("ftp://verifier.example/", false),
            ("https:///siteverify", false),
            ("https://verifier.example/site verify", false),
        ] {
            assert_eq!(pattern.is_match(url), accepted, "schema: {url}");
            if accepted {
                assert!(
                    usher_runtime::config::parse_http_url(url).is_ok(),
                    "runtime: {url}"
                );
            }
        }
    }

    #[test]
    fn the_schema_refuses_the_instants_the_runtime_refuses() {
        let pattern = regex::Regex::new(UTC_INSTANT).unwrap();
        for (instant, accepted) in [
            ("2026-12-01T10:00:00Z", true),
            ("2026-12-01T10:00:00.250Z", true),
            ("2026-12-01T10:00:00+00:00", true),
            ("1970-01-01T00:00:00Z", true),
            ("9999-12-31T23:59:59Z", true),
            ("2026-12-01T10:00:00+02:00", false),
            ("2026-12-01T10:00:00-05:00", false),
            ("2026-12-01t10:00:00z", false),
            ("1969-12-31T23:59:59Z", false),
            ("0001-01-01T00:00:00Z", false),
            ("10000-01-01T00:00:00Z", false),
        ] {
            assert_eq!(pattern.is_match(instant), accepted, "schema: {instant}");
            assert_eq!(
                usher_runtime::clock::parse_rfc3339(instant).is_ok(),
                accepted,
                "runtime: {instant}"
            );
        }
    }

    #[test]
    fn the_schema_bounds_session_durations_as_the_runtime_does() {
        use usher_runtime::config::{MAX_SESSION_DURATION, parse_session_duration};
        let hours = MAX_SESSION_DURATION.as_secs() / 3600;
        assert_eq!(MAX_SESSION_DURATION.as_secs(), hours * 3600);
        let rule = format!("duration(self) <= duration('{hours}h')");
        assert!(crd_yaml().unwrap().contains(&rule), "{rule} missing");
        assert!(parse_session_duration(&format!("{hours}h")).is_ok());
        assert!(parse_session_duration(&format!("{hours}h1ms")).is_err());
        assert!(parse_session_duration("1ms").is_ok());
        assert!(parse_session_duration("0ms").is_err());
    }

    #[test]
    fn the_schema_bounds_claim_windows_as_the_runtime_does() {
        use usher_runtime::config::{MAX_CLAIM_WINDOW, MIN_CLAIM_WINDOW, parse_claim_window};
        let (shortest, longest) = (MIN_CLAIM_WINDOW.as_secs(), MAX_CLAIM_WINDOW.as_secs());
        assert_eq!(MIN_CLAIM_WINDOW.as_millis(), u128::from(shortest) * 1000);
        assert_eq!(longest % 3600, 0);
        let rule = format!(
            "duration(self) >= duration('{shortest}s') && duration(self) <= duration('{}h')",
            longest / 3600
        );
        assert!(crd_yaml().unwrap().contains(&rule), "{rule} missing");
        assert!(parse_claim_window(&format!("{shortest}s")).is_ok());
        assert!(parse_claim_window(&format!("{}ms", shortest * 1000 - 1)).is_err());
        assert!(parse_claim_window(&format!("{}h", longest / 3600)).is_ok());
        assert!(parse_claim_window(&format!("{}h1ms", longest / 3600)).is_err());
    }

    #[test]
    fn the_schema_bounds_the_proof_of_work_as_the_runtime_does() {
        use usher_runtime::pow::{DEFAULT_DIFFICULTY, MAX_DIFFICULTY};
        let schema = serde_json::to_value(schemars::schema_for!(ProofOfWork)).unwrap();
        let difficulty = &schema["properties"]["difficulty"];
        assert_eq!(difficulty["minimum"], 0);
        assert_eq!(difficulty["maximum"], MAX_DIFFICULTY);
        assert_eq!(difficulty["default"], DEFAULT_DIFFICULTY);
        let bots: BotsSpec =
            serde_json::from_value(serde_json::json!({"proofOfWork": {}})).unwrap();
        assert_eq!(
            bots.proof_of_work.map(|p| p.difficulty),
            Some(i32::from(DEFAULT_DIFFICULTY))
        );
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec: WaitingRoomSpec = serde_json::from_value(serde_json::json!({
            "capacity": 500,
            "redis": {"url": "redis://redis:6379/"}
        }))
        .unwrap();
        assert_eq!(spec.session_duration, "15m");
        assert_eq!(spec.queueing, Queueing::Fifo);
        assert_eq!(spec.redis.on_delete, OnDelete::Retain);
        assert_eq!(
            (spec.broker.min_replicas, spec.broker.max_replicas),
            (2, 20)
        );
        assert_eq!(spec.broker.connections_per_replica, 20_000);
        assert_eq!(spec.dispatcher.replicas, 1);
    }
}
