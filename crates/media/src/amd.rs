//! Answering-machine detection on the first seconds of an answered outbound call.
//!
//! A pure state machine over 20 ms frames of 8 kHz audio, after the algorithm of Asterisk's `AMD()`: a frame
//! is voice when its mean absolute amplitude reaches a threshold; runs of voice long enough form words. A
//! person answers with a short "Hello?" and waits (silence after a short greeting: HUMAN); a machine talks
//! on (a long greeting, many words or one very long word: MACHINE) or says nothing for a long time. If none of
//! this is decided within the total analysis time the answer is NOTSURE.

/// Frame length the analyser expects.
pub const FRAME_MS: u32 = 20;

/// Limits, in milliseconds unless stated; defaults as Asterisk's `amd.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdConfig {
    /// Silence before any speech that means a machine (or a dead line).
    pub initial_silence_ms: u32,
    /// Total voice beyond which the greeting is a machine's.
    pub greeting_ms: u32,
    /// Silence after a greeting that means a person waiting for an answer.
    pub after_greeting_silence_ms: u32,
    /// Give up after this much audio.
    pub total_analysis_ms: u32,
    /// Voice shorter than this is not a word (clicks, breath).
    pub min_word_length_ms: u32,
    /// Silence that separates two words.
    pub between_words_silence_ms: u32,
    /// This many words means a machine (Asterisk's default is 2; 3 lets "Hello? Hello?" pass as a person).
    pub max_words: u32,
    /// One word longer than this means a machine.
    pub max_word_length_ms: u32,
    /// Mean absolute amplitude (16-bit units) from which a frame is voice.
    pub silence_threshold: u32,
}

impl Default for AmdConfig {
    fn default() -> Self {
        Self {
            initial_silence_ms: 2500,
            greeting_ms: 1500,
            after_greeting_silence_ms: 800,
            total_analysis_ms: 5000,
            min_word_length_ms: 100,
            between_words_silence_ms: 50,
            max_words: 3,
            max_word_length_ms: 5000,
            silence_threshold: 256,
        }
    }
}

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdDecision {
    Human,
    Machine,
    NotSure,
}

/// Why the analyser decided; stable names for events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdReason {
    /// Nobody spoke within the initial silence.
    InitialSilence,
    /// A short greeting followed by silence.
    AfterGreetingSilence,
    /// The greeting went on too long.
    LongGreeting,
    /// Too many words.
    MaxWords,
    /// One word went on too long.
    MaxWordLength,
    /// The analysis time ran out.
    TooLong,
}

impl AmdReason {
    /// Asterisk-compatible cause name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InitialSilence => "INITIALSILENCE",
            Self::AfterGreetingSilence => "HUMAN",
            Self::LongGreeting => "LONGGREETING",
            Self::MaxWords => "MAXWORDS",
            Self::MaxWordLength => "MAXWORDLENGTH",
            Self::TooLong => "TOOLONG",
        }
    }
}

/// The analyser's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdResult {
    pub decision: AmdDecision,
    pub reason: AmdReason,
    /// Audio analysed when the decision fell, in ms.
    pub after_ms: u32,
    /// Words counted.
    pub words: u32,
}

/// The state machine; feed it frames until it returns a result.
#[derive(Debug, Clone)]
pub struct AnsweringMachineDetector {
    config: AmdConfig,
    elapsed_ms: u32,
    silence_ms: u32,
    voice_ms: u32,
    consecutive_voice_ms: u32,
    words: u32,
    in_word: bool,
    in_initial_silence: bool,
    in_greeting: bool,
    result: Option<AmdResult>,
}

impl AnsweringMachineDetector {
    /// A detector at the moment of answer.
    pub fn new(config: AmdConfig) -> Self {
        Self {
            config,
            elapsed_ms: 0,
            silence_ms: 0,
            voice_ms: 0,
            consecutive_voice_ms: 0,
            words: 0,
            in_word: false,
            in_initial_silence: true,
            in_greeting: false,
            result: None,
        }
    }

    /// The decision, once made.
    pub fn result(&self) -> Option<AmdResult> {
        self.result
    }

    fn decide(&mut self, decision: AmdDecision, reason: AmdReason) -> Option<AmdResult> {
        let result = AmdResult {
            decision,
            reason,
            after_ms: self.elapsed_ms,
            words: self.words,
        };
        self.result = Some(result);
        self.result
    }

