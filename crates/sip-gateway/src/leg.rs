//! Call legs for call control. An IVR or queue call arrives as an [`InboundCall`] whose [`LegHandle`]
//! we answer as its UAS; [`crate::Gateway::originate`] places outbound legs (agents' phones, trunks) as
//! their UAC. A handle sends commands (ring, answer, reject, hang up) and receives [`LegEvent`]s
//! (answered, failed, hung up, re-offered SDP). One task per leg owns its transactions, as in the B2BUA.

use crate::Core;
use crate::b2bua::{self, CALLER_TX, CallInput, Leg};
use crate::config::TrunkConfig;
use crate::inputs::CallInputs;
use crate::media::Side;
use crate::msg::{self, header};
use domain::Pii;
use rsipstack::sip::prelude::*;
use rsipstack::sip::{Method, Request, Response, SipMessage, StatusCodeKind};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

/// What happens on a leg, as call control sees it.
#[derive(Debug)]
pub enum LegEvent {
    /// The called party is ringing (outbound legs).
    Ringing,
    /// The called party answered with this SDP (outbound legs).
    Answered { sdp: Vec<u8> },
    /// The outbound leg failed with this final status (486 busy, 408 no answer, 487 cancelled, ...).
    Failed { code: u16 },
    /// The remote party hung up (BYE) or cancelled before the answer.
    Hangup,
    /// The remote party sent new SDP (hold, unhold); answer with `reply`, or drop it to refuse (488).
    /// On an outbound leg placed with a late offer (the trunk's or phone's `late_offer`) the first one is
    /// the peer's offer from its 2xx, before [`LegEvent::Answered`]: the reply is sent in the ACK, and a
    /// dropped reply ends the leg (ACK, BYE, then `Failed { code: 488 }`).
    Reoffer {
        sdp: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// The peer asks (REFER, RFC 3515) for a blind transfer of the call to `to`, the Refer-To's user
    /// part: a SIP user's name when `user` (one of `[[sip.user]]`), else a number. `reply` says whether
    /// the transfer was taken; the peer hears it in a NOTIFY (200, or 603 when refused or unanswered).
    Refer {
        to: Pii<String>,
        user: bool,
        reply: oneshot::Sender<bool>,
    },
}

enum LegCommand {
    Ringing,
    Answer {
        sdp: Vec<u8>,
        done: oneshot::Sender<bool>,
    },
    Reject(u16),
    Hangup,
}

/// Controls one leg. Dropping it hangs the leg up.
pub struct LegHandle {
    /// The SIP Call-ID of this leg (not personal data; used to correlate logs).
    pub call_id: String,
    commands: mpsc::UnboundedSender<LegCommand>,
    events: mpsc::UnboundedReceiver<LegEvent>,
    /// Where the peer's SIP signalling comes from (see [`LegHandle::signalling_source`]).
    signalling: Option<SocketAddr>,
    /// True once the dialog is confirmed (see [`LegHandle::on_confirmed`]).
    confirmed: watch::Receiver<bool>,
}

/// How long an answered INVITE waits for its ACK before the dialog is given up: Timer H of RFC 3261
/// (64 × T1 = 32 s). A caller that never acknowledges (a spoofed INVITE naming someone else's address in
/// its SDP) is hung up then, and its media leg never left its unconfirmed send budget.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(32);

impl LegHandle {
    /// The address the peer's SIP signalling comes from: the source of an inbound INVITE, or where a
    /// registered phone registered from for an outbound leg to it (a phone behind NAT sends its media from
    /// that IP). `None` when unknown (an outbound leg to a SIP URI).
    pub fn signalling_source(&self) -> Option<SocketAddr> {
        self.signalling
    }

    /// Whether the dialog is confirmed: the ACK of our 2xx arrived (inbound legs), or the leg was answered
    /// (outbound legs: we send the ACK).
    pub fn is_confirmed(&self) -> bool {
        *self.confirmed.borrow()
    }

