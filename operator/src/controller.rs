//! The reconciler: for each WaitingRoom, build the children (pure), apply
//! them with server-side apply, then read the room from Redis and write the
//! status when it changed. Runs again every few seconds for the status.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, warn};
use usher_runtime::clock::now_ms;
use usher_runtime::queue::{Fairness, RedisStore, RoomConfig, RoomCounts, Store as _};
use usher_runtime::tokens::EntryTokenSigner;

use crate::children::{Inputs, broker, dispatcher, secret};
use crate::crd::{AdmitNextStatus, OnDelete, Phase, WaitingRoom, WaitingRoomStatus};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::rules;
use crate::scaling::{self, ScaleHistory};
use crate::status::{self, Observed};

/// The field manager of every object the operator applies.
pub const MANAGER: &str = "usher-operator";
pub const FINALIZER: &str = "usher.dev/redis-keys";
/// Broker load reports older than this are ignored.
const REPORT_FRESHNESS_MS: i64 = 30_000;
/// Redis calls from a reconcile give up after this.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// Failed attempts to delete a room's Redis keys before the finalizer lets go.
const CLEANUP_ATTEMPTS: u32 = 5;

/// Settings of the operator process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The runtime image for broker and dispatcher pods.
    pub image: String,
    /// How often each room's status is refreshed from Redis.
    pub status_interval: Duration,
}

/// What a reconcile remembers of a room between runs.
#[derive(Default)]
struct Memory {
    scale: ScaleHistory,
    failures: u32,
    cleanup_attempts: u32,
    /// Per child: a digest of what was last applied, and the child's edit
    /// marker right after. A child is applied again only when either moved.
    applied: HashMap<String, (u64, String)>,
    /// The room's signing key as last seen, kept as the retired key if its
    /// Secret is deleted by hand (visitors' session tokens stay valid).
    last_key: Option<Vec<u8>>,
}

/// A child object kind the operator applies.
trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Changes when anyone edits the object's desired state.
    fn edit_marker(&self) -> String;
}

impl Child for Deployment {
    fn edit_marker(&self) -> String {
        format!("{:?}", self.metadata.generation)
    }
}

impl Child for PodDisruptionBudget {
    fn edit_marker(&self) -> String {
        format!("{:?}", self.metadata.generation)
    }
}

impl Child for Service {
    // Services have no generation; they have no status churn either.
    fn edit_marker(&self) -> String {
        self.metadata.resource_version.clone().unwrap_or_default()
    }
}

/// Local copies of the children, kept current by the controller's watches,
/// so the periodic status pass costs no API reads.
struct Caches {
    deployments: Store<Deployment>,
    services: Store<Service>,
    budgets: Store<PodDisruptionBudget>,
    secrets: Store<Secret>,
}

pub struct Context {
    client: Client,
    settings: Settings,
    caches: Caches,
    recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Per room (uid): the memory and the Redis connection, one per (URL,
    /// event id). Forgotten when the room goes.
    registry: Arc<Rooms>,
}

type Rooms = Registry<Memory, RedisStore>;

impl Context {
    fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        caches: Caches,
        registry: Arc<Rooms>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            caches,
            metrics,
            registry,
        })
    }

    fn memory<T>(&self, room: &WaitingRoom, f: impl FnOnce(&mut Memory) -> T) -> T {
        self.registry.memory(&room.uid().unwrap_or_default(), f)
    }

    async fn event(&self, room: &WaitingRoom, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &room.object_ref(&())).await {
            warn!(error = %e, reason, "cannot record an event");
        }
    }

    /// The room's Redis URL: from the spec, or from the referenced Secret.
    async fn redis_url(&self, room: &WaitingRoom, namespace: &str) -> Result<String> {
        let redis = &room.spec.redis;
        if let Some(url) = &redis.url {
            return Ok(url.clone());
        }
        let reference = redis
            .secret_ref
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec("redis needs url or secretRef".into()))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = secrets.get(&reference.name).await?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "Secret {} has no key {}",
                    reference.name, reference.key
                ))
            })?;
        String::from_utf8(value.0.clone())
            .map_err(|_| Error::InvalidSpec("the Redis URL in the Secret is not UTF-8".into()))
    }

    /// The room's Redis connection, made on first use (with no lock held,
    /// so an unreachable Redis holds up only its own rooms).
    async fn store(&self, room: &WaitingRoom, url: &str) -> Result<Arc<RedisStore>> {
        let event_id = room.event_id();
        let target = (url.to_owned(), event_id.clone());
        let connect = async {
            tokio::time::timeout(REDIS_TIMEOUT, RedisStore::connect(url, &event_id))
                .await
                .map_err(|_| {
                    Error::Redis(format!("no answer from {url} within {REDIS_TIMEOUT:?}"))
                })?
                .map_err(|e| Error::Redis(e.to_string()))
        };
        self.registry
            .store(&room.uid().unwrap_or_default(), target, connect)
            .await
    }
}