    /// Feeds one frame of linear samples (20 ms at 8 kHz is 160; other lengths count by their duration).
    /// Returns the decision when it falls; after that, the same decision for every frame.
    pub fn push_frame(&mut self, samples: &[i16]) -> Option<AmdResult> {
        if self.result.is_some() {
            return self.result;
        }
        let frame_ms = (samples.len() as u32).saturating_mul(1000) / 8000;
        if frame_ms == 0 {
            return None;
        }
        self.elapsed_ms = self.elapsed_ms.saturating_add(frame_ms);
        let level = samples.iter().map(|s| u64::from(s.unsigned_abs())).sum::<u64>() / samples.len() as u64;
        let c = self.config;
        if level < u64::from(c.silence_threshold) {
            self.silence_ms = self.silence_ms.saturating_add(frame_ms);
            if self.silence_ms >= c.between_words_silence_ms {
                self.in_word = false;
                self.consecutive_voice_ms = 0;
            }
            if self.in_initial_silence && self.silence_ms >= c.initial_silence_ms {
                return self.decide(AmdDecision::Machine, AmdReason::InitialSilence);
            }
            if self.in_greeting && self.silence_ms >= c.after_greeting_silence_ms {
                return self.decide(AmdDecision::Human, AmdReason::AfterGreetingSilence);
            }
        } else {
            self.consecutive_voice_ms = self.consecutive_voice_ms.saturating_add(frame_ms);
            self.voice_ms = self.voice_ms.saturating_add(frame_ms);
            if self.consecutive_voice_ms >= c.min_word_length_ms && !self.in_word {
                self.words += 1;
                self.in_word = true;
            }
            if self.consecutive_voice_ms >= c.max_word_length_ms {
                return self.decide(AmdDecision::Machine, AmdReason::MaxWordLength);
            }
            if self.words >= c.max_words {
                return self.decide(AmdDecision::Machine, AmdReason::MaxWords);
            }
            if self.in_greeting && self.voice_ms >= c.greeting_ms {
                return self.decide(AmdDecision::Machine, AmdReason::LongGreeting);
            }
            if self.consecutive_voice_ms >= c.min_word_length_ms {
                self.silence_ms = 0;
                self.in_initial_silence = false;
                self.in_greeting = true;
            }
        }
        if self.elapsed_ms >= c.total_analysis_ms {
            return self.decide(AmdDecision::NotSure, AmdReason::TooLong);
        }
        None
    }
}

/// Analyses a whole recording in 20 ms frames; audio that ends before a decision is NOTSURE.
pub fn analyse(config: AmdConfig, samples: &[i16]) -> AmdResult {
    let mut detector = AnsweringMachineDetector::new(config);
    for frame in samples.chunks(160) {
        if let Some(result) = detector.push_frame(frame) {
            return result;
        }
    }
    AmdResult {
        decision: AmdDecision::NotSure,
        reason: AmdReason::TooLong,
        after_ms: detector.elapsed_ms,
        words: detector.words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wav::{load_wav, tests::testdata};
    use proptest::prelude::*;

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    fn speech(name: &str) -> Vec<i16> {
        load_wav(&testdata(name)).unwrap().samples
    }

    #[test]
    fn hello_then_silence_is_a_human() {
        let mut audio = silence(400);
        audio.extend(speech("hello.wav"));
        audio.extend(silence(3000));
        let result = analyse(AmdConfig::default(), &audio);
        assert_eq!(
            (result.decision, result.reason),
            (AmdDecision::Human, AmdReason::AfterGreetingSilence),
            "{result:?}"
        );
        assert!(result.words >= 1 && result.words < 3, "{result:?}");
        // Decided 800 ms after "Hello?" ended, well before the 5 s limit.
        assert!(result.after_ms < 400 + 840 + 900, "{result:?}");
    }

    #[test]
    fn a_long_greeting_is_a_machine() {
        let mut audio = silence(300);
        audio.extend(speech("greeting.wav"));
        let result = analyse(AmdConfig::default(), &audio);
        assert_eq!(result.decision, AmdDecision::Machine, "{result:?}");
        assert!(
            matches!(result.reason, AmdReason::LongGreeting | AmdReason::MaxWords),
            "{result:?}"
        );
        assert!(result.after_ms <= 2500, "{result:?}");
    }

    #[test]
    fn initial_silence_is_a_machine_and_endless_noise_not_sure() {
        let result = analyse(AmdConfig::default(), &silence(3000));
        assert_eq!(
            (result.decision, result.reason, result.after_ms),
            (AmdDecision::Machine, AmdReason::InitialSilence, 2500)
        );
        // Short bursts of noise below word length every 60 ms: never a word, never a decision until the limit.
        let mut blips = Vec::new();
        for _ in 0..100 {
            blips.extend(vec![3000i16; 320]);
            blips.extend(silence(60));
        }
        let result = analyse(
            AmdConfig {
                initial_silence_ms: 10_000,
                ..AmdConfig::default()
            },
            &blips,
        );
        assert_eq!(
            (result.decision, result.reason),
            (AmdDecision::NotSure, AmdReason::TooLong),
            "{result:?}"
        );
        assert_eq!(result.after_ms, 5000);
    }

    #[test]
    fn one_endless_word_is_a_machine() {
        // A continuous tone (fax, beep) is one long word; with the greeting limit lifted it hits max word length.
        let tone: Vec<i16> = (0..8000 * 6)
            .map(|n| if n % 16 < 8 { 4000 } else { -4000 })
            .collect();
        let config = AmdConfig {
            greeting_ms: 100_000,
            total_analysis_ms: 10_000,
            ..AmdConfig::default()
        };
        let result = analyse(config, &tone);
        assert_eq!(
            (result.decision, result.reason),
            (AmdDecision::Machine, AmdReason::MaxWordLength)
        );
        assert_eq!(result.reason.as_str(), "MAXWORDLENGTH");
    }

    #[test]
    fn decision_sticks() {
        let mut detector = AnsweringMachineDetector::new(AmdConfig::default());
        let frame = [0i16; 160];
        let first = (0..200).find_map(|_| detector.push_frame(&frame)).unwrap();
        assert_eq!(detector.push_frame(&[5000; 160]), Some(first));
        assert_eq!(detector.push_frame(&[]), Some(first));
    }

    proptest! {
        #[test]
        fn always_decides_within_total_time(frames in proptest::collection::vec(any::<bool>(), 260..300)) {
            let audio: Vec<i16> = frames.iter().flat_map(|voice| [if *voice { 2000i16 } else { 0 }; 160]).collect();
            let result = analyse(AmdConfig::default(), &audio);
            prop_assert!(result.after_ms <= 5000);
            prop_assert!(result.after_ms > 0);
        }
    }
}
