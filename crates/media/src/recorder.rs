//! Call recording: a stereo 16-bit 8 kHz WAV with the caller on the left and the agent on the right.
//!
//! A supervisor who barges in is a party to the call and is recorded too, mixed into the agent's channel
//! (the agent's side of the conversation); a supervisor who only listens or whispers is not recorded.
//!
//! [`StereoTimeline`] is the pure core: each channel's packets are placed by their RTP timestamp relative to
//! the arrival of that channel's first packet, so a lost packet leaves silence of its exact length and the two
//! channels stay aligned. Paused time (card payments) is recorded as silence, keeping the timeline true to
//! the call. [`WavFileWriter`] writes the result and fixes the header sizes when it finishes.

use crate::wav::pcm_header;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Milliseconds on the owner's clock.
pub type Millis = i64;

/// Which side of the stereo file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordingChannel {
    /// Left: the caller.
    Caller,
    /// Right: the agent.
    Agent,
    /// Mixed into the right channel: a supervisor who barged in.
    Supervisor,
}

impl RecordingChannel {
    fn index(self) -> usize {
        match self {
            Self::Caller => 0,
            Self::Agent => 1,
            Self::Supervisor => 2,
        }
    }
}

/// Samples held back for late packets before they are written.
const HOLD_BACK_SAMPLES: i64 = 8 * 300;
/// A packet placed further than this from where its arrival time says is a new source: re-anchor.
const MAX_DRIFT_SAMPLES: i64 = 8 * 1000;

#[derive(Debug, Clone, Copy, Default)]
struct ChannelAnchor {
    /// (RTP timestamp, sample position) of the packet that anchored the channel.
    anchor: Option<(u32, i64)>,
}

/// Places audio of the caller, the agent and a barging supervisor on one stereo sample timeline.
#[derive(Debug, Clone)]
pub struct StereoTimeline {
    start: Millis,
    channels: [ChannelAnchor; 3],
    /// Samples not yet written, one lane per [`RecordingChannel`]; `pending[0]` is at position `written`.
    pending: VecDeque<[i16; 3]>,
    written: i64,
    paused: bool,
}

impl StereoTimeline {
    /// A timeline starting at `start`.
    pub fn new(start: Millis) -> Self {
        Self {
            start,
            channels: [ChannelAnchor::default(); 3],
            pending: VecDeque::new(),
            written: 0,
            paused: false,
        }
    }

    /// Pauses (audio is replaced by silence) or resumes.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Whether the recording is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Adds one packet's decoded samples.
    pub fn push(&mut self, channel: RecordingChannel, rtp_timestamp: u32, arrival: Millis, samples: &[i16]) {
        let by_arrival = (arrival - self.start).max(0) * 8;
        let slot = &mut self.channels[channel.index()];
        let position = match slot.anchor {
            Some((ts, pos)) => {
                let p = pos + i64::from(rtp_timestamp.wrapping_sub(ts) as i32);
                if (p - by_arrival).abs() > MAX_DRIFT_SAMPLES {
                    slot.anchor = Some((rtp_timestamp, by_arrival));
                    by_arrival
                } else {
                    p
                }
            }
            None => {
                slot.anchor = Some((rtp_timestamp, by_arrival));
                by_arrival
            }
        };
        if self.paused {
            return; // the gap stays silent
        }
        let lane = channel.index();
        for (i, sample) in samples.iter().enumerate() {
            let at = position + i as i64 - self.written;
            if at < 0 {
                continue; // already written: too late
            }
            let at = at as usize;
            if at >= self.pending.len() {
                self.pending.resize(at + 1, [0; 3]);
            }
            if let Some(frame) = self.pending.get_mut(at) {
                frame[lane] = *sample;
            }
        }
    }

    /// Takes the samples that are final at `now` (older than the hold-back), padding silence up to there.
    pub fn drain_until(&mut self, now: Millis, out: &mut Vec<[i16; 2]>) {
        let until = (now - self.start) * 8 - HOLD_BACK_SAMPLES;
        self.drain_to(until, out);
    }

    /// Takes everything placed so far.
    pub fn finish(&mut self, out: &mut Vec<[i16; 2]>) {
        let until = self.written + self.pending.len() as i64;
        self.drain_to(until, out);
    }

    fn drain_to(&mut self, until: i64, out: &mut Vec<[i16; 2]>) {
        while self.written < until {
            let [caller, agent, supervisor] = self.pending.pop_front().unwrap_or([0; 3]);
            out.push([caller, agent.saturating_add(supervisor)]);
            self.written += 1;
        }
    }
}

/// Writes a 16-bit 8 kHz WAV incrementally (stereo, or mono with the left channel only) and fixes its
/// sizes on [`WavFileWriter::finish`].
#[derive(Debug)]
pub struct WavFileWriter {
    file: BufWriter<File>,
    path: PathBuf,
    data_len: u32,
    channels: u16,
}

