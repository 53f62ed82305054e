//! The back-to-back user agent: one task per call joins the caller's leg (our UAS side) and the
//! callee's leg (our UAC side, possibly forked to several contacts), relays provisional and final
//! responses, CANCEL, BYE from either side and in-dialog requests such as re-INVITE (hold/unhold).
//!
//! The call task owns its SIP transactions and polls them itself ([`crate::inputs::CallInputs`]),
//! together with the channel that brings it in-dialog requests.

use crate::Core;
use crate::config::TrunkConfig;
use crate::inputs::CallInputs;
use crate::media::Side;
use crate::msg::{self, header};
use rsipstack::sip::prelude::*;
use rsipstack::sip::{Method, Request, Response, SipMessage, StatusCodeKind};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::{Transaction, TransactionEvent, TransactionEventSender};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Identifies a transaction within one call: 0 is the caller's INVITE, 1.. are branches.
pub(crate) type TxId = usize;
pub(crate) const CALLER_TX: TxId = 0;

/// Input of a call task.
// A SIP message is a few hundred bytes; it moves once through the channel, where a box would cost an
// allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum CallInput {
    Tx { id: TxId, msg: Option<SipMessage> },
    InDialog { side: Side, tx: Box<Transaction> },
}

/// One side of an established dialog, as we see it.
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub(crate) call_id: String,
    /// Our From/To header value including our tag.
    pub(crate) local: String,
    /// The peer's header value including its tag.
    remote: String,
    remote_target: String,
    route_set: Vec<String>,
    cseq: u32,
}

impl Leg {
    pub(crate) fn request(
        &mut self,
        core: &Core,
        method: Method,
        body: Option<(String, Vec<u8>)>,
    ) -> Option<Request> {
        self.cseq += 1;
        let uri = rsipstack::sip::Uri::try_from(self.remote_target.as_str()).ok()?;
        let via = core.endpoint.get_via(None, None).ok()?;
        let mut headers = vec![
            rsipstack::sip::Header::Via(via.into()),
            header("Max-Forwards", "70"),
            header("From", self.local.clone()),
            header("To", self.remote.clone()),
            header("Call-ID", self.call_id.clone()),
            header("CSeq", format!("{} {}", self.cseq, method)),
        ];
        for r in &self.route_set {
            headers.push(header("Route", r.clone()));
        }
        if method == Method::Invite {
            headers.push(header("Contact", core.contact.clone()));
        }
        let mut req = Request {
            method,
            uri,
            headers: headers.into(),
            version: rsipstack::sip::Version::V2,
            body: Vec::new(),
        };
        if let Some((ct, b)) = body {
            req.headers.push(header("Content-Type", ct));
            req.body = b;
        }
        Some(req)
    }
}

/// Sends a request in its own client transaction and waits for the final response; a 2xx to an
/// INVITE (a re-INVITE) is acknowledged here.
pub(crate) async fn send_and_wait(core: &Core, req: Request) -> Option<Response> {
    let key = TransactionKey::from_request(&req, TransactionRole::Client).ok()?;
    let invite = (req.method == Method::Invite).then(|| req.clone());
    let mut tx = Transaction::new_client(key, req, core.endpoint.clone(), None);
    tx.send().await.ok()?;
    let wait = async {
        while let Some(m) = tx.receive().await {
            if let SipMessage::Response(r) = m
                && r.status_code.kind() != StatusCodeKind::Provisional
            {
                return Some(r);
            }
        }
        None
    };
    let resp = tokio::time::timeout(Duration::from_secs(40), wait)
        .await
        .ok()
        .flatten();
    if let (Some(invite), Some(ok)) = (&invite, &resp)
        && ok.status_code.kind() == StatusCodeKind::Successful
    {
        ack_2xx(core, invite, ok, None).await;
    }
    resp
}

