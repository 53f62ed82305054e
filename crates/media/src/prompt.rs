//! Prompts: audio converted once to a leg's G.711 law and cached, and a player that paces them out as 20 ms
//! frames, in sequences, looped (music on hold), and stoppable at any frame (barge-in).
//!
//! The player is pure: its owner asks for the next frame every 20 ms and stamps it with the leg's outgoing
//! sequence number and timestamp ([`crate::stream::OutgoingStream`]).

use crate::g711::{G711, SAMPLES_PER_FRAME};
use crate::wav::{WavLoadError, load_wav};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Audio ready to send: G.711 bytes in one law, shared between every call that plays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    name: Arc<str>,
    law: G711,
    payload: Arc<[u8]>,
}

impl Prompt {
    /// Encodes linear 8 kHz samples for `law`.
    pub fn from_samples(name: &str, law: G711, samples: &[i16]) -> Self {
        let payload: Vec<u8> = samples.iter().map(|s| law.encode(*s)).collect();
        Self {
            name: name.into(),
            law,
            payload: payload.into(),
        }
    }
    /// The prompt's name (its file name when loaded), safe for logs.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The law of the payload.
    pub fn law(&self) -> G711 {
        self.law
    }
    /// The encoded audio.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// Number of 20 ms frames (the last one padded with silence).
    pub fn frames(&self) -> usize {
        self.payload.len().div_ceil(SAMPLES_PER_FRAME)
    }
    /// The same audio in another law (direct byte transcoding, no linear step).
    pub fn to_law(&self, law: G711) -> Self {
        let mut bytes = self.payload.to_vec();
        self.law.transcode_in_place(law, &mut bytes);
        Self {
            name: self.name.clone(),
            law,
            payload: bytes.into(),
        }
    }
}

/// Loads each file once and keeps its encodings for each law.
#[derive(Debug, Default)]
pub struct PromptCache {
    entries: Mutex<HashMap<(PathBuf, G711), Prompt>>,
}