/// Drops what the operator never reads from the objects it caches: the
/// managed fields and `kubectl apply`'s copy of the object, most of the
/// memory of a cached Deployment or WaitingRoom.
fn lean<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Watches `K` objects (children, selected by label) into a local store.
fn reflected<K>(
    client: &Client,
    selector: &watcher::Config,
) -> (
    Store<K>,
    impl futures_util::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client.clone()), selector.clone())
        .default_backoff()
        .modify(lean)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// Runs the controller until a shutdown signal.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) {
    let rooms: Api<WaitingRoom> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let registry = Arc::<Rooms>::default();
    let forget = forget_gone_rooms(Arc::clone(&registry), Arc::clone(&metrics), reader.clone());
    // Status writes change none of what the filter looks at, so they do not
    // trigger reconciles. Spec changes, finalizers and deletion do.
    let triggers = watcher(rooms, watcher::Config::default())
        .default_backoff()
        .modify(lean)
        .reflect(writer)
        .inspect(forget)
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, Default::default());
    let selector = watcher::Config::default().labels("app.kubernetes.io/managed-by=usher-operator");
    let (deployments, deployment_events) = reflected::<Deployment>(&client, &selector);
    let (services, service_events) = reflected::<Service>(&client, &selector);
    let (budgets, budget_events) = reflected::<PodDisruptionBudget>(&client, &selector);
    let (secrets, secret_events) = reflected::<Secret>(&client, &selector);
    let caches = Caches {
        deployments,
        services,
        budgets,
        secrets,
    };
    let ctx = Context::new(client, settings, metrics, caches, registry);
    // A child edited or deleted by hand triggers its room's reconcile.
    Controller::for_stream(triggers, reader)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(budget_events)
        .owns_stream(secret_events)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// Forgets a room when it is deleted (with or without our finalizer), and,
/// after each (re)list, every room no longer in the cluster.
fn forget_gone_rooms(
    registry: Arc<Rooms>,
    metrics: Arc<Metrics>,
    rooms: Store<WaitingRoom>,
) -> impl FnMut(&std::result::Result<watcher::Event<WaitingRoom>, watcher::Error>) {
    move |event| match event {
        Ok(watcher::Event::Delete(room)) => {
            let uid = room.uid().unwrap_or_default();
            registry.forget(&uid);
            metrics.set_phase(&uid, None);
        }
        Ok(watcher::Event::InitDone) => {
            let live: std::collections::HashSet<String> =
                rooms.state().iter().filter_map(|r| r.uid()).collect();
            registry.retain(|uid| live.contains(uid));
        }
        _ => {}
    }
}

/// What should trigger a reconcile: the generation (spec), the finalizers
/// (the finalizer helper adds ours, then expects to be called again) and
/// the start of deletion.
fn spec_or_lifecycle(room: &WaitingRoom) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    room.metadata.generation.hash(&mut hasher);
    room.finalizers().hash(&mut hasher);
    room.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

