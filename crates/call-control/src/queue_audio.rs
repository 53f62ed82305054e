//! What a caller waiting in a queue hears, and when: music, and at set moments an announcement of
//! their place in line and the estimated wait, in the call's language, with the callback offer
//! once the wait is long; a comfort message when there is nothing to announce. No dead air.
//!
//! The schedule is a pure machine on time given to it ([`QueueAudio`]: `update` with the router's
//! position notices, `poll(now)`, `next_deadline()`), tested on virtual time below. The call's
//! driver plays what it says ([`QueueAudioPlayer`]): it starts the music on entering the queue,
//! plays an announcement when one is due, and starts the music again when the announcement ends.
//!
//! Settings per queue (`[queue_audio]` for every queue, `[queue_audio.queues.<id>]` for one):
//! `first_announcement_secs` (30), `announce_every_secs` (60), `announce_position`,
//! `announce_wait` (true), `callback_offer_over_secs` (offer the callback key when the estimated
//! wait is longer; none: never), `comfort_every_secs` (a "please hold" between announcements; none:
//! never), `music` (a WAV; default the node's hold music) and `language` (for calls that came
//! straight to a queue; a call through the IVR keeps the IVR's language).

use domain::Timestamp;
use ivr::numbers::{NumberUse, is_chinese, say_number_in};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One queue's audio.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueAudioSettings {
    /// Looped while the caller waits; none: the node's hold music.
    pub music: Option<PathBuf>,
    pub first_announcement_secs: u32,
    pub announce_every_secs: u32,
    pub announce_position: bool,
    pub announce_wait: bool,
    pub callback_offer_over_secs: Option<u32>,
    pub comfort_every_secs: Option<u32>,
    /// The language of calls that reach the queue without the IVR.
    pub language: String,
}

impl Default for QueueAudioSettings {
    fn default() -> Self {
        Self {
            music: None,
            first_announcement_secs: 30,
            announce_every_secs: 60,
            announce_position: true,
            announce_wait: true,
            callback_offer_over_secs: None,
            comfort_every_secs: None,
            language: "en".into(),
        }
    }
}

/// Every queue's audio: the defaults and per-queue settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueAudioConfig {
    /// Off: callers in queues hear only what the IVR plays.
    pub enabled: bool,
    #[serde(flatten)]
    pub defaults: QueueAudioSettings,
    pub queues: BTreeMap<String, QueueAudioSettings>,
}

impl QueueAudioConfig {
    /// The settings of `queue`.
    pub fn for_queue(&self, queue: &str) -> &QueueAudioSettings {
        self.queues.get(queue).unwrap_or(&self.defaults)
    }
}

/// What to play now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cue {
    /// Prompts by name, after which the music resumes.
    Announce(Vec<String>),
}

/// The schedule of one waiting caller's announcements.
#[derive(Debug, Clone)]
pub struct QueueAudio {
    settings: QueueAudioSettings,
    language: String,
    next_announcement: Timestamp,
    next_comfort: Option<Timestamp>,
    position: Option<u32>,
    estimated_wait: Option<Duration>,
}

fn after(t: Timestamp, secs: u32) -> Timestamp {
    Timestamp::from_millis(t.as_millis() + i64::from(secs.max(1)) * 1000)
}

impl QueueAudio {
    /// A caller entered the queue at `now`, speaking `language`.
    pub fn new(settings: QueueAudioSettings, language: &str, now: Timestamp) -> Self {
        let next_comfort = settings.comfort_every_secs.map(|s| after(now, s));
        // Nothing to announce (the IVR announces itself): no announcement is ever due.
        let next_announcement = if settings.announce_position || settings.announce_wait {
            after(now, settings.first_announcement_secs)
        } else {
            Timestamp::from_millis(i64::MAX / 2)
        };
        Self {
            next_announcement,
            next_comfort,
            language: language.to_string(),
            settings,
            position: None,
            estimated_wait: None,
        }
    }

    /// The router's latest position (1 = next) and estimated wait for this caller.
    pub fn update(&mut self, position: u32, estimated_wait: Option<Duration>) {
        self.position = Some(position);
        self.estimated_wait = estimated_wait;
    }

    /// When [`QueueAudio::poll`] has something next.
    pub fn next_deadline(&self) -> Timestamp {
        match self.next_comfort {
            Some(c) if c < self.next_announcement => c,
            _ => self.next_announcement,
        }
    }

    /// What is due at `now`, if anything. A comfort message that falls within the same second as an
    /// announcement gives way to it.
    pub fn poll(&mut self, now: Timestamp) -> Option<Cue> {
        if now >= self.next_announcement {
            while self.next_announcement <= now {
                self.next_announcement = after(self.next_announcement, self.settings.announce_every_secs);
            }
            // The next comfort message comes a full gap after this announcement.
            self.next_comfort = self.settings.comfort_every_secs.map(|every| after(now, every));
            let said = self.announcement();
            return Some(Cue::Announce(if said.is_empty() {
                vec![COMFORT.to_string()]
            } else {
                said
            }));
        }
        if let (Some(c), Some(every)) = (self.next_comfort, self.settings.comfort_every_secs)
            && now >= c
        {
            self.next_comfort = Some(after(now, every));
            return Some(Cue::Announce(vec![COMFORT.to_string()]));
        }
        None
    }

