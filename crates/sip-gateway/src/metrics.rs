//! The gateway's metrics, registered under the `sip` prefix. Labels are methods, codes and reasons only.

use crate::guard::RejectReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabel {
    method: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Handles to every SIP metric; cheap to clone.
#[derive(Clone, Default)]
pub struct GatewayMetrics {
    requests: Family<MethodLabel, Counter>,
    responses: Family<ResponseLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    refused_calls: Family<ReasonLabel, Counter>,
    calls: Counter,
    active_dialogs: Gauge,
    unacknowledged_invites: Counter,
    late_answers_refused: Counter,
    auth_failures: Family<ReasonLabel, Counter>,
    auth_bans: Family<ReasonLabel, Counter>,
    banned_requests: Counter,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them with `telemetry`.
    pub fn register(telemetry: &telemetry::Telemetry) -> Self {
        let m = Self::default();
        telemetry.register("sip", |r| {
            r.register("requests", "SIP requests received, by method", m.requests.clone());
            r.register(
                "responses",
                "SIP final responses sent to new requests, by method and code",
                m.responses.clone(),
            );
            r.register(
                "rejected_messages",
                "Datagrams answered or dropped before the SIP stack, by reason",
                m.rejected.clone(),
            );
            r.register(
                "refused_calls",
                "New calls refused by overload control, by reason",
                m.refused_calls.clone(),
            );
            r.register(
                "calls",
                "New calls admitted (its rate is the calls per second)",
                m.calls.clone(),
            );
            r.register(
                "active_dialogs",
                "Calls with an established or early dialog",
                m.active_dialogs.clone(),
            );
            r.register(
                "unacknowledged_invites",
                "Answered INVITEs whose ACK never came within Timer H (32 s): hung up",
                m.unacknowledged_invites.clone(),
            );
            r.register(
                "late_answers_refused",
                "Late-offer calls ended because the ACK brought no usable answer",
                m.late_answers_refused.clone(),
            );
            r.register(
                "auth_failures",
                "Failed digest authentications, by reason (wrong, replay, malformed)",
                m.auth_failures.clone(),
            );
            r.register(
                "auth_bans",
                "Temporary bans after repeated authentication failures, by scope (source, user_source)",
                m.auth_bans.clone(),
            );
            r.register(
                "banned_requests",
                "Requests refused because their source (or user at that source) is banned",
                m.banned_requests.clone(),
            );
        });
        m
    }

    pub(crate) fn request(&self, method: &str) {
        self.requests
            .get_or_create(&MethodLabel {
                method: method.to_string(),
            })
            .inc();
    }
    pub(crate) fn response(&self, method: &str, code: u16) {
        self.responses
            .get_or_create(&ResponseLabel {
                method: method.to_string(),
                code,
            })
            .inc();
    }
    pub(crate) fn rejected(&self, reason: RejectReason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.label().to_string(),
            })
            .inc();
    }
    pub(crate) fn refused(&self, reason: &str) {
        self.refused_calls
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
    pub(crate) fn call_admitted(&self) {
        self.calls.inc();
    }
    pub(crate) fn dialog_up(&self) {
        self.active_dialogs.inc();
    }
    pub(crate) fn unacknowledged_invite(&self) {
        self.unacknowledged_invites.inc();
    }
    pub(crate) fn late_answer_refused(&self) {
        self.late_answers_refused.inc();
    }
    pub(crate) fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
    pub(crate) fn auth_ban(&self, scope: &str) {
        self.auth_bans
            .get_or_create(&ReasonLabel {
                reason: scope.to_string(),
            })
            .inc();
    }
    pub(crate) fn banned_request(&self) {
        self.banned_requests.inc();
    }
    pub(crate) fn dialog_down(&self) {
        self.active_dialogs.dec();
    }
}
