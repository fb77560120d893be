//! `usher broker`: the HTTP/SSE front of a room. Users join the line, follow
//! their exact position over SSE and receive a signed entry token when the
//! dispatcher admits them.

mod api;
pub use self::api::valid_room_id;
mod bots;
mod checkout;
mod client_address;
pub use self::checkout::{CheckoutKey, CheckoutKeyError};
pub use self::client_address::{AddressPolicy, TrustedProxies};
mod entry_cookie;
pub use self::entry_cookie::EntryCookie;
mod ended;
mod error;
mod events;
mod fairness;
mod fanout;
mod gate;
mod health;
mod http;
mod human_check;
pub use self::human_check::HumanCheck;
mod join_body;
mod lanes;
pub use self::lanes::{follow_invites, read_invites};
mod line;
mod redirect;
pub use self::redirect::WaitingPage;
mod return_url;
pub use self::return_url::ReturnOrigins;
mod sse;
mod tasks;

use std::sync::Arc;
use std::sync::atomic::AtomicU16;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;

pub use self::error::ApiError;
use self::fanout::Fanout;
use self::sse::{AdmittedData, Frame, MessageData};
use crate::auth::binding::{EntryBindings, thumbprint};
use crate::auth::{SessionTokens, UserAuth};
use crate::clock::{now_ms, rfc3339};
use crate::metrics::{EventKind, Metrics};
use crate::pow::Challenges;
use crate::queue::{Millis, QueueError, RoomConfig, SessionState, SessionView, Store};
use crate::rules::RoomRules;
use crate::supervisor::Supervisor;
use crate::tokens::{Confirmation, EntryClaims, EntryTokenSigner, TokenError, TokenTimes};

/// Tunables of a broker.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// How often positions are broadcast.
    pub position_interval: Duration,
    /// How often idle streams get a keep-alive comment.
    pub keep_alive: Duration,
    /// The room's abandon timeout: present users are re-marked well within it.
    pub abandon_timeout: Duration,
    /// Names this broker in load reports (the pod name in Kubernetes).
    pub broker_id: String,
    /// `iss` of entry tokens.
    pub issuer: String,
    /// Authorizes the shop's checkout API; `None` turns the API off.
    pub checkout_key: Option<CheckoutKey>,
    /// Where admitted visitors may be sent back to.
    pub return_origins: ReturnOrigins,
    /// How the entry cookie is set on the way back.
    pub entry_cookie: EntryCookie,
    /// Where the gate's redirect form sends refused visitors.
    pub waiting_page: WaitingPage,
    /// How the visitor's address is found and counted.
    pub addresses: AddressPolicy,
    /// Binds entry tokens to the browser that waited (see `auth/binding.rs`).
    pub token_binding: bool,
    /// The human check newcomers pass before joining, if any.
    pub human_check: Option<HumanCheck>,
}

/// The room's current message and its encoded event.
struct Announcement {
    text: String,
    frame: Arc<Frame>,
}

impl Announcement {
    fn none() -> Self {
        Announcement {
            text: String::new(),
            frame: sse::frame(EventKind::Message, 0, &MessageData { text: "" }),
        }
    }
}

impl BrokerSettings {
    fn presence_interval(&self) -> Duration {
        Duration::from_millis(crate::queue::presence_interval_ms(
            self.abandon_timeout.as_millis() as Millis
        ) as u64)
    }
}

pub struct Broker {
    room: String,
    store: Arc<dyn Store>,
    /// The rules this broker was started with, kept in the store.
    rules: Arc<RoomRules>,
    signer: Arc<EntryTokenSigner>,
    session_tokens: SessionTokens,
    /// Binding secrets of entry tokens; `None` when binding is off.
    bindings: Option<EntryBindings>,
    users: UserAuth,
    fanout: Arc<Fanout>,
    gate: gate::Gate,
    metrics: Arc<Metrics>,
    settings: BrokerSettings,
    /// Ticks for keep-alive comments, shared by every stream.
    beats: watch::Sender<u64>,
    /// The room's message to everyone waiting, shared by every stream.
    announcement: watch::Sender<Announcement>,
    /// Runs the background tasks; a failing one shuts the broker down.
    supervisor: Supervisor,
    /// Turns true when the broker stops: streams end so clients reconnect elsewhere.
    shutdown: watch::Receiver<bool>,
    /// Issues and checks newcomers' proof-of-work challenges.
    challenges: Challenges,
    /// The room's proof-of-work difficulty as last read from its rules.
    proof_of_work_bits: AtomicU16,
}

impl Broker {
    pub fn new(
        room: String,
        rules: Arc<RoomRules>,
        signer: Arc<EntryTokenSigner>,
        users: UserAuth,
        metrics: Arc<Metrics>,
        settings: BrokerSettings,
        supervisor: &Supervisor,
    ) -> Arc<Self> {
        let session_tokens = SessionTokens::new(signer.mac_keys("session-token"));
        let bindings = settings
            .token_binding
            .then(|| EntryBindings::new(signer.mac_keys("entry-binding")));
        let challenges = Challenges::new(signer.mac_keys("proof-of-work"));
        let gate = gate::Gate::new(signer.verifier(&room, &settings.issuer, TokenTimes::Checked));
        Arc::new(Broker {
            room,
            store: Arc::clone(rules.store()),
            rules,
            signer,
            session_tokens,
            bindings,
            users,
            fanout: Fanout::new(Arc::clone(&metrics)),
            gate,
            metrics,
            settings,
            beats: watch::Sender::new(0),
            announcement: watch::Sender::new(Announcement::none()),
            supervisor: supervisor.clone(),
            shutdown: supervisor.shutdown(),
            challenges,
            proof_of_work_bits: AtomicU16::new(bots::BITS_UNKNOWN),
        })
    }