    /// The announcement as prompt names: place in line, wait in minutes, the callback offer.
    pub fn announcement(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.settings.announce_position
            && let Some(position) = self.position
        {
            names.push("queue-position".to_string());
            names.extend(say_number_in(
                u64::from(position),
                &self.language,
                NumberUse::Ordinal,
            ));
            if is_chinese(&self.language) {
                names.push("queue-position-end".to_string());
            }
        }
        if self.settings.announce_wait
            && let Some(wait) = self.estimated_wait.filter(|w| !w.is_zero())
        {
            names.push("queue-wait".to_string());
            names.extend(say_number_in(
                wait.as_secs().div_ceil(60).max(1),
                &self.language,
                NumberUse::Count,
            ));
            names.push("minutes".to_string());
        }
        if let (Some(over), Some(wait)) = (self.settings.callback_offer_over_secs, self.estimated_wait)
            && wait > Duration::from_secs(u64::from(over))
        {
            names.push("callback-offer".to_string());
        }
        names
    }
}

/// The comfort message.
pub const COMFORT: &str = "please-hold";

/// The driver's side: the schedule, the music and the prompts as the media engine plays them.
pub(crate) struct QueueAudioPlayer {
    pub(crate) schedule: QueueAudio,
    music: Vec<media::prompt::Prompt>,
    started: std::time::Instant,
    started_at: Timestamp,
}

impl QueueAudioPlayer {
    /// Starts the music for a caller who entered `queue` now; none when queue audio is off. A
    /// call that came through the IVR speaks the IVR's language, and when the IVR's enqueue node
    /// announces position or wait itself, the IVR's announcements stand and only the music and
    /// comfort messages are added.
    pub(crate) fn start(
        inner: &crate::Inner,
        rtp: &media::engine::RtpLeg,
        law: media::g711::G711,
        queue: &domain::QueueId,
        ivr: Option<&ivr::IvrState>,
    ) -> Option<Self> {
        let config = inner.queue_audio.get()?;
        if !config.enabled {
            return None;
        }
        let queue = queue.as_str();
        let mut settings = config.for_queue(queue).clone();
        // The callback key is offered only where a key press leads somewhere: an IVR enqueue node
        // with an exit key.
        let mut exit_key = false;
        if let Some(state) = ivr {
            let flows = inner.flows.current();
            let node = flows.flow(&state.flow).and_then(|f| f.nodes.get(&state.node));
            if let Some(ivr::NodeKind::Enqueue(n)) = node.map(|n| &n.kind) {
                exit_key = n.exit_key.is_some() && n.on_exit.is_some();
                if n.announce_position || n.announce_wait {
                    settings.announce_position = false;
                    settings.announce_wait = false;
                }
            }
        }
        if !exit_key {
            settings.callback_offer_over_secs = None;
        }
        let language = ivr.map(|s| s.language.as_str());
        let path = settings.music.clone().or_else(|| inner.hold_music.clone());
        let music: Vec<_> = path
            .and_then(|p| inner.media.prompts().get(&p, law).ok())
            .into_iter()
            .collect();
        let language = language.unwrap_or(&settings.language).to_string();
        let now = Timestamp::now_utc();
        let player = Self {
            schedule: QueueAudio::new(settings, &language, now),
            music,
            started: std::time::Instant::now(),
            started_at: now,
        };
        tracing::info!(queue, language = %language, "queue audio started");
        player.play_music(rtp);
        Some(player)
    }

    /// Loops the music (again).
    pub(crate) fn play_music(&self, rtp: &media::engine::RtpLeg) {
        if !self.music.is_empty() {
            rtp.play(self.music.clone(), true, false);
        }
    }

    /// The wall-clock instant of the schedule's next deadline.
    fn deadline(&self) -> tokio::time::Instant {
        let ms = (self.schedule.next_deadline().as_millis() - self.started_at.as_millis()).max(0);
        tokio::time::Instant::from_std(self.started) + Duration::from_millis(ms as u64)
    }

    /// Plays what is due: the announcement's prompts in the call's language (falling back to the
    /// default recording), logged with what was said.
    pub(crate) fn play_due(
        &mut self,
        inner: &crate::Inner,
        rtp: &media::engine::RtpLeg,
        law: media::g711::G711,
    ) {
        let Some(Cue::Announce(names)) = self.schedule.poll(Timestamp::now_utc()) else {
            return;
        };
        let flows = inner.flows.current();
        let prompts: Vec<_> = names
            .iter()
            .filter_map(|n| flows.prompt_in(n, &self.schedule.language))
            .filter_map(|p| inner.media.prompts().get(&p.path, law).ok())
            .collect();
        tracing::info!(
            position = ?self.schedule.position,
            said = %names.join(" "),
            "queue announcement"
        );
        if !prompts.is_empty() {
            rtp.play(prompts, false, false);
        }
    }
}