/// Acknowledges a 2xx to `invite`, with `body` (a late offer's answer) when given. The stack leaves
/// 2xx ACKs to us (`auto_ack_2xx` off) so that one can carry an answer (RFC 3261 §13.2.2.4, §13.3.1.4).
/// The stack builds it from the INVITE and the 2xx (remote target, route set, credentials). The ACK
/// of a 2xx is no transaction (RFC 3261 §17.1.1.3): it is sent once, straight to the transport.
/// A retransmitted 2xx (our ACK lost on UDP) finds no transaction and is not acknowledged again; the peer
/// then gives up the dialog after 64 × T1 with a BYE, which ends the leg.
pub(crate) async fn ack_2xx(core: &Core, invite: &Request, ok: &Response, body: Option<(&str, Vec<u8>)>) {
    let mut ack = match core.endpoint.make_ack(invite, ok) {
        Ok(ack) => ack,
        Err(e) => {
            warn!(error = %e, "could not build the ACK of a 2xx");
            return;
        }
    };
    if let Some((content_type, body)) = body {
        ack.headers.push(header("Content-Type", content_type));
        ack.body = body;
    }
    ack.headers.unique_push(rsipstack::sip::Header::ContentLength(
        (ack.body.len() as u32).into(),
    ));
    let mut target = match rsipstack::transport::SipAddr::try_from(&ack.destination()) {
        Ok(target) => target,
        Err(e) => {
            warn!(error = %e, "no destination for the ACK of a 2xx");
            return;
        }
    };
    // `sips:` means TLS even without `;transport=tls`, on 5061 by default (RFC 3261 §26.2.2-3).
    if target.r#type.is_none() && ack.uri.scheme == Some(rsipstack::sip::Scheme::Sips) {
        target.r#type = Some(rsipstack::sip::transport::Transport::Tls);
    }
    if target.r#type == Some(rsipstack::sip::transport::Transport::Tls) && target.addr.port.is_none() {
        target.addr.port = Some(5061.into());
    }
    let sent = match core.endpoint.transport_layer.lookup(&target, None).await {
        Ok((connection, address)) => connection.send(ack.into(), Some(&address)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        warn!(error = %e, "could not send the ACK of a 2xx");
    }
}

fn is_sdp_or_multipart(content_type: &str) -> bool {
    let media = crate::body::media_type(content_type);
    media == "application/sdp" || media.starts_with("multipart/")
}

pub(crate) fn respond(sender: &TransactionEventSender, resp: Response) {
    let _ = sender.send(TransactionEvent::Respond(resp));
}

pub(crate) fn body_of(m: &impl HeadersExt, body: &[u8]) -> Option<(String, Vec<u8>)> {
    if body.is_empty() {
        return None;
    }
    let ct = msg::value_of(m.headers(), "Content-Type").unwrap_or_else(|| "application/sdp".into());
    Some((ct, body.to_vec()))
}

struct Branch {
    invite: Request,
    trunk: Option<TrunkConfig>,
    provisional_seen: bool,
    cancel_pending: bool,
    finished: bool,
    auth_tried: bool,
}

/// What a call is doing.
#[derive(PartialEq, Eq, Debug)]
enum Phase {
    Ringing,
    Cancelled,
    Established,
}

/// Everything one call task owns.
struct Call {
    core: Arc<Core>,
    id: String,
    inputs_tx: mpsc::UnboundedSender<CallInput>,
    /// Client transactions started since the loop last took them into its [`CallInputs`].
    started: Vec<(TxId, Transaction)>,
    caller_invite: Request,
    caller_sender: TransactionEventSender,
    our_tag: String,
    branches: Vec<Branch>,
    phase: Phase,
    best_failure: Option<u16>,
    relayed_provisional: Option<u16>,
    caller: Option<Leg>,
    callee: Option<Leg>,
    /// The winning branch's dialog key, registered for the callee side.
    callee_key: Option<(String, String)>,
    /// Where the caller's INVITE came from (the NAT rule of the media leg facing the caller).
    caller_source: Option<std::net::SocketAddr>,
    /// The caller acknowledged our 2xx: until then the call ends when that transaction does (Timer H).
    caller_acked: bool,
    /// The caller's INVITE came without an offer (RFC 3261 §13.2.1 late offer): the callee offers in
    /// its 2xx, the caller answers in its ACK, and that answer rides in our ACK to the callee.
    late_offer: bool,
    /// The callee's 2xx (and the INVITE it answers) waiting for the caller's ACK to bring the answer.
    callee_ack_pending: Option<(Request, Response)>,
}

