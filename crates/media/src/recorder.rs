//! Call recording: a stereo 16-bit 8 kHz WAV with the caller on the left and the agent on the right.
//!
//! A supervisor who barges in is a party to the call and is recorded too, mixed into the agent's channel
//! (the agent's side of the conversation); a supervisor who only listens or whispers is not recorded.
//!
//! [`StereoTimeline`] is the pure core: each channel's packets are placed by their RTP timestamp relative to
//! the arrival of that channel's first packet, so a lost packet leaves silence of its exact length and the two
//! channels stay aligned. Paused time (card payments) is recorded as silence, keeping the timeline true to
//! the call. [`WavFileWriter`] writes the result and fixes the header sizes when it finishes; files are created
//! readable by their owner only (0600, directories 0700): recordings are personal data.
//!
//! [`ActivityMeter`] measures what was written, so that the owner can tell a voicemail of pure silence (an
//! INVITE nobody speaks on, a caller who hung up without a word) from one worth keeping.

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
        // Grow the pending lanes once per packet (not once per sample: that was the recorder's largest cost).
        let end = position + samples.len() as i64 - self.written;
        if end > self.pending.len() as i64 {
            self.pending.resize(end as usize, [0; 3]);
        }
        // Samples before `written` are too late; the rest land in one contiguous run of lanes.
        let first = position - self.written;
        let skip = usize::try_from(-first).unwrap_or(0).min(samples.len());
        let from = usize::try_from(first.max(0))
            .unwrap_or(usize::MAX)
            .min(self.pending.len());
        for (frame, sample) in self.pending.range_mut(from..).zip(&samples[skip..]) {
            frame[lane] = *sample;
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
        let Ok(wanted) = usize::try_from(until - self.written) else {
            return;
        };
        let placed = wanted.min(self.pending.len());
        let mix = |[caller, agent, supervisor]: &[i16; 3]| [*caller, agent.saturating_add(*supervisor)];
        let (front, back) = self.pending.as_slices();
        let from_front = placed.min(front.len());
        out.extend(front[..from_front].iter().map(mix));
        out.extend(back[..placed - from_front].iter().map(mix));
        self.pending.drain(..placed);
        // Past what any leg sent: silence.
        out.resize(out.len() + (wanted - placed), [0, 0]);
        self.written = until;
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
            create_private_dir_all(dir)?;
        }
        let mut file = BufWriter::new(create_private_file(path)?);
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
        // One write of the whole batch, not one call per sample; filled in place, which compiles
        // to a tight copy (an iterator chain collected into a Vec grew it sample by sample).
        let width = 2 * usize::from(self.channels);
        let mut bytes = vec![0u8; frames.len() * width];
        for (out, [left, right]) in bytes.chunks_exact_mut(width).zip(frames) {
            out[..2].copy_from_slice(&left.to_le_bytes());
            if let Some(second) = out.get_mut(2..4) {
                second.copy_from_slice(&right.to_le_bytes());
            }
        }
        self.file.write_all(&bytes)?;
        let bytes = bytes.len();
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

/// Creates `dir` and its missing parents with mode 0700 (an existing directory keeps its mode).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates (or truncates) a file with mode 0600.
fn create_private_file(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Samples in one 20 ms analysis frame at 8 kHz.
const ACTIVITY_FRAME: usize = 160;
/// A frame whose RMS level is below this is silence: about -45 dBFS, above line and comfort noise
/// (-60 to -50 dBFS) and far below speech (-35 to -15 dBFS).
pub const ACTIVE_FRAME_RMS: f64 = 184.0;
/// A recording with less than this of active audio in every channel is silent (a click or a breath is not a
/// message).
pub const MIN_ACTIVE_MS: u64 = 300;

/// How much of one channel was more than silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelActivity {
    /// Milliseconds of 20 ms frames above [`ACTIVE_FRAME_RMS`].
    pub active_ms: u64,
    /// Largest absolute sample.
    pub peak: u16,
}

/// What a finished recording holds, measured on the samples written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordingActivity {
    /// Length of the recording.
    pub duration_ms: u64,
    /// Left (caller, or the voicemail's only channel) and right (agent).
    pub channels: [ChannelActivity; 2],
}

impl RecordingActivity {
    /// True when no channel has [`MIN_ACTIVE_MS`] of audio above silence: nothing worth keeping.
    pub fn is_silent(&self) -> bool {
        self.channels.iter().all(|c| c.active_ms < MIN_ACTIVE_MS)
    }
}

/// Measures written frames in 20 ms blocks (the pure core of [`RecordingActivity`]).
#[derive(Debug, Clone, Default)]
pub struct ActivityMeter {
    samples: u64,
    /// Sum of squares and count of the block in progress, per channel.
    block: [(u64, usize); 2],
    activity: [ChannelActivity; 2],
}