    /// Runs `then` once the dialog is confirmed ([`LegHandle::is_confirmed`]): now if it is, else when the
    /// ACK arrives; never if the leg ends first (an INVITE never acknowledged ends after [`ACK_TIMEOUT`]).
    pub fn on_confirmed(&self, then: impl FnOnce() + Send + 'static) {
        if self.is_confirmed() {
            then();
            return;
        }
        let mut confirmed = self.confirmed.clone();
        tokio::spawn(async move {
            if confirmed.wait_for(|c| *c).await.is_ok() {
                then();
            }
        });
    }

    /// Sends 180 Ringing (inbound legs).
    pub fn ringing(&self) {
        let _ = self.commands.send(LegCommand::Ringing);
    }
    /// Answers an inbound leg with our SDP; true once the 200 OK is on its way.
    pub async fn answer(&self, sdp: Vec<u8>) -> bool {
        let (done, rx) = oneshot::channel();
        if self.commands.send(LegCommand::Answer { sdp, done }).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
    /// Refuses an inbound leg with a final status.
    pub fn reject(&self, code: u16) {
        let _ = self.commands.send(LegCommand::Reject(code));
    }
    /// Hangs up: BYE when established, CANCEL while an outbound leg rings.
    pub fn hangup(&self) {
        let _ = self.commands.send(LegCommand::Hangup);
    }
    /// The next event; None once the leg is over.
    pub async fn next_event(&mut self) -> Option<LegEvent> {
        self.events.recv().await
    }

    /// Polls for the next event (to wait on several legs at once).
    pub fn poll_event(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<LegEvent>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for LegHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(LegCommand::Hangup);
    }
}

/// A call routed to an IVR flow or a queue, handed to call control.
pub struct InboundCall {
    pub target: crate::RouteTarget,
    /// The caller's number (user part of From).
    pub from: Pii<String>,
    /// The dialled number.
    pub to: Pii<String>,
    /// The caller's SDP offer.
    pub offer: Vec<u8>,
    /// Where the INVITE came from (also [`LegHandle::signalling_source`]).
    pub source: Option<SocketAddr>,
    pub leg: LegHandle,
}

/// Receives calls routed to an IVR flow or a queue. `on_call` runs the call to its end.
#[async_trait::async_trait]
pub trait InboundCallHandler: Send + Sync {
    async fn on_call(&self, call: InboundCall);
}

/// Where to place an outbound leg.
#[derive(Debug, Clone)]
pub struct OriginateRequest {
    /// A registered user (`1001`) or a SIP URI (`sip:+15550100@carrier:5060`).
    pub target: Pii<String>,
    /// Number or user shown as the caller.
    pub from_user: Pii<String>,
    pub sdp: Vec<u8>,
    pub ring_timeout: Duration,
}

/// Why a leg could not even be tried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginateError {
    #[error("no such user or no registered contact")]
    NotFound,
    #[error("target is not a SIP URI")]
    BadTarget,
    #[error("the gateway is draining")]
    Draining,
}

/// Takes an inbound INVITE transaction and returns the call for the handler; the leg task runs until
/// the call ends.
/// What call control answers when the caller sent no offer (RFC 3261 §13.3.1.4 late offer): its answer to
/// this placeholder, our address and codec, becomes our offer in the 2xx, and the caller's answer comes in
/// the ACK, handed on as a [`LegEvent::Reoffer`].
const LATE_OFFER_PLACEHOLDER: &str = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";

/// `offer` is the SDP of the INVITE (from its multipart body if so); `None` for a late offer.
pub(crate) fn inbound(
    core: Arc<Core>,
    tx: Transaction,
    target: crate::RouteTarget,
    offer: Option<Vec<u8>>,
) -> InboundCall {
    let invite = tx.original.clone();
    let from = invite
        .from_header()
        .ok()
        .and_then(|f| f.typed().ok())
        .and_then(|f| f.uri.user().map(str::to_string));
    let to = invite.uri.user().map(str::to_string);
    let (commands, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, events) = mpsc::unbounded_channel();
    let call_id = msg::call_id(&invite).unwrap_or_default();
    let late = offer.is_none();
    let offer = offer.unwrap_or_else(|| LATE_OFFER_PLACEHOLDER.as_bytes().to_vec());
    let source = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok());
    let (confirmed_tx, confirmed) = watch::channel(false);
    tokio::spawn(server_leg(
        core,
        tx,
        cmd_rx,
        ev_tx,
        confirmed_tx,
        (!late).then(|| offer.clone()),
    ));
    InboundCall {
        target,
        from: Pii::new(from.unwrap_or_default()),
        to: Pii::new(to.unwrap_or_default()),
        offer,
        source,
        leg: LegHandle {
            call_id,
            commands,
            events,
            signalling: source,
            confirmed,
        },
    }
}