async fn reconcile(room: Arc<WaitingRoom>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = room.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", namespace = %namespace, name = %room.name_any());
    async move {
        let started = Instant::now();
        ctx.metrics.reconciles.fetch_add(1, Relaxed);
        let api: Api<WaitingRoom> = Api::namespaced(ctx.client.clone(), &namespace);
        let result = finalizer(&api, FINALIZER, room, |event| async {
            match event {
                Finalized::Apply(room) => apply(&room, &ctx, &namespace).await,
                Finalized::Cleanup(room) => {
                    let done = cleanup(&room, &ctx, &namespace).await;
                    if done.is_ok() {
                        // The room is gone once the finalizer lets go.
                        ctx.registry.forget(&room.uid().unwrap_or_default());
                    }
                    done
                }
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        ctx.metrics
            .reconcile_micros
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        result
    }
    .instrument(span)
    .await
}

/// Per-object backoff: 1 s, 2 s, 4 s … up to 5 minutes.
fn error_policy(room: Arc<WaitingRoom>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = room.namespace().unwrap_or_default(), name = room.name_any(), %error, "reconcile failed");
    ctx.metrics.error(error.kind());
    let failures = ctx.memory(&room, |m| {
        m.failures += 1;
        m.failures
    });
    Action::requeue(Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300)))
}

/// Applies `desired` (server-side apply) unless the last apply is still in
/// place: same desired object, and nobody edited the child since. Returns
/// the child as the cluster has it.
async fn ensure_child<K: Child>(
    room: &WaitingRoom,
    ctx: &Context,
    namespace: &str,
    cache: &Store<K>,
    desired: &K,
) -> Result<K> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let name = desired.meta().name.clone().unwrap_or_default();
    let key = format!("{}/{name}", K::kind(&()));
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(desired)
        .unwrap_or_default()
        .hash(&mut hasher);
    let digest = hasher.finish();
    let cached = cache.get(&ObjectRef::new(&name).within(namespace));
    if let Some(cached) = &cached {
        let marker = cached.edit_marker();
        if ctx.memory(room, |m| m.applied.get(&key) == Some(&(digest, marker))) {
            return Ok(K::clone(cached));
        }
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await?;
    let marker = applied.edit_marker();
    ctx.memory(room, |m| m.applied.insert(key, (digest, marker)));
    Ok(applied)
}

/// The room's token-key Secret: created once, never replaced. A Secret
/// deleted by hand is made again with a new key, keeping the previous one
/// (if this process saw it) as the retired key; the brokers roll to it.
async fn token_key(room: &WaitingRoom, ctx: &Context, namespace: &str) -> Result<Secret> {
    let name = secret::secret_name(room);
    if let Some(existing) = find_secret(ctx, namespace, &name).await? {
        ctx.memory(room, |m| m.last_key = secret::key(&existing));
        return Ok(existing);
    }
    let retired = ctx.memory(room, |m| m.last_key.clone());
    let fresh = secret::build(room, EntryTokenSigner::generate_pem(), retired);
    let created = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .create(&PostParams::default(), &fresh)
        .await?;
    ctx.memory(room, |m| m.last_key = secret::key(&created));
    let note = format!("created the entry-token key Secret {name}");
    ctx.event(room, EventType::Normal, "KeyCreated", note).await;
    Ok(created)
}

/// The Secret `name`, from the watch cache or, as the cache may lag behind
/// a Secret created a moment ago, from the API.
async fn find_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>> {
    if let Some(cached) = ctx
        .caches
        .secrets
        .get(&ObjectRef::new(name).within(namespace))
    {
        return Ok(Some(Secret::clone(&cached)));
    }
    Ok(Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?)
}