impl WavFileWriter {
    /// Creates a stereo file (and its directory).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::create_with_channels(path, 2)
    }

    /// Creates a mono file (a voicemail: what one party said).
    pub fn create_mono(path: &Path) -> std::io::Result<Self> {
        Self::create_with_channels(path, 1)
    }

    fn create_with_channels(path: &Path, channels: u16) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = BufWriter::new(File::create(path)?);
        file.write_all(&pcm_header(channels, 8000, 0))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            data_len: 0,
            channels,
        })
    }

    /// Appends frames (a mono file keeps the left channel).
    pub fn write_frames(&mut self, frames: &[[i16; 2]]) -> std::io::Result<()> {
        for [left, right] in frames {
            self.file.write_all(&left.to_le_bytes())?;
            if self.channels == 2 {
                self.file.write_all(&right.to_le_bytes())?;
            }
        }
        let bytes = frames.len() * 2 * usize::from(self.channels);
        self.data_len = self
            .data_len
            .saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
        Ok(())
    }

    /// Writes the final header and closes the file, returning its path.
    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        self.file.flush()?;
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&pcm_header(self.channels, 8000, self.data_len))?;
        file.sync_all()?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(value: i16) -> Vec<i16> {
        vec![value; 160]
    }

    #[test]
    fn channels_align_and_lost_packets_are_silence() {
        let mut t = StereoTimeline::new(1000);
        // Caller packets every 20 ms from t=1000, packet 2 lost; agent starts 40 ms later.
        for k in [0u32, 1, 3] {
            t.push(
                RecordingChannel::Caller,
                5000 + k * 160,
                1000 + i64::from(k) * 20,
                &frame(100 + k as i16),
            );
        }
        for k in 0..2u32 {
            t.push(
                RecordingChannel::Agent,
                777 + k * 160,
                1040 + i64::from(k) * 20,
                &frame(-7),
            );
        }
        let mut out = Vec::new();
        t.finish(&mut out);
        assert_eq!(out.len(), 640);
        assert_eq!(out[0], [100, 0]);
        assert_eq!(out[160], [101, 0]);
        assert_eq!(out[320], [0, -7]); // caller's packet 2 lost: silence; agent starts at 40 ms
        assert_eq!(out[480], [103, -7]);
    }

    #[test]
    fn late_packets_fill_their_slot_and_drain_holds_back() {
        let mut t = StereoTimeline::new(0);
        t.push(RecordingChannel::Caller, 0, 0, &frame(1));
        t.push(RecordingChannel::Caller, 320, 40, &frame(3));
        t.push(RecordingChannel::Caller, 160, 45, &frame(2)); // reordered
        let mut out = Vec::new();
        t.drain_until(100, &mut out);
        assert!(out.is_empty(), "300 ms hold-back");
        t.drain_until(400, &mut out);
        assert_eq!(out.len(), 800);
        assert_eq!((out[0][0], out[160][0], out[320][0], out[480][0]), (1, 2, 3, 0));
        // A packet for audio already written is dropped, not misplaced.
        t.push(RecordingChannel::Caller, 0, 410, &frame(9));
        t.finish(&mut out);
        assert!(out.iter().all(|f| f[0] != 9));
    }

    #[test]
    fn paused_audio_is_silence_and_a_new_source_reanchors() {
        let mut t = StereoTimeline::new(0);
        t.push(RecordingChannel::Agent, 0, 0, &frame(5));
        t.set_paused(true);
        assert!(t.is_paused());
        t.push(RecordingChannel::Agent, 160, 20, &frame(6));
        t.set_paused(false);
        // The agent's phone restarts with a random timestamp: placed by arrival (60 ms).
        t.push(RecordingChannel::Agent, 3_000_000_000, 60, &frame(7));
        let mut out = Vec::new();
        t.finish(&mut out);
        assert_eq!((out[0][1], out[160][1], out[320][1], out[480][1]), (5, 0, 0, 7));
    }

    #[test]
    fn a_barging_supervisor_is_mixed_into_the_agent_channel() {
        let mut t = StereoTimeline::new(0);
        t.push(RecordingChannel::Caller, 0, 0, &frame(100));
        t.push(RecordingChannel::Agent, 50, 0, &frame(-200));
        // The supervisor's own stream starts 20 ms later, anchored by its arrival.
        t.push(RecordingChannel::Supervisor, 9999, 20, &frame(30));
        t.push(RecordingChannel::Agent, 210, 20, &frame(-200));
        t.push(RecordingChannel::Supervisor, 10159, 40, &frame(i16::MIN));
        t.push(RecordingChannel::Agent, 370, 40, &frame(-200));
        let mut out = Vec::new();
        t.finish(&mut out);
        assert_eq!(out.len(), 480);
        assert_eq!(out[0], [100, -200]);
        assert_eq!(out[160], [0, -170]);
        assert_eq!(out[320], [0, i16::MIN], "saturated, not wrapped");
    }

    #[test]
    fn writer_produces_a_valid_stereo_wav() {
        let dir = std::env::temp_dir().join(format!("media-rec-test-{}", std::process::id()));
        let path = dir.join("nested").join("call.wav");
        let mut w = WavFileWriter::create(&path).unwrap();
        w.write_frames(&[[1, -1], [2, -2], [3, -3]]).unwrap();
        assert_eq!(w.finish().unwrap(), path);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 44 + 12);
        assert_eq!(&bytes[22..24], &2u16.to_le_bytes());
        assert_eq!(&bytes[40..44], &12u32.to_le_bytes());
        assert_eq!(&bytes[44..48], &[1, 0, 0xff, 0xff]);
        // The mono prompt loader rejects it, naming the channel count: a useful cross-check of the header.
        assert_eq!(
            crate::wav::parse_wav(&bytes),
            Err(crate::wav::WavProblem::NotMono(2))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