async fn server_leg(
    core: Arc<Core>,
    tx: Transaction,
    mut commands: mpsc::UnboundedReceiver<LegCommand>,
    events: mpsc::UnboundedSender<LegEvent>,
    confirmed: watch::Sender<bool>,
    offer: Option<Vec<u8>>,
) {
    let invite = tx.original.clone();
    let (inputs_tx, mut inputs) = CallInputs::new();
    let our_tag = crate::random_token(12);
    let sender = inputs.own(tx, CALLER_TX);
    b2bua::respond(&sender, msg::response(&core.endpoint, &invite, 100, None, None));
    core.metrics.dialog_up();
    // Ringing until answered or refused.
    let mut answered = false;
    loop {
        tokio::select! {
            input = inputs.recv() => match input {
                Some(CallInput::Tx { msg: Some(SipMessage::Request(r)), .. }) if r.method == Method::Cancel => {
                    b2bua::respond(&sender, msg::response(&core.endpoint, &invite, 487, Some(&our_tag), None));
                    let _ = events.send(LegEvent::Hangup);
                    break;
                }
                Some(CallInput::Tx { msg: None, .. }) | None => {
                    let _ = events.send(LegEvent::Hangup);
                    break;
                }
                Some(_) => {}
            },
            cmd = commands.recv() => match cmd {
                Some(LegCommand::Ringing) => {
                    b2bua::respond(&sender, msg::response(&core.endpoint, &invite, 180, Some(&our_tag), None));
                }
                Some(LegCommand::Answer { sdp, done: ack }) => {
                    let sdp = answer_shaped_like(offer.as_deref(), sdp);
                    let mut ok = msg::response(&core.endpoint, &invite, 200, Some(&our_tag), Some(("application/sdp", sdp)));
                    ok.headers.push(header("Contact", core.contact.clone()));
                    ok.headers.push(header("Allow", msg::ALLOW));
                    core.metrics.response("INVITE", 200);
                    b2bua::respond(&sender, ok);
                    let _ = ack.send(true);
                    answered = true;
                    break;
                }
                Some(LegCommand::Reject(code)) => {
                    core.metrics.response("INVITE", code);
                    b2bua::respond(&sender, msg::response(&core.endpoint, &invite, code, Some(&our_tag), None));
                    break;
                }
                Some(LegCommand::Hangup) | None => {
                    b2bua::respond(&sender, msg::response(&core.endpoint, &invite, 480, Some(&our_tag), None));
                    break;
                }
            }
        }
    }
    if answered {
        let leg = b2bua::caller_leg(&invite, &our_tag);
        established(
            &core,
            leg,
            our_tag.clone(),
            inputs_tx,
            &mut inputs,
            &mut commands,
            &events,
            &confirmed,
            offer.is_none(),
        )
        .await;
    }
    core.metrics.dialog_down();
    // The leg is over for call control; the final response's transaction still absorbs retransmissions.
    drop((commands, events, confirmed));
    inputs.linger().await;
}

/// Our answer as RFC 3264 wants it: one m= line per line of the offer it answers.
fn answer_shaped_like(offer: Option<&[u8]>, answer: Vec<u8>) -> Vec<u8> {
    match (
        offer.and_then(|o| std::str::from_utf8(o).ok()),
        std::str::from_utf8(&answer),
    ) {
        (Some(offer), Ok(text)) => crate::body::mirror_offer(offer, text).into_bytes(),
        _ => answer,
    }
}

