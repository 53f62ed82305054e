//! Call control: one task per call joins the SIP leg (from the gateway), its RTP leg (media engine),
//! the IVR interpreter, the ACD queue and the agent's leg, and writes the call's timeline of
//! [`domain::InteractionEvent`]s to the CRM store's durable writer. The ACD router runs in its own
//! owner task ([`acd_task`]).
//!
//! Outbound campaigns run in [`campaign_runner`]: one runner task per campaign drives the pure dialer
//! (pacing, leads, compliance) and hands answered people to the ACD as ordinary calls.
//!
//! Pure parts: `call-session` (one call's decisions and its event numbering), the IVR interpreter,
//! the ACD router and the dialer (their own crates). The per-call driver ([`driver`]) is the async
//! edge that feeds a call's session what happened and carries out its commands; [`call`],
//! [`outbound`] and [`callback`] start one for an inbound call, an agent-placed call and a kept
//! place in line.

pub mod acd_handle;
pub mod acd_task;
pub mod agents;
mod call;
mod callback;
pub mod campaign_runner;
pub mod desk;
pub mod desk_relay;
mod driver;
pub mod kpi_metrics;
pub mod live_calls;
mod media_rules;
mod outbound;
pub mod queue_audio;
pub mod recovery;
pub mod timeline;
pub mod webhook;

pub use acd_handle::{Abandonment, AcdHandle, AgentStateEvent, QueueNotice};
pub use acd_task::LocalAcd;
pub use agents::AgentChange;
pub use campaign_runner::{
    CampaignAction, CampaignConfig, CampaignHandle, CampaignLiveStats, CampaignSpec, DialerMetrics,
    PreviewChoice,
};
pub use desk::DeskHub;
pub use recovery::{Resumed, join_cluster, resume_acd};
pub use timeline::Timeline;

use domain::InteractionEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where interaction events go: the CRM store's durable writer in production.
pub trait EventSink: Send + Sync {
    /// Accepts one event; must not block the call (the sink queues or spawns its durable write).
    fn log(&self, event: InteractionEvent);
}

/// Events reach the writer in the order they were logged: one queue and one appending task.
impl EventSink for crm_store::OrderedAppender {
    fn log(&self, event: InteractionEvent) {
        self.append(event);
    }
}

pub(crate) struct Inner {
    pub(crate) node: String,
    pub(crate) media: media::engine::MediaEngine,
    pub(crate) flows: Arc<ivr::FlowSetHandle>,
    pub(crate) crm: crm_store::CrmStore,
    pub(crate) acd: AcdHandle,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) gateway: std::sync::OnceLock<Arc<sip_gateway::Gateway>>,
    /// Live state shared with other nodes and the agent desktop (IVR session state).
    pub(crate) state: state_store::StateStore,
    /// Record bridged calls (stereo WAV: caller left, agent right).
    pub(crate) record_calls: bool,
    /// Agents' desktops.
    pub(crate) desks: DeskHub,
    /// What a caller on hold hears (a WAV file), if anything.
    pub(crate) hold_music: Option<std::path::PathBuf>,
    /// The browser softphones' WebRTC endpoint, when enabled.
    pub(crate) webrtc: Option<media::webrtc::WebRtcEndpoint>,
    /// Where outside numbers are dialled (transfers to a number).
    pub(crate) outbound: Option<OutboundTrunk>,
    /// How long after a call its agent may still save the disposition.
    pub(crate) wrap_up_window: std::time::Duration,
    /// What callers waiting in queues hear (set once at start; unset: only what the IVR plays).
    pub(crate) queue_audio: std::sync::OnceLock<queue_audio::QueueAudioConfig>,
    /// This node's HTTP server, for IVR webhooks whose URL is a path (`/demo/balance`).
    pub(crate) own_http: std::sync::OnceLock<webhook::OwnHttp>,
    /// The IVR webhooks' client (unset: the system's trust roots only).
    pub(crate) webhook_client: std::sync::OnceLock<reqwest::Client>,
    counter: AtomicU64,
}