/// Takes the caller's INVITE transaction and bridges it to `targets`. Returns when the call is over,
/// with its transactions, which the caller lets [`CallInputs::linger`].
pub(crate) async fn run_call(
    core: Arc<Core>,
    tx: Transaction,
    targets: Vec<(String, Option<TrunkConfig>)>,
) -> CallInputs {
    let caller_invite = tx.original.clone();
    let (inputs_tx, mut inputs) = CallInputs::new();
    let call_id = msg::call_id(&caller_invite).unwrap_or_default();
    let our_tag = crate::random_token(12);
    let caller_source = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok());
    let caller_sender = inputs.own(tx, CALLER_TX);
    respond(
        &caller_sender,
        msg::response(&core.endpoint, &caller_invite, 100, None, None),
    );

    let mut call = Call {
        core: core.clone(),
        id: call_id.clone(),
        inputs_tx,
        started: Vec::new(),
        caller_invite,
        caller_sender,
        our_tag,
        branches: Vec::new(),
        phase: Phase::Ringing,
        best_failure: None,
        relayed_provisional: None,
        caller: None,
        callee: None,
        callee_key: None,
        caller_source,
        caller_acked: false,
        late_offer: false,
        callee_ack_pending: None,
    };
    core.metrics.dialog_up();
    call.start_branches(targets).await;
    call.hand_over_started(&mut inputs);
    let ring_deadline = tokio::time::Instant::now() + Duration::from_secs(core.config.sip.ring_timeout_secs);
    let mut ring_timer = std::pin::pin!(tokio::time::sleep_until(ring_deadline));

    loop {
        let input = tokio::select! {
            i = inputs.recv() => match i { Some(i) => i, None => break },
            _ = &mut ring_timer, if call.phase == Phase::Ringing => {
                info!(call = %call.id, "no answer before the ring timeout");
                call.give_up(480).await;
                continue;
            }
        };
        match input {
            CallInput::Tx { id: CALLER_TX, msg } => {
                if call.on_caller_tx(msg).await {
                    break;
                }
            }
            CallInput::Tx { id, msg } => {
                if call.on_branch(id, msg).await {
                    break;
                }
            }
            CallInput::InDialog { side, tx } => {
                if call.on_in_dialog(side, *tx, &mut inputs).await {
                    break;
                }
            }
        }
        call.hand_over_started(&mut inputs);
    }
    call.finish().await;
    inputs
}

impl Call {
    /// The loop takes the client transactions the last input started into the call's inputs.
    fn hand_over_started(&mut self, inputs: &mut CallInputs) {
        for (id, tx) in self.started.drain(..) {
            inputs.own(tx, id);
        }
    }

    async fn start_branches(&mut self, targets: Vec<(String, Option<TrunkConfig>)>) {
        let sdp = body_of(&self.caller_invite, self.caller_invite.body());
        self.late_offer = sdp.is_none();
        let sdp = match sdp {
            Some((ct, b)) if is_sdp_or_multipart(&ct) => {
                // A multipart body (SDP with ISUP, RFC 5621) goes on whole, its SDP part anchored.
                let offer = crate::body::offer_of(Some(&ct), None, &b).ok().flatten();
                let anchored = match offer {
                    Some(offer) => self.core.media.offer(&self.id, Side::Caller, &offer).await,
                    None => Ok(Vec::new()),
                };
                let anchored = anchored.and_then(|sdp| {
                    if crate::body::media_type(&ct) == "application/sdp" || sdp.is_empty() {
                        Ok(if sdp.is_empty() { b.clone() } else { sdp })
                    } else {
                        crate::body::replace_sdp(&ct, &b, &sdp)
                            .map_err(|e| crate::media::MediaError::Other(e.to_string()))
                    }
                });
                match anchored {
                    Ok(b) => {
                        if let Some(source) = self.caller_source {
                            self.core
                                .media
                                .signalling_source(&self.id, Side::Caller, source)
                                .await;
                        }
                        Some((ct, b))
                    }
                    Err(e) => {
                        warn!(call = %self.id, error = %e, "media refused the offer");
                        // Out of ports is overload (503, try again later); a bad offer is 488.
                        let code = if matches!(e, crate::media::MediaError::Exhausted) {
                            503
                        } else {
                            488
                        };
                        self.final_to_caller(code, None);
                        return;
                    }
                }
            }
            other => other,
        };
        for (target, trunk) in targets {
            if let Some(invite) = self.build_branch_invite(&target, sdp.clone()) {
                self.send_branch(invite, trunk).await;
            }
        }
        if self.branches.is_empty() {
            self.final_to_caller(500, None);
        }
    }