/// The dialog phase shared by inbound and outbound legs: in-dialog requests from the peer become
/// events, our hang-up becomes a BYE. Until `confirmed` holds (the ACK of an inbound leg's 2xx), the
/// dialog ends with a BYE after [`ACK_TIMEOUT`]. With `answer_in_ack` (we offered in the 2xx of a
/// late-offer INVITE) the ACK's SDP is handed on as a re-offer; no SDP, or one call control refuses,
/// ends the call with BYE.
#[allow(clippy::too_many_arguments)]
async fn established(
    core: &Arc<Core>,
    mut leg: Leg,
    our_tag: String,
    inputs_tx: mpsc::UnboundedSender<CallInput>,
    inputs: &mut CallInputs,
    commands: &mut mpsc::UnboundedReceiver<LegCommand>,
    events: &mpsc::UnboundedSender<LegEvent>,
    confirmed: &watch::Sender<bool>,
    mut answer_in_ack: bool,
) {
    let key = (leg.call_id.clone(), our_tag);
    core.dialogs.lock().insert(key.clone(), (Side::Caller, inputs_tx));
    let ack_deadline = tokio::time::sleep(ACK_TIMEOUT);
    tokio::pin!(ack_deadline);
    loop {
        let unconfirmed = !*confirmed.borrow();
        tokio::select! {
            input = inputs.recv() => match input {
                Some(CallInput::InDialog { tx, .. }) => {
                    // Call control's answer to a re-offer may take a moment: the transactions go on.
                    if inputs.drive(on_request(core, &mut leg, *tx, events)).await {
                        break;
                    }
                }
                Some(CallInput::Tx { id: CALLER_TX, msg }) if answer_in_ack => {
                    let ack = match msg {
                        Some(SipMessage::Request(r)) if r.method == Method::Ack => Some(r),
                        Some(_) => continue,
                        None => None,
                    };
                    answer_in_ack = false;
                    if ack.is_some() {
                        confirmed.send_replace(true);
                    }
                    if !late_answer_taken(ack, events).await {
                        warn!(call = %leg.call_id, "late offer: no usable answer in the ACK, hanging up");
                        core.metrics.late_answer_refused();
                        if let Some(bye) = leg.request(core, Method::Bye, None) {
                            let core = core.clone();
                            tokio::spawn(async move { let _ = b2bua::send_and_wait(&core, bye).await; });
                        }
                        let _ = events.send(LegEvent::Hangup);
                        break;
                    }
                }
                Some(CallInput::Tx { msg: Some(SipMessage::Request(r)), .. }) if r.method == Method::Ack => {
                    confirmed.send_replace(true);
                }
                Some(CallInput::Tx { .. }) => {}
                None => break,
            },
            _ = &mut ack_deadline, if unconfirmed => {
                warn!(call = %leg.call_id, "no ACK for our 2xx within Timer H: hanging up");
                core.metrics.unacknowledged_invite();
                if let Some(bye) = leg.request(core, Method::Bye, None) {
                    let core = core.clone();
                    tokio::spawn(async move { let _ = b2bua::send_and_wait(&core, bye).await; });
                }
                let _ = events.send(LegEvent::Hangup);
                break;
            }
            cmd = commands.recv() => match cmd {
                Some(LegCommand::Hangup) | None => {
                    if let Some(bye) = leg.request(core, Method::Bye, None) {
                        let core = core.clone();
                        tokio::spawn(async move { let _ = b2bua::send_and_wait(&core, bye).await; });
                    }
                    let _ = events.send(LegEvent::Hangup);
                    break;
                }
                Some(_) => {}
            }
        }
    }
    core.dialogs.lock().remove(&key);
}