/// An announcement (or an IVR prompt) ended while the caller still waits: the music again.
pub(crate) fn resume_music(player: &Option<QueueAudioPlayer>, queued: bool, rtp: &media::engine::RtpLeg) {
    if let Some(p) = player.as_ref().filter(|_| queued) {
        p.play_music(rtp);
    }
}

/// Waits for the next announcement of the call's queue audio (forever when there is none).
pub(crate) async fn next_due(player: &Option<QueueAudioPlayer>) {
    match player {
        Some(p) => tokio::time::sleep_until(p.deadline()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + secs * 1000)
    }

    /// Runs the schedule second by second from 0 to `until` and lists what was said when.
    fn run(audio: &mut QueueAudio, until: i64, updates: &[(i64, u32, u64)]) -> Vec<(i64, String)> {
        let mut said = Vec::new();
        for s in 0..=until {
            for &(when, position, wait) in updates {
                if when == s {
                    audio.update(position, Some(Duration::from_secs(wait)));
                }
            }
            if let Some(Cue::Announce(names)) = audio.poll(at(s)) {
                said.push((s, names.join(" ")));
            }
        }
        said
    }

    #[test]
    fn first_after_thirty_seconds_then_every_minute_with_the_latest_position() {
        let mut audio = QueueAudio::new(QueueAudioSettings::default(), "en", at(0));
        assert_eq!(audio.next_deadline(), at(30));
        let said = run(&mut audio, 150, &[(5, 3, 240), (80, 2, 100), (140, 1, 30)]);
        assert_eq!(
            said,
            [
                (30, "queue-position num-3 queue-wait num-4 minutes".to_string()),
                (90, "queue-position num-2 queue-wait num-2 minutes".to_string()),
                (150, "queue-position num-1 queue-wait num-1 minutes".to_string()),
            ]
        );
    }

    #[test]
    fn chinese_callers_hear_chinese_numbers_and_the_position_ending() {
        let mut audio = QueueAudio::new(QueueAudioSettings::default(), "zh-CN", at(0));
        audio.update(12, Some(Duration::from_secs(120)));
        assert_eq!(
            audio.poll(at(30)),
            Some(Cue::Announce(
                [
                    "queue-position",
                    "num-10",
                    "num-2",
                    "queue-position-end",
                    "queue-wait",
                    "num-liang",
                    "minutes"
                ]
                .map(String::from)
                .to_vec()
            ))
        );
    }

    #[test]
    fn a_long_wait_offers_the_callback_key() {
        let settings = QueueAudioSettings {
            callback_offer_over_secs: Some(300),
            ..Default::default()
        };
        let mut audio = QueueAudio::new(settings, "en", at(0));
        let said = run(&mut audio, 90, &[(1, 7, 600), (60, 2, 120)]);
        assert_eq!(said.len(), 2);
        assert!(said[0].1.ends_with("callback-offer"), "{said:?}");
        assert!(!said[1].1.contains("callback-offer"), "{said:?}");
    }

    #[test]
    fn comfort_messages_fill_the_gaps_and_stand_in_for_an_unknown_position() {
        let settings = QueueAudioSettings {
            comfort_every_secs: Some(20),
            ..Default::default()
        };
        let mut audio = QueueAudio::new(settings, "en", at(0));
        assert_eq!(audio.next_deadline(), at(20));
        let said = run(&mut audio, 70, &[]);
        assert_eq!(
            said,
            [
                (20, COMFORT.to_string()),
                (30, COMFORT.to_string()),
                (50, COMFORT.to_string()),
                (70, COMFORT.to_string()),
            ],
            "no position known: the announcement is a comfort message too"
        );
    }

    #[test]
    fn a_late_poll_catches_up_without_a_burst() {
        let mut audio = QueueAudio::new(QueueAudioSettings::default(), "en", at(0));
        audio.update(1, None);
        assert!(audio.poll(at(400)).is_some());
        assert_eq!(audio.poll(at(400)), None);
        assert_eq!(audio.next_deadline(), at(450));
    }

    #[test]
    fn without_position_or_wait_only_comfort_messages_play() {
        let settings = QueueAudioSettings {
            announce_position: false,
            announce_wait: false,
            comfort_every_secs: Some(40),
            ..Default::default()
        };
        let mut audio = QueueAudio::new(settings, "en", at(0));
        audio.update(2, Some(Duration::from_secs(60)));
        let said = run(&mut audio, 100, &[]);
        assert_eq!(said, [(40, COMFORT.to_string()), (80, COMFORT.to_string())]);
    }

    #[test]
    fn settings_read_from_toml_shape() {
        let config: QueueAudioConfig = serde_json::from_value(serde_json::json!({
            "enabled": true,
            "first_announcement_secs": 10,
            "queues": {"sales": {"announce_every_secs": 20, "language": "zh-CN"}}
        }))
        .expect("config");
        assert_eq!(config.for_queue("support").first_announcement_secs, 10);
        assert_eq!(config.for_queue("sales").announce_every_secs, 20);
        assert_eq!(config.for_queue("sales").language, "zh-CN");
    }
}