    fn build_branch_invite(&self, target: &str, sdp: Option<(String, Vec<u8>)>) -> Option<Request> {
        let uri = rsipstack::sip::Uri::try_from(target).ok()?;
        let via = self.core.endpoint.get_via(None, None).ok()?;
        let from = self.caller_invite.from_header().ok()?.typed().ok()?;
        let from_value = format!(
            "{}<{}>;tag={}",
            from.display_name.map(|d| format!("\"{d}\" ")).unwrap_or_default(),
            from.uri,
            crate::random_token(12)
        );
        let to_value = match self.caller_invite.to_header().ok().and_then(|t| t.typed().ok()) {
            Some(to) => format!("<{}>", to.uri),
            None => format!("<{target}>"),
        };
        let max_forwards = self
            .caller_invite
            .max_forwards_header()
            .ok()
            .and_then(|m| m.value().trim().parse::<u32>().ok())
            .unwrap_or(70)
            .saturating_sub(1)
            .max(1);
        let mut headers = vec![
            rsipstack::sip::Header::Via(via.into()),
            header("Max-Forwards", max_forwards.to_string()),
            header("From", from_value),
            header("To", to_value),
            header("Call-ID", format!("{}-b2b", crate::random_token(20))),
            header("CSeq", "1 INVITE"),
            header("Contact", self.core.contact.clone()),
            header("Allow", msg::ALLOW),
        ];
        let mut body = Vec::new();
        if let Some((ct, b)) = sdp {
            headers.push(header("Content-Type", ct));
            body = b;
        }
        Some(Request {
            method: Method::Invite,
            uri,
            headers: headers.into(),
            version: rsipstack::sip::Version::V2,
            body,
        })
    }

    async fn send_branch(&mut self, invite: Request, trunk: Option<TrunkConfig>) {
        let Ok(key) = TransactionKey::from_request(&invite, TransactionRole::Client) else {
            return;
        };
        let mut tx = Transaction::new_client(key, invite.clone(), self.core.endpoint.clone(), None);
        if let Err(e) = tx.send().await {
            warn!(call = %self.id, error = %e, "could not send INVITE to the callee");
        }
        let id = self.branches.len() + 1;
        self.started.push((id, tx));
        self.branches.push(Branch {
            invite,
            trunk,
            provisional_seen: false,
            cancel_pending: false,
            finished: false,
            auth_tried: false,
        });
    }

    fn final_to_caller(&mut self, code: u16, extra: Option<Vec<rsipstack::sip::Header>>) {
        let mut resp = msg::response(
            &self.core.endpoint,
            &self.caller_invite,
            code,
            Some(&self.our_tag),
            None,
        );
        if let Some(extra) = extra {
            resp.headers.extend(extra);
        }
        self.core.metrics.response("INVITE", code);
        respond(&self.caller_sender, resp);
    }

    /// Cancels every branch still ringing and answers the caller with `code`.
    async fn give_up(&mut self, code: u16) {
        if self.phase != Phase::Ringing {
            return;
        }
        self.phase = Phase::Cancelled;
        self.final_to_caller(code, None);
        for i in 0..self.branches.len() {
            self.cancel_branch(i).await;
        }
    }

    async fn cancel_branch(&mut self, i: usize) {
        let Some(b) = self.branches.get_mut(i) else { return };
        if b.finished {
            return;
        }
        if !b.provisional_seen {
            // RFC 3261 §9.1: no CANCEL before a provisional response; send it when one arrives.
            b.cancel_pending = true;
            return;
        }
        let Some(cancel) = cancel_for(&b.invite) else {
            return;
        };
        let core = self.core.clone();
        tokio::spawn(async move {
            let _ = send_and_wait(&core, cancel).await;
        });
    }

    /// Returns true when the call is over.
    async fn on_caller_tx(&mut self, msg: Option<SipMessage>) -> bool {
        match msg {
            Some(SipMessage::Request(r)) if r.method == Method::Cancel => {
                info!(call = %self.id, "caller cancelled");
                self.give_up(487).await;
                self.all_branches_finished()
            }
            Some(SipMessage::Request(r)) if r.method == Method::Ack => {
                if !self.caller_acked {
                    self.caller_acked = true;
                    if self.callee_ack_pending.is_some() && !self.complete_late_offer(&r).await {
                        self.bye_both();
                        return true;
                    }
                    self.core.media.confirmed(&self.id, Side::Caller).await;
                }
                false
            }
            Some(_) => false,
            // The caller's transaction ended (Timer L, 64 × T1) without acknowledging our 2xx: the
            // dialog never came up (RFC 3261 Timer H); hang both sides up.
            None if self.phase == Phase::Established && !self.caller_acked => {
                warn!(call = %self.id, "no ACK from the caller within Timer H: hanging up");
                self.core.metrics.unacknowledged_invite();
                self.ack_pending_callee(None).await;
                self.bye_both();
                true
            }
            // The caller's transaction ended: fine once established, fatal before.
            None => self.phase != Phase::Established && self.all_branches_finished(),
        }
    }

    fn all_branches_finished(&self) -> bool {
        self.branches.iter().all(|b| b.finished)
    }