impl Inner {
    pub(crate) fn log(&self, event: InteractionEvent) {
        self.events.log(event);
    }
    pub(crate) fn next_counter(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// Namespace of the IVR session states in the state store, keyed by call id.
pub const IVR_STATE_NAMESPACE: &str = "ivr";

/// What a caller's IVR session looks like now (flow, node, variables; sensitive digits are never
/// saved), as the agent desktop reads it. None once the call has ended.
pub async fn ivr_state(store: &state_store::StateStore, call: &str) -> Option<ivr::IvrState> {
    let blob = store
        .get_blob(IVR_STATE_NAMESPACE, call, domain::Timestamp::now_utc())
        .await
        .ok()??;
    serde_json::from_slice(&blob.value).ok()
}

/// Takes IVR and queue calls from the gateway.
#[derive(Clone)]
pub struct CallControl {
    inner: Arc<Inner>,
}

/// What call control works with, built by the binary.
pub struct Services {
    pub media: media::engine::MediaEngine,
    pub flows: Arc<ivr::FlowSetHandle>,
    pub crm: crm_store::CrmStore,
    pub acd: AcdHandle,
    pub events: Arc<dyn EventSink>,
    pub state: state_store::StateStore,
    pub desks: DeskHub,
    /// A WAV file looped to callers on hold.
    pub hold_music: Option<std::path::PathBuf>,
    /// The WebRTC endpoint for agents who take calls in the browser (None: phones only).
    pub webrtc: Option<media::webrtc::WebRtcEndpoint>,
    /// The trunk outside numbers are dialled through (None: no outside numbers).
    pub outbound: Option<OutboundTrunk>,
}

/// How outside numbers are reached: `sip:<number>@<host>`, through the gateway's trunk of that host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundTrunk {
    /// `host:port` of the trunk's URI.
    pub host: String,
    /// The number presented to the called party; None passes the customer's number on.
    pub caller_id: Option<String>,
}

/// How long after a call its agent may still save the disposition (the desktop's wrap-up form).
pub const WRAP_UP_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl CallControl {
    /// `node` names this process in call ids; `record_calls` records every bridged call.
    pub fn new(node: &str, services: Services, record_calls: bool) -> Self {
        let Services {
            media,
            flows,
            crm,
            acd,
            events,
            state,
            desks,
            hold_music,
            webrtc,
            outbound,
        } = services;
        Self {
            inner: Arc::new(Inner {
                node: node.to_string(),
                media,
                flows,
                crm,
                acd,
                events,
                gateway: std::sync::OnceLock::new(),
                state,
                record_calls,
                desks,
                hold_music,
                webrtc,
                outbound,
                wrap_up_window: WRAP_UP_WINDOW,
                queue_audio: std::sync::OnceLock::new(),
                own_http: std::sync::OnceLock::new(),
                webhook_client: std::sync::OnceLock::new(),
                counter: AtomicU64::new(0),
            }),
        }
    }

    /// Sets what callers waiting in queues hear (music, position and wait announcements); once, at
    /// start. Returns false if it was set already.
    pub fn set_queue_audio(&self, config: queue_audio::QueueAudioConfig) -> bool {
        self.inner.queue_audio.set(config).is_ok()
    }

    /// Tells call control where this node's HTTP server listens and the service token it takes
    /// from the node's own IVR; once, when the server is up. Returns false if it was set already.
    pub fn set_own_http(&self, own: webhook::OwnHttp) -> bool {
        self.inner.own_http.set(own).is_ok()
    }

    /// Sets the IVR webhooks' client (see [`webhook::client`]); once, at start. Returns false if it
    /// was set already.
    pub fn set_webhook_client(&self, client: reqwest::Client) -> bool {
        self.inner.webhook_client.set(client).is_ok()
    }

    /// Places a call for `agent` to `number` (click-to-dial): their phone rings first (or, for the
    /// browser softphone, `sdp` is its offer), then the customer is dialled through the outbound trunk.
    pub async fn dial(
        &self,
        agent: domain::AgentId,
        number: desk::DialNumber,
        media: desk::AgentMedia,
        sdp: Option<String>,
    ) -> Result<domain::CallId, desk::Refusal> {
        outbound::dial(self.inner.clone(), agent, number, media, sdp, None).await
    }

    /// Gives call control the gateway it rings agents through (set once, after the gateway starts).
    pub fn attach_gateway(&self, gateway: Arc<sip_gateway::Gateway>) {
        let _ = self.inner.gateway.set(gateway);
    }
}

#[async_trait::async_trait]
impl sip_gateway::InboundCallHandler for CallControl {
    async fn on_call(&self, call: sip_gateway::InboundCall) {
        call::run(self.inner.clone(), call).await;
    }
}
