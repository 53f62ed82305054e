//! A campaign's configuration (`[[campaign]]`) and its check against the ACD: the [`CampaignSpec`]
//! a runner starts from.

use super::*;

/// One `[[campaign]]` of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// The campaign's id (letters, digits, `-_.`).
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `preview` (the agent sees the lead, then dials or skips), `progressive`, `predictive` or
    /// `agentless`.
    #[serde(default = "default_mode")]
    pub mode: CampaignMode,
    /// The ACD queue whose agents take answered calls (not for agentless campaigns).
    #[serde(default)]
    pub queue: Option<String>,
    /// The pacing policy: `progressive`, `fixed:RATIO`, `vicidial` or `predictive`.
    #[serde(default = "default_pacing")]
    pub pacing: String,
    /// The number shown to the called party.
    pub caller_id: String,
    /// A leads CSV (`id,phone[,name,timezone,customer_id]`) imported at start when the campaign has no
    /// leads in the CRM store yet.
    #[serde(default)]
    pub leads: Option<PathBuf>,
    /// `running` dials from the start; `paused` waits to be resumed.
    #[serde(default = "default_state")]
    pub state: CampaignState,
    /// Local calling hours of the called party, `["08:00", "21:00"]` (the default).
    #[serde(default)]
    pub calling_hours: Option<[String; 2]>,
    /// The recorded identification message (a WAV file): played when nobody is free for a person
    /// who answered, and left on machines by agentless campaigns.
    pub message: PathBuf,
    #[serde(default)]
    pub compliance: ComplianceConfig,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How often the runner asks the pacing policy.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// At most this many calls of the campaign at once.
    #[serde(default = "default_max_lines")]
    pub max_lines: u32,
    /// The answering-machine analysis of answered calls (`[campaign.amd]`); unset keys keep the
    /// analyser's defaults.
    #[serde(default)]
    pub amd: AmdSettings,
    /// Preview campaigns: how long a lead the agent skipped waits before it is offered again.
    #[serde(default = "default_preview_skip_secs")]
    pub preview_skip_secs: u64,
}

fn default_preview_skip_secs() -> u64 {
    3600
}

/// `[campaign.amd]`: the answering-machine analyser's limits, in milliseconds unless stated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmdSettings {
    /// Silence before any speech that means a machine or a dead line (default 2500).
    pub initial_silence_ms: Option<u32>,
    /// Total voice beyond which the greeting is a machine's (default 1500).
    pub greeting_ms: Option<u32>,
    /// Silence after a greeting that means a person waiting for an answer (default 800).
    pub after_greeting_silence_ms: Option<u32>,
    /// Longest analysis; then the call counts as a person (default 5000).
    pub total_analysis_ms: Option<u32>,
    /// Voice shorter than this is not a word (default 100).
    pub min_word_length_ms: Option<u32>,
    /// Silence that separates two words (default 50).
    pub between_words_silence_ms: Option<u32>,
    /// This many words means a machine (default 3).
    pub max_words: Option<u32>,
    /// One word longer than this means a machine (default 5000).
    pub max_word_length_ms: Option<u32>,
    /// Mean absolute amplitude (16-bit units) from which a frame is voice (default 256).
    pub silence_threshold: Option<u32>,
}

impl AmdSettings {
    /// The analyser's configuration; each value out of its range is a problem naming the key.
    pub fn config(&self, problems: &mut Vec<String>) -> AmdConfig {
        let mut c = AmdConfig::default();
        let mut set =
            |key: &str, value: Option<u32>, range: std::ops::RangeInclusive<u32>, field: &mut u32| {
                if let Some(v) = value {
                    if range.contains(&v) {
                        *field = v;
                    } else {
                        problems.push(format!(
                            "amd.{key}: between {} and {} (got {v})",
                            range.start(),
                            range.end()
                        ));
                    }
                }
            };
        set(
            "initial_silence_ms",
            self.initial_silence_ms,
            500..=10_000,
            &mut c.initial_silence_ms,
        );
        set("greeting_ms", self.greeting_ms, 300..=10_000, &mut c.greeting_ms);
        set(
            "after_greeting_silence_ms",
            self.after_greeting_silence_ms,
            100..=5_000,
            &mut c.after_greeting_silence_ms,
        );
        set(
            "total_analysis_ms",
            self.total_analysis_ms,
            1_000..=15_000,
            &mut c.total_analysis_ms,
        );
        set(
            "min_word_length_ms",
            self.min_word_length_ms,
            20..=1_000,
            &mut c.min_word_length_ms,
        );
        set(
            "between_words_silence_ms",
            self.between_words_silence_ms,
            20..=2_000,
            &mut c.between_words_silence_ms,
        );
        set("max_words", self.max_words, 1..=20, &mut c.max_words);
        set(
            "max_word_length_ms",
            self.max_word_length_ms,
            200..=15_000,
            &mut c.max_word_length_ms,
        );
        set(
            "silence_threshold",
            self.silence_threshold,
            1..=32_767,
            &mut c.silence_threshold,
        );
        // The analysis must be able to reach each verdict before it gives up.
        if c.total_analysis_ms <= c.initial_silence_ms {
            problems.push(format!(
                "amd.total_analysis_ms ({}) must be longer than amd.initial_silence_ms ({})",
                c.total_analysis_ms, c.initial_silence_ms
            ));
        }
        if c.total_analysis_ms <= c.greeting_ms {
            problems.push(format!(
                "amd.total_analysis_ms ({}) must be longer than amd.greeting_ms ({})",
                c.total_analysis_ms, c.greeting_ms
            ));
        }
        if c.min_word_length_ms >= c.max_word_length_ms {
            problems.push(format!(
                "amd.min_word_length_ms ({}) must be shorter than amd.max_word_length_ms ({})",
                c.min_word_length_ms, c.max_word_length_ms
            ));
        }
        c
    }
}