    async fn on_branch(&mut self, id: TxId, msg: Option<SipMessage>) -> bool {
        let i = id - 1;
        let resp = match msg {
            Some(SipMessage::Response(r)) => r,
            Some(_) => return false,
            None => {
                if let Some(b) = self.branches.get_mut(i)
                    && !b.finished
                {
                    b.finished = true;
                    self.best_failure.get_or_insert(408);
                }
                return self.after_branch_failure().await;
            }
        };
        let code = msg::code(&resp);
        match resp.status_code.kind() {
            StatusCodeKind::Provisional => {
                let mut send_cancel = false;
                if let Some(b) = self.branches.get_mut(i) {
                    b.provisional_seen = true;
                    send_cancel = std::mem::take(&mut b.cancel_pending);
                }
                if send_cancel {
                    self.cancel_branch(i).await;
                }
                if self.phase == Phase::Ringing && code != 100 && self.relayed_provisional != Some(code) {
                    self.relayed_provisional = Some(code);
                    let body = match body_of(&resp, resp.body()) {
                        Some((ct, b)) => match self.core.media.answer(&self.id, Side::Callee, &b).await {
                            Ok(b) => Some((ct, b)),
                            Err(_) => None,
                        },
                        None => None,
                    };
                    let r = msg::response(
                        &self.core.endpoint,
                        &self.caller_invite,
                        code,
                        Some(&self.our_tag),
                        body.as_ref().map(|(ct, b)| (ct.as_str(), b.clone())),
                    );
                    respond(&self.caller_sender, r);
                }
                false
            }
            StatusCodeKind::Successful => {
                if let Some(b) = self.branches.get_mut(i) {
                    b.finished = true;
                }
                let leg = self.branches.get(i).and_then(|b| callee_leg(&b.invite, &resp));
                let wins = self.phase == Phase::Ringing && self.callee.is_none() && leg.is_some();
                if let Some(b) = self.branches.get(i) {
                    if wins && self.late_offer && body_of(&resp, resp.body()).is_some() {
                        // Its offer goes to the caller; our ACK waits for the caller's answer.
                        self.callee_ack_pending = Some((b.invite.clone(), resp.clone()));
                    } else {
                        // Every other 2xx is acknowledged at once, also one we hang up at once.
                        ack_2xx(&self.core, &b.invite, &resp, None).await;
                    }
                }
                if self.phase != Phase::Ringing || self.callee.is_some() {
                    // Answered too late (cancelled, or another contact won): hang that one up.
                    if let Some(mut leg) = leg {
                        let core = self.core.clone();
                        tokio::spawn(async move {
                            if let Some(bye) = leg.request(&core, Method::Bye, None) {
                                let _ = send_and_wait(&core, bye).await;
                            }
                        });
                    }
                    return self.phase == Phase::Cancelled && self.all_branches_finished();
                }
                let Some(leg) = leg else {
                    warn!(call = %self.id, "2xx without a usable Contact");
                    self.give_up(502).await;
                    return false;
                };
                self.answered(i, leg, resp).await;
                // Refused media ends the call at once.
                self.phase == Phase::Cancelled && self.all_branches_finished()
            }
            _ => {
                let auth = matches!(code, 401 | 407);
                if auth && self.retry_with_credentials(i, &resp).await {
                    return false;
                }
                if let Some(b) = self.branches.get_mut(i) {
                    b.finished = true;
                }
                self.best_failure = Some(better_failure(self.best_failure, code));
                self.after_branch_failure().await
            }
        }
    }

    async fn retry_with_credentials(&mut self, i: usize, resp: &Response) -> bool {
        let Some(b) = self.branches.get_mut(i) else {
            return false;
        };
        let Some(trunk) = b.trunk.clone() else {
            return false;
        };
        let (Some(user), Some(password)) = (trunk.username.clone(), trunk.password.clone()) else {
            return false;
        };
        if b.auth_tried {
            return false;
        }
        let (challenge_name, answer_name) = if msg::code(resp) == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let Some(challenge) = msg::value_of(&resp.headers, challenge_name) else {
            return false;
        };
        let uri = b.invite.uri.to_string();
        let Some(answer) = crate::digest::answer_challenge(
            &challenge,
            "INVITE",
            &uri,
            &user,
            &password,
            &crate::random_token(16),
        ) else {
            return false;
        };
        b.auth_tried = true;
        b.finished = true;
        let mut invite = b.invite.clone();
        invite.headers.retain(|h| {
            !matches!(
                h,
                rsipstack::sip::Header::Via(_) | rsipstack::sip::Header::CSeq(_)
            ) && !h.name().eq_ignore_ascii_case(answer_name)
        });
        let Ok(via) = self.core.endpoint.get_via(None, None) else {
            return false;
        };
        invite.headers.push_front(rsipstack::sip::Header::Via(via.into()));
        invite.headers.push(header("CSeq", "2 INVITE"));
        invite.headers.push(header(answer_name, answer));
        self.send_branch(invite, Some(trunk)).await;
        if let Some(last) = self.branches.last_mut() {
            last.auth_tried = true;
        }
        true
    }