/// The room's checkout-credential Secret: created once with a random
/// credential, never replaced (the shop's checkout service holds it).
async fn checkout_key(room: &WaitingRoom, ctx: &Context, namespace: &str) -> Result<()> {
    let name = secret::checkout_secret_name(room);
    if find_secret(ctx, namespace, &name).await?.is_some() {
        return Ok(());
    }
    let credential = format!(
        "{}{}",
        usher_runtime::auth::random_id(),
        usher_runtime::auth::random_id()
    );
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .create(
            &PostParams::default(),
            &secret::build_checkout(room, credential),
        )
        .await?;
    let note = format!("created the checkout-credential Secret {name}");
    ctx.event(room, EventType::Normal, "KeyCreated", note).await;
    Ok(())
}

/// The room's Redis store.
async fn room_store(room: &WaitingRoom, ctx: &Context, namespace: &str) -> Result<Arc<RedisStore>> {
    let url = ctx.redis_url(room, namespace).await?;
    ctx.store(room, &url).await
}

/// `call` on the room's store, bounded in time.
async fn bounded<T>(call: impl Future<Output = usher_runtime::queue::Result<T>>) -> Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Redis(e.to_string())),
        Err(_) => Err(Error::Redis(format!("no answer within {REDIS_TIMEOUT:?}"))),
    }
}

/// What Redis says of the room, bounded in time.
async fn observe_redis(store: &RedisStore) -> Result<Observation> {
    let read = async {
        Ok::<_, usher_runtime::queue::QueueError>(Observation {
            counts: store.counts().await?,
            connected: store.connected(now_ms() - REPORT_FRESHNESS_MS).await?,
            config: store.config().await?,
            fairness: store.fairness().await?,
        })
    };
    bounded(read).await
}

/// What one read of the room in Redis found.
struct Observation {
    counts: RoomCounts,
    /// Visitors connected to the brokers.
    connected: u64,
    config: Option<RoomConfig>,
    fairness: Option<Fairness>,
}

/// Writes the rules the spec asks for to Redis, unless they are in place,
/// and tells what changed in an Event. Returns the rules in force.
async fn write_rules(
    room: &WaitingRoom,
    ctx: &Context,
    store: &RedisStore,
    previous: &WaitingRoomStatus,
    wanted: RoomConfig,
    in_store: Option<&RoomConfig>,
) -> Result<RoomConfig> {
    let digest = rules::digest(&wanted);
    let kept = previous
        .config_hash
        .as_deref()
        .zip(previous.config_revision.map(|r| r as u64));
    let wanted = RoomConfig {
        revision: rules::revision(kept, &digest, in_store, now_ms()),
        ..wanted
    };
    if in_store == Some(&wanted) {
        return Ok(wanted);
    }
    bounded(store.configure(&wanted)).await?;
    match in_store {
        Some(before) => {
            let changed = rules::changes(before, &wanted);
            if !changed.is_empty() {
                info!(?changed, "rules changed");
                ctx.event(room, EventType::Normal, "RulesChanged", changed.join(", "))
                    .await;
            }
        }
        // Lost with Redis's data: say so, it is worth a look.
        None if previous.config_revision.is_some() => {
            let note = "the room's rules were missing from Redis; wrote them again".to_owned();
            ctx.event(room, EventType::Warning, "RulesRestored", note)
                .await;
        }
        None => {}
    }
    Ok(wanted)
}

/// Carries out `spec.admitNext` once per request id: the store admits the
/// front of the line in batches and remembers the request, so a repeat
/// (a status write that failed, a second operator) admits nobody.
async fn admit_next(
    room: &WaitingRoom,
    ctx: &Context,
    store: &RedisStore,
    previous: &WaitingRoomStatus,
) -> Result<Option<AdmitNextStatus>> {
    let Some(request) = &room.spec.admit_next else {
        return Ok(previous.admit_next.clone());
    };
    if previous
        .admit_next
        .as_ref()
        .is_some_and(|done| done.request_id == request.request_id)
    {
        return Ok(previous.admit_next.clone());
    }
    let count = u64::try_from(request.count).unwrap_or_default();
    let mut admitted = 0;
    loop {
        let batch = bounded(store.admit_now(&request.request_id, count, now_ms())).await?;
        admitted += batch.admitted;
        if batch.left == 0 || batch.admitted == 0 {
            break;
        }
    }
    let note = format!(
        "admitted {admitted} of the next {count} now (request {})",
        request.request_id
    );
    ctx.event(room, EventType::Normal, "AdmittedNow", note)
        .await;
    Ok(Some(AdmitNextStatus {
        request_id: request.request_id.clone(),
        admitted: admitted as i64,
    }))
}