fn default_mode() -> CampaignMode {
    CampaignMode::Progressive
}
fn default_pacing() -> String {
    "progressive".into()
}
fn default_state() -> CampaignState {
    CampaignState::Running
}
fn default_tick_ms() -> u64 {
    1000
}
fn default_max_lines() -> u32 {
    20
}

/// A campaign ready to run: the configuration checked against the ACD's queues.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    pub id: CampaignId,
    pub name: String,
    pub mode: CampaignMode,
    pub queue: Option<QueueId>,
    /// Agents who serve the campaign's queue.
    pub agents: HashSet<AgentId>,
    pub pacing: PolicySpec,
    pub rules: ComplianceRules,
    pub retry: RetryPolicy,
    pub window: CallingWindow,
    pub caller_id: String,
    pub message: PathBuf,
    pub start: CampaignState,
    pub tick: Duration,
    pub max_lines: u32,
    pub amd: AmdConfig,
    /// Preview campaigns: how long a skipped lead waits.
    pub preview_skip: Duration,
}

fn parse_hour(text: &str) -> Option<(u8, u8)> {
    let (h, m) = text.trim().split_once(':')?;
    Some((h.parse().ok()?, m.parse().ok()?))
}

impl CampaignConfig {
    /// Checks the campaign against the ACD configuration; every problem is named.
    pub fn spec(&self, acd: &acd::AcdConfig) -> Result<CampaignSpec, Vec<String>> {
        let mut problems = Vec::new();
        let id = CampaignId::new(&self.id)
            .map_err(|e| problems.push(format!("id {:?}: {e}", self.id)))
            .ok();
        if self.mode == CampaignMode::Preview && self.pacing != default_pacing() {
            problems
                .push("pacing: preview campaigns are not paced (the agent dials); leave pacing out".into());
        }
        if self.preview_skip_secs > 7 * 86_400 {
            problems.push("preview_skip_secs: at most 604800 (a week)".into());
        }
        let queue = match (&self.queue, self.mode) {
            (None, CampaignMode::Agentless) => None,
            (None, _) => {
                problems.push("queue: needed for campaigns that connect agents".into());
                None
            }
            (Some(q), _) => match QueueId::new(q) {
                Ok(q) if acd.queues.iter().any(|c| c.id == q) => Some(q),
                _ => {
                    problems.push(format!("queue {q:?} is not in [[acd.queues]]"));
                    None
                }
            },
        };
        let agents = queue
            .as_ref()
            .map(|q| {
                acd.agents
                    .iter()
                    .filter(|a| a.queues.iter().any(|m| &m.queue == q))
                    .map(|a| a.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let rules = ComplianceRules::from_config(&self.compliance)
            .map_err(|e| problems.push(format!("compliance: {e}")))
            .ok();
        let pacing = self
            .pacing
            .parse::<PolicySpec>()
            .map_err(|e| problems.push(format!("pacing: {e}")))
            .ok();
        let window = match &self.calling_hours {
            None => Some(CallingWindow::us_default()),
            Some([from, to]) => match (parse_hour(from), parse_hour(to)) {
                (Some(a), Some(b)) => CallingWindow::new(a, b)
                    .map_err(|e| problems.push(format!("calling_hours: {e}")))
                    .ok(),
                _ => {
                    problems.push("calling_hours: write them as [\"08:00\", \"21:00\"]".into());
                    None
                }
            },
        };
        if self.caller_id.is_empty() || self.caller_id.len() > 32 {
            problems.push("caller_id: 1 to 32 characters".into());
        }
        if !self.message.is_file() {
            problems.push(format!("message {}: no such file", self.message.display()));
        }
        if self.tick_ms < 100 || self.tick_ms > 60_000 {
            problems.push("tick_ms: between 100 and 60000".into());
        }
        if self.max_lines == 0 || self.max_lines > 1000 {
            problems.push("max_lines: between 1 and 1000".into());
        }
        let amd = self.amd.config(&mut problems);
        match (id, rules, pacing, window) {
            (Some(id), Some(rules), Some(pacing), Some(window)) if problems.is_empty() => Ok(CampaignSpec {
                name: self.name.clone().unwrap_or_else(|| id.to_string()),
                id,
                mode: self.mode,
                queue,
                agents,
                pacing: pacing.for_rules(&rules),
                rules,
                retry: self.retry.clone(),
                window,
                caller_id: self.caller_id.clone(),
                message: self.message.clone(),
                start: self.state,
                tick: Duration::from_millis(self.tick_ms),
                max_lines: self.max_lines,
                amd,
                preview_skip: Duration::from_secs(self.preview_skip_secs),
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acd_config() -> acd::AcdConfig {
        toml::from_str(
            "[[queues]]\nid = \"outbound\"\n\n[[agents]]\nid = \"1001\"\nqueues = [{ queue = \"outbound\", rank = 1 }]\n",
        )
        .unwrap()
    }

    fn config_for(queue: &str, extra: &str) -> CampaignConfig {
        let message = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../ivr-scripts/prompts/goodbye.wav"
        );
        toml::from_str(&format!(
            "id = \"spring\"\nqueue = \"{queue}\"\ncaller_id = \"+442070000000\"\nmessage = \"{message}\"\n{extra}"
        ))
        .unwrap()
    }

    fn config(extra: &str) -> CampaignConfig {
        config_for("outbound", extra)
    }

    #[test]
    fn a_campaign_is_checked_against_the_acd_and_the_rules() {
        let spec = config("pacing = \"fixed:2\"\ncalling_hours = [\"09:00\", \"20:00\"]")
            .spec(&acd_config())
            .unwrap();
        assert_eq!(spec.agents.len(), 1);
        assert_eq!(spec.rules.connect_within, Duration::from_secs(2));
        let problems = config_for("nowhere", "").spec(&acd_config());
        assert!(problems.is_err());
        let problems =
            config("pacing = \"magic\"\ncalling_hours = [\"21:00\", \"08:00\"]\n[compliance]\nring_secs = 5")
                .spec(&acd_config())
                .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        let preview = config("mode = \"preview\"\npreview_skip_secs = 600")
            .spec(&acd_config())
            .unwrap();
        assert_eq!(
            (preview.mode, preview.preview_skip),
            (CampaignMode::Preview, Duration::from_secs(600))
        );
        let paced = config("mode = \"preview\"\npacing = \"predictive\"")
            .spec(&acd_config())
            .unwrap_err();
        assert!(paced[0].contains("not paced"), "{paced:?}");
    }

    #[test]
    fn amd_settings_default_to_the_analyser_and_are_checked() {
        let spec = config("").spec(&acd_config()).unwrap();
        assert_eq!(
            spec.amd,
            AmdConfig::default(),
            "no [campaign.amd]: today's behaviour"
        );
        let spec = config("[amd]\ninitial_silence_ms = 3000\ngreeting_ms = 2000\ntotal_analysis_ms = 4000")
            .spec(&acd_config())
            .unwrap();
        assert_eq!(
            (
                spec.amd.initial_silence_ms,
                spec.amd.greeting_ms,
                spec.amd.total_analysis_ms
            ),
            (3000, 2000, 4000)
        );
        assert_eq!(
            spec.amd.max_words,
            AmdConfig::default().max_words,
            "unset keys keep defaults"
        );
        let problems = config("[amd]\ngreeting_ms = 20\nmax_words = 0\ntotal_analysis_ms = 2000")
            .spec(&acd_config())
            .unwrap_err();
        assert_eq!(
            problems,
            [
                "amd.greeting_ms: between 300 and 10000 (got 20)",
                "amd.max_words: between 1 and 20 (got 0)",
                "amd.total_analysis_ms (2000) must be longer than amd.initial_silence_ms (2500)",
            ]
        );
        let unknown = toml::from_str::<CampaignConfig>(
            "id = \"x\"\ncaller_id = \"1\"\nmessage = \"m.wav\"\n[amd]\nbeep_ms = 5",
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("beep_ms"), "{unknown}");
    }
}