    async fn after_branch_failure(&mut self) -> bool {
        if !self.all_branches_finished() {
            return false;
        }
        match self.phase {
            Phase::Ringing => {
                let code = self.best_failure.unwrap_or(480);
                // Never relay a callee's challenge to our caller: the callee's credentials are not theirs.
                let code = if matches!(code, 401 | 407) { 403 } else { code };
                self.phase = Phase::Cancelled;
                self.final_to_caller(code, None);
                true
            }
            Phase::Cancelled => true,
            Phase::Established => false,
        }
    }

    async fn answered(&mut self, i: usize, callee: Leg, resp: Response) {
        for j in 0..self.branches.len() {
            if j != i {
                self.cancel_branch(j).await;
            }
        }
        let body = match body_of(&resp, resp.body()) {
            // A late offer: the callee's 2xx offers; the caller gets our offer facing them.
            Some((ct, b)) if self.late_offer && ct.eq_ignore_ascii_case("application/sdp") => {
                match self.core.media.offer(&self.id, Side::Callee, &b).await {
                    Ok(ours) => Some((ct, ours)),
                    Err(e) => {
                        warn!(call = %self.id, error = %e, "media refused the callee's offer");
                        self.ack_pending_callee(None).await;
                        self.refuse_answered(callee, &e);
                        return;
                    }
                }
            }
            Some((ct, b)) if ct.eq_ignore_ascii_case("application/sdp") => {
                match self.core.media.answer(&self.id, Side::Callee, &b).await {
                    Ok(b) => {
                        // We acknowledge the callee's 2xx ourselves.
                        self.core.media.confirmed(&self.id, Side::Callee).await;
                        // One m= line per line the caller offered (RFC 3264 §6).
                        let offer = crate::body::offer_of(
                            msg::value_of(&self.caller_invite.headers, "Content-Type").as_deref(),
                            None,
                            self.caller_invite.body(),
                        );
                        let b = match (offer, std::str::from_utf8(&b)) {
                            (Ok(Some(offer)), Ok(text)) => {
                                crate::body::mirror_offer(&String::from_utf8_lossy(&offer), text).into_bytes()
                            }
                            _ => b,
                        };
                        Some((ct, b))
                    }
                    Err(e) => {
                        // Never pass the callee's own SDP on: media would bypass us. Hang it up.
                        warn!(call = %self.id, error = %e, "media refused the answer");
                        self.refuse_answered(callee, &e);
                        return;
                    }
                }
            }
            other => other,
        };
        let mut ok = msg::response(
            &self.core.endpoint,
            &self.caller_invite,
            200,
            Some(&self.our_tag),
            body.as_ref().map(|(ct, b)| (ct.as_str(), b.clone())),
        );
        ok.headers.push(header("Contact", self.core.contact.clone()));
        ok.headers.push(header("Allow", msg::ALLOW));
        self.core.metrics.response("INVITE", 200);
        respond(&self.caller_sender, ok);

        let caller = caller_leg(&self.caller_invite, &self.our_tag);
        let caller_key = (caller.call_id.clone(), self.our_tag.clone());
        let callee_tag = callee
            .local
            .rsplit_once(";tag=")
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        let callee_key = (callee.call_id.clone(), callee_tag);
        self.core
            .dialogs
            .lock()
            .insert(caller_key, (Side::Caller, self.inputs_tx.clone()));
        self.core
            .dialogs
            .lock()
            .insert(callee_key.clone(), (Side::Callee, self.inputs_tx.clone()));
        self.callee_key = Some(callee_key);
        self.caller = Some(caller);
        self.callee = Some(callee);
        self.phase = Phase::Established;
        info!(call = %self.id, "call established");
    }

    /// The callee answered with media we cannot use: hang it up, and refuse the caller (503 when out
    /// of ports, else 488).
    fn refuse_answered(&mut self, callee: Leg, e: &crate::media::MediaError) {
        let code = if matches!(e, crate::media::MediaError::Exhausted) {
            503
        } else {
            488
        };
        let mut callee = callee;
        if let Some(bye) = callee.request(&self.core, Method::Bye, None) {
            let core = self.core.clone();
            tokio::spawn(async move {
                let _ = send_and_wait(&core, bye).await;
            });
        }
        self.phase = Phase::Cancelled;
        self.final_to_caller(code, None);
    }