impl PromptCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prompt for `path` in `law`, loading and converting it on first use.
    pub fn get(&self, path: &Path, law: G711) -> Result<Prompt, WavLoadError> {
        let key = (path.to_path_buf(), law);
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        let audio = load_wav(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let prompt = Prompt::from_samples(&name, law, &audio.samples);
        self.lock().insert(key, prompt.clone());
        Ok(prompt)
    }

    /// Number of cached (file, law) entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, G711), Prompt>> {
        // A panic while holding the lock cannot leave the map half-updated (single insert), so poison is harmless.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Plays a sequence of prompts, optionally looping, as 20 ms frames.
#[derive(Debug, Clone)]
pub struct PromptPlayer {
    sequence: Vec<Prompt>,
    index: usize,
    offset: usize,
    looping: bool,
    stopped: bool,
    law: G711,
}

impl PromptPlayer {
    /// Plays `sequence` once (or forever if `looping`) in `law`; prompts in the other law are transcoded here.
    pub fn new(sequence: Vec<Prompt>, law: G711, looping: bool) -> Self {
        let sequence: Vec<Prompt> = sequence
            .into_iter()
            .map(|p| if p.law == law { p } else { p.to_law(law) })
            .filter(|p| !p.payload.is_empty())
            .collect();
        Self {
            sequence,
            index: 0,
            offset: 0,
            looping,
            stopped: false,
            law,
        }
    }

    /// Fills `frame` with the next 20 ms and returns true, or returns false once the sequence is over or
    /// stopped. A prompt's last partial frame is padded with silence; prompts are not mixed across frames.
    pub fn next_frame(&mut self, frame: &mut [u8; SAMPLES_PER_FRAME]) -> bool {
        if self.stopped {
            return false;
        }
        if self.index >= self.sequence.len() {
            if !self.looping || self.sequence.is_empty() {
                self.stopped = true;
                return false;
            }
            self.index = 0;
        }
        let Some(prompt) = self.sequence.get(self.index) else {
            return false;
        };
        let rest = prompt.payload.get(self.offset..).unwrap_or(&[]);
        let take = rest.len().min(SAMPLES_PER_FRAME);
        frame[..take].copy_from_slice(&rest[..take]);
        frame[take..].fill(self.law.silence());
        self.offset += take;
        if self.offset >= prompt.payload.len() {
            self.index += 1;
            self.offset = 0;
        }
        true
    }

    /// Stops playback now (barge-in, hold released); later frames are none.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// True when no more frames will come.
    pub fn is_finished(&self) -> bool {
        self.stopped || (!self.looping && self.index >= self.sequence.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wav::tests::testdata;

    fn frames(player: &mut PromptPlayer, max: usize) -> Vec<[u8; 160]> {
        let mut out = Vec::new();
        let mut frame = [0u8; 160];
        while out.len() < max && player.next_frame(&mut frame) {
            out.push(frame);
        }
        out
    }

    #[test]
    fn a_prompt_is_split_into_padded_20ms_frames() {
        let prompt = Prompt {
            name: "t".into(),
            law: G711::Pcmu,
            payload: (0..400u32).map(|i| i as u8).collect(),
        };
        assert_eq!(prompt.frames(), 3);
        let mut player = PromptPlayer::new(vec![prompt.clone()], G711::Pcmu, false);
        let out = frames(&mut player, 10);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1][0], 160);
        assert_eq!(&out[2][..80], &prompt.payload()[320..]);
        assert!(out[2][80..].iter().all(|b| *b == G711::Pcmu.silence()));
        assert!(player.is_finished());
    }

    #[test]
    fn sequences_play_in_order_and_loops_repeat() {
        let a = Prompt::from_samples("a", G711::Pcma, &[1000; 160]);
        let b = Prompt::from_samples("b", G711::Pcma, &[-1000; 320]);
        let mut once = PromptPlayer::new(vec![a.clone(), b.clone()], G711::Pcma, false);
        let out = frames(&mut once, 100);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0][0], G711::Pcma.encode(1000));
        assert_eq!(out[2][0], G711::Pcma.encode(-1000));

        let mut moh = PromptPlayer::new(vec![a, b], G711::Pcma, true);
        let out = frames(&mut moh, 10);
        assert_eq!(out.len(), 10);
        assert_eq!(out[3][0], G711::Pcma.encode(1000));
        assert!(!moh.is_finished());
        moh.stop();
        assert!(moh.is_finished());
        assert!(!moh.next_frame(&mut [0; 160]));
    }

    #[test]
    fn empty_loops_end_instead_of_spinning() {
        let empty = Prompt::from_samples("empty", G711::Pcmu, &[]);
        let mut player = PromptPlayer::new(vec![empty], G711::Pcmu, true);
        assert!(!player.next_frame(&mut [0; 160]));
    }

    #[test]
    fn other_law_prompts_are_transcoded() {
        let mu = Prompt::from_samples("x", G711::Pcmu, &[3000; 160]);
        let mut player = PromptPlayer::new(vec![mu], G711::Pcma, false);
        let out = frames(&mut player, 2);
        assert_eq!(out[0][0], crate::g711::ulaw_to_alaw(G711::Pcmu.encode(3000)));
    }

    #[test]
    fn cache_loads_once_per_law_and_reports_bad_files() {
        let cache = PromptCache::new();
        let first = cache.get(&testdata("hello.wav"), G711::Pcmu).unwrap();
        let again = cache.get(&testdata("hello.wav"), G711::Pcmu).unwrap();
        assert!(Arc::ptr_eq(&first.payload, &again.payload));
        cache.get(&testdata("hello.wav"), G711::Pcma).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(first.name(), "hello.wav");
        let err = cache
            .get(&testdata("no-such-prompt.wav"), G711::Pcmu)
            .unwrap_err();
        assert!(err.to_string().contains("no-such-prompt.wav"));
    }
}
