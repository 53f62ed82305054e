//! Shared set-up of the outbound (campaign) system tests: one agent, 1001, on an `outbound` queue
//! with a desk login and the `carrier` trunk as the desk's outbound trunk, and a time zone in which
//! the calling window is open whenever the test runs.

/// Configuration common to the campaign tests; `campaign_config` appends each test's trunk and
/// `[[campaign]]`.
const ONE_AGENT_OUTBOUND_CONFIG: &str = r#"
[sip.limits]
max_calls_per_second = 0
per_source_requests_per_second = 0

[[sip.user]]
name = "1001"
password = "agent1001"

[agents]
ready_on_start = false

[[acd.queues]]
id = "outbound"
offer_timeout_secs = 15
wrap_up_secs = 120

[[acd.agents]]
id = "1001"
queues = [{ queue = "outbound", rank = 1 }]

[desk]
outbound_trunk = "carrier"

[[desk.user]]
id = "1001"
name = "Alice Agent"
role = "agent"
password = "agent1001"
"#;

/// A fixed-offset zone where it is now around noon, so a daytime calling window (8:00-21:00) is
/// open whenever the test runs.
pub fn zone_at_noon() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let utc_hour = ((secs / 3600) % 24) as i64;
    match 12 - utc_hour {
        0 => "Etc/GMT".into(),
        // Etc/GMT-N is N hours east of Greenwich.
        east if east > 0 => format!("Etc/GMT-{east}"),
        west => format!("Etc/GMT+{}", -west),
    }
}

/// The whole configuration of a campaign test: the shared agent set-up followed by the test's own
/// `campaign` text, whose `CARRIER_PORT`, `LEADS` and `MESSAGE` placeholders are filled with the
/// carrier's port, the lead list and the demo identification message.
pub fn campaign_config(campaign: &str, carrier_port: u16, leads: &std::path::Path) -> String {
    let message = identification_message();
    format!("{ONE_AGENT_OUTBOUND_CONFIG}{campaign}")
        .replace("CARRIER_PORT", &carrier_port.to_string())
        .replace("LEADS", &leads.display().to_string())
        .replace("MESSAGE", &message.display().to_string())
}

/// The demo IVR's recorded identification message, played to a person the dialer cannot connect.
pub fn identification_message() -> std::path::PathBuf {
    crate::ivr_dir().join("prompts/campaign-identification.wav")
}