    /// Acknowledges the callee's 2xx held for a late offer, with our answer when there is one.
    async fn ack_pending_callee(&mut self, answer: Option<Vec<u8>>) {
        if let Some((invite, ok)) = self.callee_ack_pending.take() {
            let body = answer.as_ref().map(|a| ("application/sdp", a.clone()));
            ack_2xx(&self.core, &invite, &ok, body).await;
        }
    }

    /// The caller's ACK of a late offer: its answer, through the media anchor, rides in our ACK to
    /// the callee. Returns false when there is no usable answer (the call must end).
    async fn complete_late_offer(&mut self, ack: &Request) -> bool {
        let answer = match body_of(ack, ack.body()) {
            Some((ct, b)) if ct.eq_ignore_ascii_case("application/sdp") => {
                self.core.media.answer(&self.id, Side::Caller, &b).await.ok()
            }
            _ => None,
        };
        let usable = answer.is_some();
        self.ack_pending_callee(answer).await;
        if usable {
            self.core.media.confirmed(&self.id, Side::Callee).await;
        } else {
            warn!(call = %self.id, "the caller's ACK brought no usable answer to the late offer: hanging up");
        }
        usable
    }

    /// Hangs both legs up (BYE), the call being established.
    fn bye_both(&mut self) {
        for leg in [self.caller.as_mut(), self.callee.as_mut()].into_iter().flatten() {
            if let Some(bye) = leg.request(&self.core, Method::Bye, None) {
                let core = self.core.clone();
                tokio::spawn(async move {
                    let _ = send_and_wait(&core, bye).await;
                });
            }
        }
    }

