//! What a campaign runner counts: the wallboard's figures and the `dialer_*` metrics.

use super::*;

/// What the runner counts, as the wallboard and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CampaignLiveStats {
    pub campaign: String,
    pub state: String,
    pub dials: u64,
    /// Answered calls classified as people.
    pub answered_human: u64,
    pub machines: u64,
    pub connects: u64,
    pub abandons: u64,
    /// Over the rules' rolling window (30 days US, 24 h UK), UK estimate of AMD false positives included.
    pub abandon_rate: f64,
    /// Lines in use per agent serving the campaign (ready or talking).
    pub dial_level: f64,
    pub lines_active: u32,
    pub calls_waiting: u32,
    pub leads_pending: usize,
    pub leads_done: usize,
    pub leads_exhausted: usize,
    pub leads_blocked: usize,
    /// Whether this node dials the campaign (holds its lease).
    pub dialing_here: bool,
    /// Who holds the campaign's lease (this node's or another's holder name), when known.
    pub lease_holder: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CampaignLabel {
    pub(super) campaign: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub(super) campaign: String,
    pub(super) outcome: String,
}

pub(super) type FloatGauge = Gauge<f64, AtomicU64>;

/// The dialer's metrics (`dialer_*`), labelled by campaign id and outcome only.
#[derive(Clone, Default)]
pub struct DialerMetrics {
    pub(super) dials: Family<CampaignLabel, Counter>,
    pub(super) connects: Family<CampaignLabel, Counter>,
    pub(super) abandons: Family<CampaignLabel, Counter>,
    pub(super) outcomes: Family<OutcomeLabel, Counter>,
    pub(super) abandon_rate: Family<CampaignLabel, FloatGauge>,
    pub(super) dial_level: Family<CampaignLabel, FloatGauge>,
    pub(super) lines: Family<CampaignLabel, Gauge>,
    pub(super) waiting: Family<CampaignLabel, Gauge>,
    pub(super) running: Family<CampaignLabel, Gauge>,
}

impl DialerMetrics {
    /// Creates the metrics and registers them under `dialer`.
    pub fn register(telemetry: &telemetry::Telemetry) -> Self {
        let m = Self::default();
        telemetry.register("dialer", |r| {
            r.register("dials", "Numbers dialled", m.dials.clone());
            r.register(
                "connects",
                "People connected to an agent in time",
                m.connects.clone(),
            );
            r.register(
                "abandons",
                "People who got no agent in time (identification message played)",
                m.abandons.clone(),
            );
            r.register("outcomes", "Finished attempts by outcome", m.outcomes.clone());
            r.register(
                "abandon_rate_ratio",
                "Abandoned share of live answers over the compliance window",
                m.abandon_rate.clone(),
            );
            r.register(
                "dial_level_ratio",
                "Lines in use per agent ready or talking",
                m.dial_level.clone(),
            );
            r.register(
                "lines_active",
                "Calls of the campaign in progress",
                m.lines.clone(),
            );
            r.register(
                "calls_waiting",
                "Answered people waiting for an agent",
                m.waiting.clone(),
            );
            r.register(
                "campaign_running",
                "1 while the campaign dials, 0 paused or stopped",
                m.running.clone(),
            );
        });
        m
    }

    pub(super) fn label(campaign: &CampaignId) -> CampaignLabel {
        CampaignLabel {
            campaign: campaign.to_string(),
        }
    }
}