/// A spec the runtime would refuse: nothing to deploy or write until it
/// changes. Says why in an Event and in the status.
async fn refuse_spec(
    room: &WaitingRoom,
    ctx: &Context,
    namespace: &str,
    message: String,
) -> Result<Action> {
    ctx.event(room, EventType::Warning, "InvalidConfig", message.clone())
        .await;
    let observed = Observed {
        redis: Err(message),
        brokers_desired: 0,
        brokers_ready: 0,
        dispatchers_ready: 0,
        now_ms: now_ms(),
        drained: false,
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::build(
        room.status.as_ref(),
        &observed,
        room.metadata.generation,
        WaitingRoomStatus::default(),
        &now,
    );
    write_status(room, ctx, namespace, &next).await?;
    ctx.metrics
        .set_phase(&room.uid().unwrap_or_default(), next.phase);
    Ok(Action::await_change())
}

/// What one pass found in Redis, and what it did there.
struct Reading {
    /// The rules in force (as written by this pass, or found in place).
    rules: RoomConfig,
    counts: RoomCounts,
    /// Visitors connected to the brokers.
    connected: u64,
    admit_next: Option<AdmitNextStatus>,
    fairness: Option<Fairness>,
}

/// Reads the room in Redis, writes the rules the spec asks for, and
/// carries out an admit-next request.
async fn steer(
    room: &WaitingRoom,
    ctx: &Context,
    store: &RedisStore,
    previous: &WaitingRoomStatus,
    wanted: RoomConfig,
) -> Result<Reading> {
    let seen = observe_redis(store).await?;
    let rules = write_rules(room, ctx, store, previous, wanted, seen.config.as_ref()).await?;
    let admit_next = admit_next(room, ctx, store, previous).await?;
    Ok(Reading {
        rules,
        counts: seen.counts,
        connected: seen.connected,
        admit_next,
        fairness: seen.fairness,
    })
}

async fn apply(room: &WaitingRoom, ctx: &Context, namespace: &str) -> Result<Action> {
    let event_id = room.event_id();
    if !usher_runtime::broker::valid_room_id(&event_id) {
        let message = format!(
            "event id {event_id:?} must be 1-63 lowercase letters, digits and dashes; set spec.eventId"
        );
        return refuse_spec(room, ctx, namespace, message).await;
    }
    let wanted = match rules::desired(room, 0) {
        Ok(wanted) => wanted,
        Err(message) => return refuse_spec(room, ctx, namespace, message).await,
    };
    let key = token_key(room, ctx, namespace).await?;
    checkout_key(room, ctx, namespace).await?;
    let previous = room.status.clone().unwrap_or_default();
    let redis = match room_store(room, ctx, namespace).await {
        Ok(store) => steer(room, ctx, &store, &previous, wanted).await,
        Err(e) => Err(e),
    };
    let previous_desired = previous
        .brokers
        .as_ref()
        .map_or(room.spec.broker.min_replicas, |b| b.desired);
    let now = now_ms();
    let was_drained = previous.phase == Some(Phase::Closed) && previous_desired == 0;
    let counts = redis.as_ref().ok().map(|reading| &reading.counts);
    let drained = scaling::closed_and_drained(&room.spec, now, counts, was_drained);
    let demand_replicas = match &redis {
        Ok(reading) => {
            let recommendation = scaling::recommended(
                reading.connected + reading.counts.waiting,
                &room.spec.broker,
            );
            ctx.memory(room, |m| m.scale.desired(now_ms(), recommendation))
        }
        // Without a reading, hold steady.
        Err(_) => {
            previous_desired.clamp(room.spec.broker.min_replicas, room.spec.broker.max_replicas)
        }
    };
    let (broker_replicas, dispatcher_replicas) = if drained {
        (0, 0)
    } else {
        let brokers = scaling::with_prewarm(demand_replicas, &room.spec, now);
        (brokers, room.spec.dispatcher.replicas)
    };
    let inputs = Inputs {
        image: ctx.settings.image.clone(),
        broker_replicas,
        dispatcher_replicas,
        token_key_digest: secret::key_digest(&key),
        retired_key: secret::has_retired(&key),
    };
    let caches = &ctx.caches;
    let brokers = ensure_child(
        room,
        ctx,
        namespace,
        &caches.deployments,
        &broker::deployment(room, &inputs),
    )
    .await?;
    ensure_child(
        room,
        ctx,
        namespace,
        &caches.services,
        &broker::service(room),
    )
    .await?;
    ensure_child(
        room,
        ctx,
        namespace,
        &caches.budgets,
        &broker::disruption_budget(room),
    )
    .await?;
    let dispatchers = ensure_child(
        room,
        ctx,
        namespace,
        &caches.deployments,
        &dispatcher::deployment(room, &inputs),
    )
    .await?;
    let ready = |d: &Deployment| {
        d.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };

    let observed = Observed {
        redis: redis
            .as_ref()
            .map(|reading| (Some(reading.rules.clone()), reading.counts.clone()))
            .map_err(ToString::to_string),
        brokers_desired: broker_replicas,
        brokers_ready: ready(&brokers),
        dispatchers_ready: ready(&dispatchers),
        now_ms: now_ms(),
        drained,
    };
    let base = WaitingRoomStatus {
        event_id: Some(event_id),
        endpoint: Some(broker::endpoint(room)),
        gate_url: Some(broker::gate_url(room)),
        // Without Redis, what was last written stands.
        config_hash: match &redis {
            Ok(reading) => Some(rules::digest(&reading.rules)),
            Err(_) => previous.config_hash.clone(),
        },
        config_revision: match &redis {
            Ok(reading) => Some(reading.rules.revision as i64),
            Err(_) => previous.config_revision,
        },
        admit_next: match &redis {
            Ok(reading) => reading.admit_next.clone(),
            Err(_) => previous.admit_next.clone(),
        },
        fairness: match &redis {
            Ok(reading) => reading.fairness.as_ref().map(status::fairness),
            Err(_) => previous.fairness.clone(),
        },
        ..WaitingRoomStatus::default()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::build(
        room.status.as_ref(),
        &observed,
        room.metadata.generation,
        base,
        &now,
    );
    announce(room, ctx, &previous, &next).await;
    write_status(room, ctx, namespace, &next).await?;
    ctx.metrics
        .set_phase(&room.uid().unwrap_or_default(), next.phase);
    ctx.memory(room, |m| m.failures = 0);
    let interval = ctx.settings.status_interval;
    Ok(Action::requeue(scaling::requeue_after(
        interval,
        &room.spec,
        now_ms(),
    )))
}

/// Writes `next` if it differs from the status in place. Server-side apply:
/// fields it leaves out are removed.
async fn write_status(
    room: &WaitingRoom,
    ctx: &Context,
    namespace: &str,
    next: &WaitingRoomStatus,
) -> Result<()> {
    if room.status.as_ref() == Some(next) {
        return Ok(());
    }
    let api: Api<WaitingRoom> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": "usher.dev/v1alpha1",
        "kind": "WaitingRoom",
        "status": next,
    });
    let params = PatchParams::apply(MANAGER).force();
    api.patch_status(&room.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Events for what a platform team cares about: opening, pausing, scaling,
/// Redis going away.
async fn announce(
    room: &WaitingRoom,
    ctx: &Context,
    before: &WaitingRoomStatus,
    after: &WaitingRoomStatus,
) {
    if before.phase != after.phase {
        let (kind, reason) = match after.phase {
            Some(Phase::Open) => (EventType::Normal, "Opened"),
            Some(Phase::Paused) => (EventType::Normal, "Paused"),
            Some(Phase::Closed) => (EventType::Normal, "Closed"),
            Some(Phase::Scheduled) => (EventType::Normal, "Scheduled"),
            Some(Phase::Degraded) => (EventType::Warning, "Degraded"),
            Some(Phase::Pending) | None => (EventType::Normal, "Pending"),
        };
        let message = after
            .conditions
            .iter()
            .find(|c| c.status == "False")
            .map_or_else(String::new, |c| format!(": {}", c.message));
        ctx.event(
            room,
            kind,
            reason,
            format!("the room is {}{message}", reason.to_lowercase()),
        )
        .await;
    }
    let reachable = |s: &WaitingRoomStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "RedisReachable")
            .map(|c| c.status == "True")
    };
    if reachable(after) == Some(false) && reachable(before) != Some(false) {
        let message = after
            .conditions
            .iter()
            .find(|c| c.type_ == "RedisReachable")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(room, EventType::Warning, "RedisUnreachable", message)
            .await;
    }
    let desired = |s: &WaitingRoomStatus| s.brokers.as_ref().map(|b| b.desired);
    if let (Some(from), Some(to)) = (desired(before), desired(after))
        && from != to
    {
        info!(from, to, "scaling brokers");
        ctx.event(
            room,
            EventType::Normal,
            "Scaled",
            format!("brokers {from} -> {to}"),
        )
        .await;
    }
}