/// Hands the ACK's SDP to call control; true when it took it.
async fn late_answer_taken(ack: Option<Request>, events: &mpsc::UnboundedSender<LegEvent>) -> bool {
    let Some(ack) = ack else { return false };
    let sdp = crate::body::offer_of(
        msg::value_of(&ack.headers, "Content-Type").as_deref(),
        msg::value_of(&ack.headers, "Content-Encoding").as_deref(),
        ack.body(),
    );
    let Ok(Some(sdp)) = sdp else { return false };
    let (reply, answer) = oneshot::channel();
    if events.send(LegEvent::Reoffer { sdp, reply }).is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(5), answer).await,
        Ok(Ok(_))
    )
}

/// Returns true when the peer hung up.
async fn on_request(
    core: &Arc<Core>,
    leg: &mut Leg,
    mut tx: Transaction,
    events: &mpsc::UnboundedSender<LegEvent>,
) -> bool {
    let req = tx.original.clone();
    match req.method {
        Method::Refer => {
            on_refer(core, leg, tx, events).await;
            false
        }
        Method::Bye => {
            let _ = tx
                .respond(msg::response(&core.endpoint, &req, 200, None, None))
                .await;
            let _ = events.send(LegEvent::Hangup);
            true
        }
        Method::Invite | Method::Update => {
            let (reply, answer) = oneshot::channel();
            let _ = events.send(LegEvent::Reoffer {
                sdp: req.body().clone(),
                reply,
            });
            let offered = req.body().clone();
            let resp = match tokio::time::timeout(Duration::from_secs(5), answer).await {
                Ok(Ok(sdp)) => {
                    let sdp = answer_shaped_like(Some(&offered), sdp);
                    let mut r =
                        msg::response(&core.endpoint, &req, 200, None, Some(("application/sdp", sdp)));
                    r.headers.push(header("Contact", core.contact.clone()));
                    r
                }
                _ => msg::response(&core.endpoint, &req, 488, None, None),
            };
            let _ = tx.respond(resp).await;
            if req.method == Method::Invite {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(32), async {
                        while let Some(m) = tx.receive().await {
                            if matches!(&m, SipMessage::Request(r) if r.method == Method::Ack) {
                                break;
                            }
                        }
                    })
                    .await;
                });
            }
            false
        }
        _ => {
            let _ = tx
                .respond(msg::response(&core.endpoint, &req, 200, None, None))
                .await;
            false
        }
    }
}

/// A REFER from the peer: 202, the transfer handed to call control, and one NOTIFY with its outcome
/// (the implicit subscription ends with it, RFC 3515 §2.4.5). A REFER without a usable Refer-To gets 400.
async fn on_refer(
    core: &Arc<Core>,
    leg: &mut Leg,
    mut tx: Transaction,
    events: &mpsc::UnboundedSender<LegEvent>,
) {
    let req = tx.original.clone();
    let to = msg::value_of(&req.headers, "Refer-To")
        .and_then(|v| {
            let v = v.trim();
            let inner = match v.split_once('<') {
                Some((_, rest)) => rest.split('>').next().unwrap_or_default(),
                None => v.split(';').next().unwrap_or_default(),
            };
            rsipstack::sip::Uri::try_from(inner).ok()
        })
        .and_then(|uri| uri.user().and_then(crate::uri::unescape))
        .filter(|u| !u.is_empty());
    let Some(to) = to else {
        core.metrics.response("REFER", 400);
        let _ = tx
            .respond(msg::response(&core.endpoint, &req, 400, None, None))
            .await;
        return;
    };
    core.metrics.response("REFER", 202);
    let _ = tx
        .respond(msg::response(&core.endpoint, &req, 202, None, None))
        .await;
    let user = core.config.sip.users.iter().any(|u| u.name == to);
    let (reply, taken) = oneshot::channel();
    let _ = events.send(LegEvent::Refer {
        to: Pii::new(to),
        user,
        reply,
    });
    let taken = matches!(
        tokio::time::timeout(Duration::from_secs(10), taken).await,
        Ok(Ok(true))
    );
    let frag = if taken {
        "SIP/2.0 200 OK\r\n"
    } else {
        "SIP/2.0 603 Declined\r\n"
    };
    if let Some(mut notify) = leg.request(
        core,
        Method::Notify,
        Some(("message/sipfrag;version=2.0".into(), frag.as_bytes().to_vec())),
    ) {
        notify.headers.push(header("Event", "refer"));
        notify
            .headers
            .push(header("Subscription-State", "terminated;reason=noresource"));
        notify.headers.push(header("Contact", core.contact.clone()));
        // Answered before the leg goes on: a blind transfer's BYE must not overtake the NOTIFY.
        let _ = tokio::time::timeout(Duration::from_secs(5), b2bua::send_and_wait(core, notify)).await;
    }
}