    /// Starts the background tasks and serves HTTP on `listener` until shutdown.
    pub async fn run(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        tasks::spawn_all(self);
        let router = api::router(Arc::clone(self));
        http::serve(
            listener,
            router,
            Arc::clone(&self.metrics),
            self.shutdown.clone(),
        )
        .await;
    }

    /// Takes the room's rules as read from the store. A new message goes
    /// out at once to every open stream.
    fn adopt_rules(&self, config: RoomConfig) {
        let changed = self.announcement.borrow().text != config.message;
        if changed {
            let frame = sse::frame(
                EventKind::Message,
                0,
                &MessageData {
                    text: &config.message,
                },
            );
            let streams = self.metrics.connections.load(Relaxed).max(0) as u64;
            self.metrics.event_sent(EventKind::Message, streams);
            self.announcement.send_replace(Announcement {
                text: config.message.clone(),
                frame,
            });
        }
        self.proof_of_work_bits
            .store(config.proof_of_work_bits.into(), Relaxed);
        self.fanout.set_config(config);
    }

    /// The binding secret of session `sid`, when binding is on.
    fn binding(&self, sid: &str) -> Option<String> {
        Some(self.bindings.as_ref()?.secret(&self.room, sid))
    }

    /// The claims of an entry token of session `sid`, bound to no browser.
    fn entry_claims(
        &self,
        sid: &str,
        user: &str,
        admitted_at: Millis,
        expires_at: Millis,
    ) -> EntryClaims {
        EntryClaims {
            iss: self.settings.issuer.clone(),
            aud: self.room.clone(),
            sub: user.to_owned(),
            sid: sid.to_owned(),
            iat: admitted_at / 1000,
            nbf: admitted_at / 1000,
            exp: expires_at / 1000,
            jti: sid.to_owned(),
            cnf: None,
        }
    }

    /// The entry token of an admitted session: bound to the browser that
    /// waited, when binding is on.
    fn entry_token(
        &self,
        sid: &str,
        user: &str,
        admitted_at: Millis,
        expires_at: Millis,
    ) -> Result<String, TokenError> {
        let cnf = self.binding(sid).map(|secret| Confirmation {
            binding: thumbprint(&secret),
        });
        self.signer.sign(&EntryClaims {
            cnf,
            ..self.entry_claims(sid, user, admitted_at, expires_at)
        })
    }

    /// A staff pass: nobody waited for it, so it is bound to no browser.
    fn staff_pass(
        &self,
        sid: &str,
        user: &str,
        issued_at: Millis,
        expires_at: Millis,
    ) -> Result<String, TokenError> {
        self.signer
            .sign(&self.entry_claims(sid, user, issued_at, expires_at))
    }

    fn admitted_frame(
        &self,
        sid: &str,
        user: &str,
        admitted_at: Millis,
        expires_at: Millis,
    ) -> Result<Arc<Frame>, TokenError> {
        let data = AdmittedData {
            entry_token: self.entry_token(sid, user, admitted_at, expires_at)?,
            expires_at: rfc3339(expires_at),
            admitted_at_ms: admitted_at,
        };
        Ok(sse::frame(EventKind::Admitted, 0, &data))
    }

    /// Tells a connected session what the store says of it.
    /// `generation` is the fanout's from before the store read.
    fn show(&self, view: &SessionView, generation: u64) {
        let sid = &view.session.id;
        match view.session.state {
            SessionState::Waiting => {
                let store_view = (view.position.unwrap_or(1), view.waiting);
                self.fanout
                    .set_waiting(sid, view.session.ticket, store_view, generation, now_ms());
            }
            SessionState::Active {
                admitted_at,
                expires_at,
            } => match self.admitted_frame(sid, &view.session.user, admitted_at, expires_at) {
                Ok(frame) => self.fanout.settle(sid, frame),
                Err(e) => tracing::error!(error = %e, "cannot sign an entry token"),
            },
            SessionState::Closed(reason) => self
                .fanout
                .settle(sid, self.fanout.closed_frame(reason.as_str())),
        }
    }

    /// Re-reads a connected session from the store and shows it. A session
    /// the store no longer knows (Redis lost its data) is closed as `lost`,
    /// rather than left showing a place in a line that is gone.
    async fn refresh(&self, sid: &str) {
        let generation = self.fanout.generation();
        match self.store.session(sid, None).await {
            Ok(view) => self.show(&view, generation),
            Err(QueueError::UnknownSession) => {
                tracing::info!(sid, "a connected session is gone from the store");
                self.fanout
                    .settle(sid, self.fanout.closed_frame(sse::LOST_REASON));
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh a session"),
        }
    }

    async fn report_load(&self) {
        let connected = self.metrics.connections.load(Relaxed).max(0) as u64;
        let result = async {
            self.store
                .report_broker(&self.settings.broker_id, connected, now_ms())
                .await?;
            self.store.counts().await
        }
        .await;
        match result {
            Ok(counts) => {
                self.metrics.waiting.store(counts.waiting, Relaxed);
                self.metrics.active.store(counts.active, Relaxed);
            }
            Err(e) => {
                self.metrics.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "cannot report load");
            }
        }
    }
}