impl ActivityMeter {
    /// A meter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds frames as they are written.
    pub fn push(&mut self, frames: &[[i16; 2]]) {
        for frame in frames {
            self.samples += 1;
            for (lane, sample) in frame.iter().enumerate() {
                let magnitude = sample.unsigned_abs();
                let (Some(activity), Some(block)) = (self.activity.get_mut(lane), self.block.get_mut(lane))
                else {
                    continue;
                };
                activity.peak = activity.peak.max(magnitude);
                block.0 += u64::from(magnitude) * u64::from(magnitude);
                block.1 += 1;
                if block.1 == ACTIVITY_FRAME {
                    let rms = (block.0 as f64 / ACTIVITY_FRAME as f64).sqrt();
                    if rms > ACTIVE_FRAME_RMS {
                        activity.active_ms += 20;
                    }
                    *block = (0, 0);
                }
            }
        }
    }

    /// What has been measured so far (a last partial block counts by its own length).
    pub fn summary(&self) -> RecordingActivity {
        let mut channels = self.activity;
        for (channel, (sum, count)) in channels.iter_mut().zip(self.block) {
            if count > 0 && (sum as f64 / count as f64).sqrt() > ACTIVE_FRAME_RMS {
                channel.active_ms += count as u64 / 8;
            }
        }
        RecordingActivity {
            duration_ms: self.samples / 8,
            channels,
        }
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
    fn a_long_call_drained_every_half_second_keeps_every_sample_in_place() {
        // Ten seconds of both sides, drained as the recorder does: the pending lanes wrap around
        // their ring buffer many times.
        let mut t = StereoTimeline::new(0);
        let mut out = Vec::new();
        for k in 0..500i16 {
            let at = i64::from(k) * 20;
            t.push(RecordingChannel::Caller, k as u32 * 160, at, &frame(k));
            t.push(RecordingChannel::Agent, 9_000 + k as u32 * 160, at, &frame(-k));
            if k % 25 == 24 {
                t.drain_until(at, &mut out);
            }
        }
        t.finish(&mut out);
        assert_eq!(out.len(), 500 * 160);
        for (i, sample) in out.iter().enumerate() {
            let k = (i / 160) as i16;
            assert_eq!(*sample, [k, -k], "sample {i}");
        }
        let mut wav =
            WavFileWriter::create(&std::env::temp_dir().join(format!("tl-{}.wav", std::process::id())))
                .unwrap();
        wav.write_frames(&out[160..162]).unwrap();
        let path = wav.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            &bytes[44..],
            &[1, 0, 0xff, 0xff, 1, 0, 0xff, 0xff],
            "[1, -1] twice, little-endian"
        );
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
    fn silence_and_line_noise_are_silent_speech_is_not() {
        let mut meter = ActivityMeter::new();
        meter.push(&vec![[0, 0]; 8000 * 5]);
        // Line noise around -55 dBFS.
        let noise: Vec<[i16; 2]> = (0..8000)
            .map(|i| [if i % 2 == 0 { 60 } else { -60 }, 0])
            .collect();
        meter.push(&noise);
        let summary = meter.summary();
        assert_eq!(summary.duration_ms, 6000);
        assert!(summary.is_silent(), "{summary:?}");
        // Half a second of a loud tone in the caller's channel.
        let tone: Vec<[i16; 2]> = (0..4000)
            .map(|i| [((f64::from(i) * 0.3).sin() * 6000.0) as i16, 0])
            .collect();
        meter.push(&tone);
        let summary = meter.summary();
        assert!(!summary.is_silent());
        assert_eq!(summary.channels[0].active_ms, 500);
        assert_eq!(summary.channels[1], ChannelActivity::default());
        assert!(summary.channels[0].peak >= 5900);
    }

    #[test]
    fn a_short_click_is_not_a_message() {
        let mut meter = ActivityMeter::new();
        meter.push(&vec![[0, 0]; 8000]);
        meter.push(&vec![[0, i16::MIN]; 160 * 5]); // 100 ms, full scale, agent side
        meter.push(&vec![[0, 0]; 8000]);
        let summary = meter.summary();
        assert_eq!(summary.channels[1].active_ms, 100);
        assert_eq!(summary.channels[1].peak, 32768);
        assert!(summary.is_silent());
    }

    #[cfg(unix)]
    #[test]
    fn recordings_and_their_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("media-rec-mode-{}", std::process::id()));
        let path = dir.join("inner").join("private.wav");
        let writer = WavFileWriter::create_mono(&path).unwrap();
        writer.finish().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("inner")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
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