/// Places an outbound leg; the handle reports Ringing, then Answered or Failed.
pub(crate) async fn originate(
    core: Arc<Core>,
    request: OriginateRequest,
) -> Result<LegHandle, OriginateError> {
    let target = request.target.expose().clone();
    let (uri, trunk, signalling) = if target.starts_with("sip:") || target.starts_with("sips:") {
        let parsed = rsipstack::sip::Uri::try_from(target.as_str()).map_err(|_| OriginateError::BadTarget)?;
        let trunk = core.trunk_for(&target);
        // A literal IP in the URI is where the peer's signalling comes from; a name is not judged.
        let signalling = parsed
            .host_with_port
            .to_string()
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| {
                let ip = parsed.host_with_port.host.to_string().parse().ok()?;
                Some(SocketAddr::new(ip, 5060))
            });
        (target, trunk, signalling)
    } else {
        let mut bindings = core.locations.lookup(&target, domain::Timestamp::now_utc()).await;
        bindings.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
        let first = bindings.into_iter().next().ok_or(OriginateError::NotFound)?;
        let signalling = first.source.parse::<SocketAddr>().ok();
        (first.contact, None, signalling)
    };
    let late = match &trunk {
        Some(t) => t.late_offer,
        None => core
            .config
            .sip
            .users
            .iter()
            .any(|u| &u.name == request.target.expose() && u.late_offer),
    };
    let invite = build_invite(&core, &uri, &request, late).ok_or(OriginateError::BadTarget)?;
    let (commands, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, events) = mpsc::unbounded_channel();
    let call_id = msg::call_id(&invite).unwrap_or_default();
    let (confirmed_tx, confirmed) = watch::channel(false);
    let runtime = core.signalling.clone();
    runtime.spawn(client_leg(
        core,
        invite,
        trunk,
        late,
        request.ring_timeout,
        cmd_rx,
        ev_tx,
        confirmed_tx,
    ));
    Ok(LegHandle {
        call_id,
        commands,
        events,
        signalling,
        confirmed,
    })
}

/// The INVITE of an outbound leg: with our offer, or without SDP (`late`) for the peer to offer in its 2xx.
fn build_invite(core: &Core, target: &str, request: &OriginateRequest, late: bool) -> Option<Request> {
    let uri = rsipstack::sip::Uri::try_from(target).ok()?;
    let via = core.endpoint.get_via(None, None).ok()?;
    let host = core
        .contact
        .trim_start_matches("<sip:callcenter@")
        .trim_end_matches('>')
        .to_string();
    let mut headers = vec![
        rsipstack::sip::Header::Via(via.into()),
        header("Max-Forwards", "70"),
        header(
            "From",
            format!(
                "<sip:{}@{host}>;tag={}",
                request.from_user.expose(),
                crate::random_token(12)
            ),
        ),
        header("To", format!("<{target}>")),
        header("Call-ID", format!("{}-out", crate::random_token(20))),
        header("CSeq", "1 INVITE"),
        header("Contact", core.contact.clone()),
        header("Allow", msg::ALLOW),
    ];
    if !late {
        headers.push(header("Content-Type", "application/sdp"));
    }
    Some(Request {
        method: Method::Invite,
        uri,
        headers: headers.into(),
        version: rsipstack::sip::Version::V2,
        body: if late { Vec::new() } else { request.sdp.clone() },
    })
}