    /// A request inside one of our dialogs. Returns true when the call is over.
    async fn on_in_dialog(&mut self, side: Side, mut tx: Transaction, inputs: &mut CallInputs) -> bool {
        let req = tx.original.clone();
        let (Some(caller), Some(callee)) = (self.caller.as_mut(), self.callee.as_mut()) else {
            let _ = tx
                .reply(rsipstack::sip::StatusCode::CallTransactionDoesNotExist)
                .await;
            return false;
        };
        let (from_leg, to_leg) = match side {
            Side::Caller => (caller, callee),
            Side::Callee => (callee, caller),
        };
        // Requests from the peer carry its CSeq; keep it so our own numbering in that dialog stays ahead.
        let _ = from_leg;
        let method = req.method;
        if method == Method::Bye {
            let ok = msg::response(&self.core.endpoint, &req, 200, None, None);
            let _ = tx.respond(ok).await;
            self.core.metrics.response("BYE", 200);
            info!(call = %self.id, ?side, "hangup");
            if let Some(bye) = to_leg.request(&self.core, Method::Bye, None) {
                let core = self.core.clone();
                tokio::spawn(async move {
                    let _ = send_and_wait(&core, bye).await;
                });
            }
            return true;
        }
        // Relay anything else (re-INVITE for hold/unhold, INFO, UPDATE) and bring the answer back.
        let mut body = body_of(&req, req.body());
        if (method == Method::Invite || method == Method::Update)
            && let Some((ct, b)) = body.take()
        {
            match self.core.media.offer(&self.id, side, &b).await {
                Ok(b) => body = Some((ct, b)),
                Err(e) => {
                    debug!(call = %self.id, error = %e, "re-offer refused");
                    let _ = tx
                        .respond(msg::response(&self.core.endpoint, &req, 488, None, None))
                        .await;
                    return false;
                }
            }
        }
        let Some(out) = to_leg.request(&self.core, method, body) else {
            let _ = tx.reply(rsipstack::sip::StatusCode::ServerInternalError).await;
            return false;
        };
        // The answer may take a while (a person at the other end): the call's transactions go on.
        let answer = inputs.drive(send_and_wait(&self.core, out)).await;
        let (code, body) = match answer {
            Some(r) => {
                let code = msg::code(&r);
                let mut body = body_of(&r, r.body());
                if code < 300
                    && let Some((ct, b)) = body.take()
                {
                    let other = if side == Side::Caller {
                        Side::Callee
                    } else {
                        Side::Caller
                    };
                    match self.core.media.answer(&self.id, other, &b).await {
                        Ok(b) => body = Some((ct, b)),
                        Err(e) => {
                            debug!(call = %self.id, error = %e, "re-answer refused");
                            let _ = tx
                                .respond(msg::response(&self.core.endpoint, &req, 488, None, None))
                                .await;
                            return false;
                        }
                    }
                }
                (code, body)
            }
            None => (408, None),
        };
        let mut resp = msg::response(
            &self.core.endpoint,
            &req,
            code,
            None,
            body.as_ref().map(|(c, b)| (c.as_str(), b.clone())),
        );
        if method == Method::Invite {
            resp.headers.push(header("Contact", self.core.contact.clone()));
        }
        debug!(call = %self.id, ?side, %method, code, "relayed in-dialog request");
        let _ = tx.respond(resp).await;
        if method == Method::Invite && code < 300 {
            // Keep the server transaction alive until the ACK so the 2xx is retransmitted if lost.
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

    async fn finish(&mut self) {
        if let Some(caller) = &self.caller {
            self.core
                .dialogs
                .lock()
                .remove(&(caller.call_id.clone(), self.our_tag.clone()));
        }
        if let Some(key) = self.callee_key.take() {
            self.core.dialogs.lock().remove(&key);
        }
        self.core.media.release(&self.id).await;
        self.core.metrics.dialog_down();
    }
}

/// The CANCEL for a client INVITE: same Request-URI, top Via (branch), From, To, Call-ID, Route.
pub(crate) fn cancel_for(invite: &Request) -> Option<Request> {
    let mut headers: Vec<rsipstack::sip::Header> = Vec::new();
    headers.push(rsipstack::sip::Header::Via(invite.via_header().ok()?.clone()));
    headers.push(header("Max-Forwards", "70"));
    for name in ["From", "To", "Call-ID", "Route"] {
        for v in msg::values_of(&invite.headers, name) {
            headers.push(header(name, v));
        }
    }
    let seq = invite.cseq_header().ok().and_then(|c| c.seq().ok()).unwrap_or(1);
    headers.push(header("CSeq", format!("{seq} CANCEL")));
    Some(Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        headers: headers.into(),
        version: rsipstack::sip::Version::V2,
        body: Vec::new(),
    })
}

/// Orders failures for the caller: 6xx beats everything, then busy, then the lowest class seen.
fn better_failure(current: Option<u16>, new: u16) -> u16 {
    let rank = |c: u16| match c {
        600..=699 => 0,
        486 => 1,
        401 | 407 => 9,
        408 => 8,
        c => 2 + (c / 100) as u8 as u16,
    };
    match current {
        Some(c) if rank(c) <= rank(new) => c,
        _ => new,
    }
}

/// Our view of the caller's dialog once we answered.
pub(crate) fn caller_leg(invite: &Request, our_tag: &str) -> Leg {
    let to = msg::value_of(&invite.headers, "To").unwrap_or_default();
    let local = if to.contains(";tag=") {
        to
    } else {
        format!("{to};tag={our_tag}")
    };
    let remote_target = invite
        .typed_contact_headers()
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|c| c.uri.to_string())
        .unwrap_or_else(|| {
            invite
                .from_header()
                .ok()
                .and_then(|f| f.typed().ok())
                .map(|f| f.uri.to_string())
                .unwrap_or_default()
        });
    Leg {
        call_id: msg::call_id(invite).unwrap_or_default(),
        local,
        remote: msg::value_of(&invite.headers, "From").unwrap_or_default(),
        remote_target,
        route_set: msg::values_of(&invite.headers, "Record-Route"),
        cseq: 0,
    }
}

/// Our view of the callee's dialog from the 2xx it sent.
pub(crate) fn callee_leg(invite: &Request, ok: &Response) -> Option<Leg> {
    let remote_target = ok
        .typed_contact_headers()
        .ok()?
        .into_iter()
        .next()?
        .uri
        .to_string();
    let mut route_set = msg::values_of(&ok.headers, "Record-Route");
    route_set.reverse();
    Some(Leg {
        call_id: msg::call_id(invite)?,
        local: msg::value_of(&invite.headers, "From")?,
        remote: msg::value_of(&ok.headers, "To")?,
        remote_target,
        route_set,
        cseq: invite.cseq_header().ok().and_then(|c| c.seq().ok()).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::better_failure;

    #[test]
    fn failure_preference() {
        assert_eq!(better_failure(None, 404), 404);
        assert_eq!(better_failure(Some(404), 486), 486);
        assert_eq!(better_failure(Some(486), 603), 603);
        assert_eq!(better_failure(Some(404), 408), 404);
        assert_eq!(better_failure(Some(408), 503), 503);
    }
}