/// On deletion: keep or delete the room's Redis keys. Never blocks deletion
/// forever: after a few failed attempts the finalizer lets go with an Event.
async fn cleanup(room: &WaitingRoom, ctx: &Context, namespace: &str) -> Result<Action> {
    ctx.metrics.set_phase(&room.uid().unwrap_or_default(), None);
    if room.spec.redis.on_delete == OnDelete::Retain {
        return Ok(Action::await_change());
    }
    let purge = async {
        let url = ctx.redis_url(room, namespace).await?;
        let store = ctx.store(room, &url).await?;
        tokio::time::timeout(REDIS_TIMEOUT, store.purge())
            .await
            .map_err(|_| Error::Redis("no answer".into()))?
            .map_err(|e| Error::Redis(e.to_string()))
    };
    match purge.await {
        Ok(()) => {
            ctx.event(
                room,
                EventType::Normal,
                "RedisKeysDeleted",
                format!("deleted the Redis keys of {}", room.event_id()),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(error) => {
            let attempts = ctx.memory(room, |m| {
                m.cleanup_attempts += 1;
                m.cleanup_attempts
            });
            if attempts < CLEANUP_ATTEMPTS {
                return Err(error);
            }
            let note = format!(
                "gave up deleting the Redis keys after {attempts} attempts ({error}); they remain"
            );
            ctx.event(room, EventType::Warning, "RedisCleanupFailed", note)
                .await;
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    #[test]
    fn status_writes_do_not_trigger_reconciles_but_lifecycle_changes_do() {
        let room = fixtures::basic();
        let before = spec_or_lifecycle(&room);
        let mut with_status = room.clone();
        with_status.status = Some(WaitingRoomStatus {
            waiting: Some(5),
            ..WaitingRoomStatus::default()
        });
        with_status.metadata.resource_version = Some("2".into());
        assert_eq!(spec_or_lifecycle(&with_status), before);
        let mut with_finalizer = room.clone();
        with_finalizer.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert_ne!(spec_or_lifecycle(&with_finalizer), before);
        let mut deleting = with_finalizer.clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_ne!(
            spec_or_lifecycle(&deleting),
            spec_or_lifecycle(&with_finalizer)
        );
        let mut edited = room.clone();
        edited.metadata.generation = Some(5);
        assert_ne!(spec_or_lifecycle(&edited), before);
    }
}