#[allow(clippy::too_many_arguments)]
async fn client_leg(
    core: Arc<Core>,
    mut invite: Request,
    trunk: Option<TrunkConfig>,
    late: bool,
    ring_timeout: Duration,
    mut commands: mpsc::UnboundedReceiver<LegCommand>,
    events: mpsc::UnboundedSender<LegEvent>,
    confirmed: watch::Sender<bool>,
) {
    let (inputs_tx, mut inputs) = CallInputs::new();
    let mut attempt = 1usize;
    let mut auth_tried = false;
    let mut provisional = false;
    let mut cancel_wanted = false;
    if !send_invite(&core, &invite, attempt, &mut inputs).await {
        let _ = events.send(LegEvent::Failed { code: 503 });
        return;
    }
    let deadline = tokio::time::Instant::now() + ring_timeout;
    let mut ring_timer = std::pin::pin!(tokio::time::sleep_until(deadline));
    let answered: Option<(Leg, Response)> = loop {
        tokio::select! {
            _ = &mut ring_timer, if !cancel_wanted => {
                cancel_wanted = true;
                if provisional { send_cancel(&core, &invite); }
            }
            cmd = commands.recv() => match cmd {
                Some(LegCommand::Hangup) | None if !cancel_wanted => {
                    cancel_wanted = true;
                    if provisional { send_cancel(&core, &invite); }
                }
                _ => {}
            },
            input = inputs.recv() => {
                let Some(CallInput::Tx { id, msg }) = input else { continue };
                if id != attempt { continue; }
                let resp = match msg {
                    Some(SipMessage::Response(r)) => r,
                    Some(_) => continue,
                    None => break None,
                };
                let code = msg::code(&resp);
                match resp.status_code.kind() {
                    StatusCodeKind::Provisional => {
                        if !provisional {
                            provisional = true;
                            if cancel_wanted { send_cancel(&core, &invite); }
                        }
                        if code == 180 || code == 183 { let _ = events.send(LegEvent::Ringing); }
                    }
                    StatusCodeKind::Successful => {
                        match b2bua::callee_leg(&invite, &resp) {
                            Some(leg) => break Some((leg, resp)),
                            None => break None,
                        }
                    }
                    _ if matches!(code, 401 | 407) && !auth_tried && !cancel_wanted => {
                        auth_tried = true;
                        match with_credentials(&core, &invite, &resp, trunk.as_ref()) {
                            Some(next) => {
                                invite = next;
                                attempt += 1;
                                provisional = false;
                                if !send_invite(&core, &invite, attempt, &mut inputs).await { break None; }
                            }
                            None => { let _ = events.send(LegEvent::Failed { code: 403 }); return; }
                        }
                    }
                    _ => {
                        let code = if cancel_wanted && code == 487 { 408 } else { code };
                        let code = if matches!(code, 401 | 407) { 403 } else { code };
                        let _ = events.send(LegEvent::Failed { code });
                        return;
                    }
                }
            }
        }
    };
    let Some((mut leg, resp)) = answered else {
        let _ = events.send(LegEvent::Failed { code: 408 });
        return;
    };
    // The peer's offer when we sent none; our answer to it rides in the ACK.
    let offer = if late && !cancel_wanted {
        late_offer_answered(&resp, &events).await
    } else {
        None
    };
    let our_tag = leg
        .local
        .rsplit_once(";tag=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    // The dialog is known before the ACK leaves: a phone may re-INVITE (hold) the moment it has it.
    let key = (leg.call_id.clone(), our_tag.clone());
    core.dialogs
        .lock()
        .insert(key.clone(), (Side::Caller, inputs_tx.clone()));
    let ack_body = offer
        .as_ref()
        .map(|(_, answer)| ("application/sdp", answer.clone()));
    b2bua::ack_2xx(&core, &invite, &resp, ack_body).await;
    if cancel_wanted || (late && offer.is_none()) {
        core.dialogs.lock().remove(&key);
        // Answered as we gave up, or a late offer we cannot answer: hang that one up at once.
        if late && !cancel_wanted {
            warn!(call = %leg.call_id, "late offer: no usable offer in the 2xx, hanging up");
        }
        if let Some(bye) = leg.request(&core, Method::Bye, None) {
            let _ = b2bua::send_and_wait(&core, bye).await;
        }
        let code = if cancel_wanted { 408 } else { 488 };
        let _ = events.send(LegEvent::Failed { code });
        return;
    }
    core.metrics.dialog_up();
    // We acknowledge the 2xx ourselves: the dialog is confirmed as the answer arrives.
    confirmed.send_replace(true);
    let sdp = match offer {
        Some((offer, _)) => offer,
        None => resp.body().clone(),
    };
    let _ = events.send(LegEvent::Answered { sdp });
    debug!(call = %leg.call_id, "outbound leg answered");
    established(
        &core,
        leg,
        our_tag,
        inputs_tx,
        &mut inputs,
        &mut commands,
        &events,
        &confirmed,
        false,
    )
    .await;
    core.metrics.dialog_down();
}

/// A late offer's 2xx: its SDP (the body's SDP part), handed to call control as a [`LegEvent::Reoffer`];
/// the offer and call control's answer shaped line for line like it, or None (no SDP, or refused).
async fn late_offer_answered(
    ok: &Response,
    events: &mpsc::UnboundedSender<LegEvent>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let offer = crate::body::offer_of(
        msg::value_of(&ok.headers, "Content-Type").as_deref(),
        msg::value_of(&ok.headers, "Content-Encoding").as_deref(),
        ok.body(),
    )
    .ok()
    .flatten()?;
    let (reply, answer) = oneshot::channel();
    events
        .send(LegEvent::Reoffer {
            sdp: offer.clone(),
            reply,
        })
        .ok()?;
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .ok()?
        .ok()?;
    let answer = answer_shaped_like(Some(&offer), answer);
    Some((offer, answer))
}

async fn send_invite(core: &Arc<Core>, invite: &Request, id: usize, inputs: &mut CallInputs) -> bool {
    let Ok(key) = TransactionKey::from_request(invite, TransactionRole::Client) else {
        return false;
    };
    let mut tx = Transaction::new_client(key, invite.clone(), core.endpoint.clone(), None);
    if let Err(e) = tx.send().await {
        warn!(error = %e, "could not send INVITE");
    }
    inputs.own(tx, id);
    true
}

fn send_cancel(core: &Arc<Core>, invite: &Request) {
    if let Some(cancel) = b2bua::cancel_for(invite) {
        let core = core.clone();
        tokio::spawn(async move {
            let _ = b2bua::send_and_wait(&core, cancel).await;
        });
    }
}

fn with_credentials(
    core: &Core,
    invite: &Request,
    resp: &Response,
    trunk: Option<&TrunkConfig>,
) -> Option<Request> {
    let trunk = trunk?;
    let (user, password) = (trunk.username.as_ref()?, trunk.password.as_ref()?);
    let (challenge_name, answer_name) = if msg::code(resp) == 407 {
        ("Proxy-Authenticate", "Proxy-Authorization")
    } else {
        ("WWW-Authenticate", "Authorization")
    };
    let challenge = msg::value_of(&resp.headers, challenge_name)?;
    let answer = crate::digest::answer_challenge(
        &challenge,
        "INVITE",
        &invite.uri.to_string(),
        user,
        password,
        &crate::random_token(16),
    )?;
    let mut next = invite.clone();
    next.headers.retain(|h| {
        !matches!(
            h,
            rsipstack::sip::Header::Via(_) | rsipstack::sip::Header::CSeq(_)
        ) && !h.name().eq_ignore_ascii_case(answer_name)
    });
    let via = core.endpoint.get_via(None, None).ok()?;
    next.headers.push_front(rsipstack::sip::Header::Via(via.into()));
    next.headers.push(header("CSeq", "2 INVITE"));
    next.headers.push(header(answer_name, answer));
    Some(next)
}
