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
    /// Samples not yet written, one flat lane per [`RecordingChannel`]; index 0 is at position
    /// `written`. The caller's and the agent's lanes are always `placed` long; the supervisor's stays
    /// empty until one barges in, then is as long as the others. Flat lanes let a packet land as one
    /// copy and a drain leave as one (interleaved lanes cost a strided write per sample).
    lanes: [Vec<i16>; 3],
    placed: usize,
    written: i64,
    paused: bool,
}

/// Drained audio in planar form: what the WAV writer interleaves and the activity meter measures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StereoFrames {
    /// The caller (or a voicemail's only channel).
    pub left: Vec<i16>,
    /// The agent, with a barging supervisor mixed in.
    pub right: Vec<i16>,
}

impl StereoFrames {
    /// Room for `frames` frames without growing.
    pub fn with_capacity(frames: usize) -> Self {
        Self {
            left: Vec::with_capacity(frames),
            right: Vec::with_capacity(frames),
        }
    }

    /// Frames from interleaved `[left, right]` pairs.
    pub fn from_pairs(pairs: &[[i16; 2]]) -> Self {
        Self {
            left: pairs.iter().map(|[left, _]| *left).collect(),
            right: pairs.iter().map(|[_, right]| *right).collect(),
        }
    }

    /// Number of frames (both channels are always as long).
    pub fn len(&self) -> usize {
        self.left.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// Frame `index` as `[left, right]`.
    pub fn frame(&self, index: usize) -> Option<[i16; 2]> {
        Some([*self.left.get(index)?, *self.right.get(index)?])
    }

    /// Empties both channels, keeping their memory.
    pub fn clear(&mut self) {
        self.left.clear();
        self.right.clear();
    }
}

impl StereoTimeline {
    /// A timeline starting at `start`.
    pub fn new(start: Millis) -> Self {
        Self {
            start,
            channels: [ChannelAnchor::default(); 3],
            lanes: Default::default(),
            placed: 0,
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
        // Grow the lanes in use to cover the packet (the anchor keeps it within MAX_DRIFT_SAMPLES of
        // its arrival, so this is bounded).
        let end = usize::try_from(position + samples.len() as i64 - self.written).unwrap_or(0);
        let supervisor_joins = channel == RecordingChannel::Supervisor && self.lanes[2].is_empty();
        if end > self.placed || supervisor_joins {
            self.placed = self.placed.max(end);
            for (index, lane) in self.lanes.iter_mut().enumerate() {
                if index < 2 || !lane.is_empty() || supervisor_joins {
                    lane.resize(self.placed, 0);
                }
            }
        }
        // Samples before `written` are too late; the rest land in one contiguous run.
        let first = position - self.written;
        let skip = usize::try_from(-first).unwrap_or(0).min(samples.len());
        let from = usize::try_from(first.max(0))
            .unwrap_or(usize::MAX)
            .min(self.placed);
        let lane = &mut self.lanes[channel.index()];
        let (Some(to), Some(from_samples)) = (lane.get_mut(from..), samples.get(skip..)) else {
            return;
        };
        let count = to.len().min(from_samples.len());
        to[..count].copy_from_slice(&from_samples[..count]);
    }

    /// Takes the samples that are final at `now` (older than the hold-back), padding silence up to there.
    pub fn drain_until(&mut self, now: Millis, out: &mut StereoFrames) {
        let until = (now - self.start) * 8 - HOLD_BACK_SAMPLES;
        self.drain_to(until, out);
    }

    /// Takes everything placed so far.
    pub fn finish(&mut self, out: &mut StereoFrames) {
        let until = self.written + self.placed as i64;
        self.drain_to(until, out);
    }

    fn drain_to(&mut self, until: i64, out: &mut StereoFrames) {
        let Ok(wanted) = usize::try_from(until - self.written) else {
            return;
        };
        let taken = wanted.min(self.placed);
        let [caller, agent, supervisor] = &mut self.lanes;
        out.left.extend_from_slice(&caller[..taken]);
        let right_from = out.right.len();
        out.right.extend_from_slice(&agent[..taken]);
        if !supervisor.is_empty() {
            for (right, barged) in out.right[right_from..].iter_mut().zip(&supervisor[..taken]) {
                *right = right.saturating_add(*barged);
            }
        }
        for lane in &mut self.lanes {
            if !lane.is_empty() {
                lane.drain(..taken);
            }
        }
        self.placed -= taken;
        // Past what any leg sent: silence.
        out.left.resize(out.left.len() + (wanted - taken), 0);
        out.right.resize(out.right.len() + (wanted - taken), 0);
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
    /// Bytes written since write-out was last started.
    since_write_out: usize,
}

/// Write-out of a recording's pages is started every this many bytes (2 s of stereo audio), rather
/// than left to the kernel's flusher. Left alone, the flusher wrote every recording's last five
/// seconds at once and took most of a core for 150-250 ms while doing it, and the packets of every
/// call queued behind it (`bench load`, 1000 recorded calls: p99 latency 2-6 ms, worst 20-56 ms).
const START_WRITE_OUT_EVERY: usize = 64 * 1024;

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
            since_write_out: 0,
        })
    }

    /// Appends frames (a mono file keeps the left channel).
    pub fn write_frames(&mut self, frames: &StereoFrames) -> std::io::Result<()> {
        // Interleaved a piece at a time on the stack and handed to the buffered file: no buffer of
        // the whole batch is kept per recording (a thousand recordings would hold 16 MB for it).
        const FRAMES_PER_PIECE: usize = 256;
        let mut piece = [0u8; FRAMES_PER_PIECE * 4];
        let mut bytes_written = 0usize;
        for (left, right) in frames
            .left
            .chunks(FRAMES_PER_PIECE)
            .zip(frames.right.chunks(FRAMES_PER_PIECE))
        {
            let len = if self.channels == 1 {
                for (out, sample) in piece.chunks_exact_mut(2).zip(left) {
                    out.copy_from_slice(&sample.to_le_bytes());
                }
                left.len() * 2
            } else {
                for ((out, l), r) in piece.chunks_exact_mut(4).zip(left).zip(right) {
                    out[..2].copy_from_slice(&l.to_le_bytes());
                    out[2..].copy_from_slice(&r.to_le_bytes());
                }
                left.len() * 4
            };
            self.file.write_all(&piece[..len])?;
            bytes_written += len;
        }
        self.data_len = self
            .data_len
            .saturating_add(u32::try_from(bytes_written).unwrap_or(u32::MAX));
        self.since_write_out += bytes_written;
        if self.since_write_out >= START_WRITE_OUT_EVERY {
            self.start_write_out()?;
        }
        Ok(())
    }

    /// Hands what was written to the kernel and starts writing it to disk now, without waiting for it.
    /// Only a hint to the kernel, so its failure is not the recording's. (`POSIX_FADV_DONTNEED`, which
    /// also starts write-out, was tried: it drains every CPU's page lists whenever a page is still
    /// being written, which is every time here, and delayed every packet by milliseconds.)
    fn start_write_out(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let end = 44 + i64::from(self.data_len);
        let from = end - i64::try_from(self.since_write_out).unwrap_or(0);
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: sync_file_range takes a file descriptor and three integers and touches no memory
            // of ours; the descriptor is our open file for the whole call (`self.file` is borrowed).
            // No safe binding wraps it (nix and rustix do not).
            #[allow(unsafe_code)]
            let _ = unsafe {
                libc::sync_file_range(
                    self.file.get_ref().as_raw_fd(),
                    from,
                    end - from,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        self.since_write_out = 0;
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
    pub fn push(&mut self, frames: &StereoFrames) {
        self.samples += frames.len() as u64;
        for ((activity, block), lane) in self
            .activity
            .iter_mut()
            .zip(&mut self.block)
            .zip([&frames.left, &frames.right])
        {
            let mut rest = lane.as_slice();
            while !rest.is_empty() {
                // Finish the block in progress, then whole 20 ms blocks, each measured in one pass.
                let (part, after) = rest.split_at((ACTIVITY_FRAME - block.1).min(rest.len()));
                rest = after;
                let (sum, peak) = part.iter().fold((0u64, 0u16), |(sum, peak), sample| {
                    let magnitude = sample.unsigned_abs();
                    (
                        sum + u64::from(magnitude) * u64::from(magnitude),
                        peak.max(magnitude),
                    )
                });
                activity.peak = activity.peak.max(peak);
                block.0 += sum;
                block.1 += part.len();
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
        let mut out = StereoFrames::default();
        t.finish(&mut out);
        assert_eq!(out.len(), 640);
        assert_eq!(out.frame(0).unwrap(), [100, 0]);
        assert_eq!(out.frame(160).unwrap(), [101, 0]);
        assert_eq!(out.frame(320).unwrap(), [0, -7]); // caller's packet 2 lost: silence; agent starts at 40 ms
        assert_eq!(out.frame(480).unwrap(), [103, -7]);
    }

    #[test]
    fn late_packets_fill_their_slot_and_drain_holds_back() {
        let mut t = StereoTimeline::new(0);
        t.push(RecordingChannel::Caller, 0, 0, &frame(1));
        t.push(RecordingChannel::Caller, 320, 40, &frame(3));
        t.push(RecordingChannel::Caller, 160, 45, &frame(2)); // reordered
        let mut out = StereoFrames::default();
        t.drain_until(100, &mut out);
        assert!(out.is_empty(), "300 ms hold-back");
        t.drain_until(400, &mut out);
        assert_eq!(out.len(), 800);
        assert_eq!(
            (out.left[0], out.left[160], out.left[320], out.left[480]),
            (1, 2, 3, 0)
        );
        // A packet for audio already written is dropped, not misplaced.
        t.push(RecordingChannel::Caller, 0, 410, &frame(9));
        t.finish(&mut out);
        assert!(out.left.iter().all(|sample| *sample != 9));
    }

    #[test]
    fn a_long_call_drained_every_half_second_keeps_every_sample_in_place() {
        // Ten seconds of both sides, drained as the recorder does: the pending lanes wrap around
        // their ring buffer many times.
        let mut t = StereoTimeline::new(0);
        let mut out = StereoFrames::default();
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
        for i in 0..out.len() {
            let k = (i / 160) as i16;
            assert_eq!(out.frame(i), Some([k, -k]), "sample {i}");
        }
        let mut wav =
            WavFileWriter::create(&std::env::temp_dir().join(format!("tl-{}.wav", std::process::id())))
                .unwrap();
        wav.write_frames(&StereoFrames::from_pairs(&[[1, -1], [1, -1]]))
            .unwrap();
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
        let mut out = StereoFrames::default();
        t.finish(&mut out);
        assert_eq!(
            (out.right[0], out.right[160], out.right[320], out.right[480]),
            (5, 0, 0, 7)
        );
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
        let mut out = StereoFrames::default();
        t.finish(&mut out);
        assert_eq!(out.len(), 480);
        assert_eq!(out.frame(0).unwrap(), [100, -200]);
        assert_eq!(out.frame(160).unwrap(), [0, -170]);
        assert_eq!(out.frame(320).unwrap(), [0, i16::MIN], "saturated, not wrapped");
    }

    #[test]
    fn a_supervisor_who_barges_in_after_a_drain_lands_at_their_arrival() {
        let mut t = StereoTimeline::new(0);
        let mut out = StereoFrames::default();
        for k in 0..50u32 {
            let at = i64::from(k) * 20;
            t.push(RecordingChannel::Agent, k * 160, at, &frame(-100));
            if k == 40 {
                // 800 ms: everything before 500 ms is final and written.
                t.drain_until(at, &mut out);
                assert_eq!(out.len(), 4000);
            }
        }
        // The supervisor barges in at 900 ms, after the agent's lane was partly written.
        t.push(RecordingChannel::Supervisor, 123, 900, &frame(40));
        t.finish(&mut out);
        assert_eq!(out.len(), 50 * 160);
        assert_eq!(out.frame(4000), Some([0, -100]));
        assert_eq!(out.frame(900 * 8 - 1), Some([0, -100]));
        assert_eq!(out.frame(900 * 8), Some([0, -60]), "mixed from its arrival");
        assert_eq!(out.frame(900 * 8 + 159), Some([0, -60]));
        assert_eq!(out.frame(900 * 8 + 160), Some([0, -100]));
    }

    #[test]
    fn the_meter_measures_the_same_however_the_frames_are_split() {
        let audio: Vec<[i16; 2]> = (0..8000)
            .map(|i| {
                let loud = (i / 320) % 2 == 0; // whole 20 ms blocks
                let level = if loud { 5000.0 } else { 20.0 };
                [
                    ((f64::from(i) * 0.2).sin() * level) as i16,
                    -((f64::from(i) * 0.1).cos() * 300.0) as i16,
                ]
            })
            .collect();
        let mut whole = ActivityMeter::new();
        whole.push(&StereoFrames::from_pairs(&audio));
        let mut split = ActivityMeter::new();
        // Uneven pieces: blocks of 160 straddle the pushes.
        let mut rest = audio.as_slice();
        for size in [1usize, 159, 161, 7, 3000, 13].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, after) = rest.split_at((*size).min(rest.len()));
            split.push(&StereoFrames::from_pairs(piece));
            rest = after;
        }
        assert_eq!(whole.summary(), split.summary());
        // Loud in 13 of the 25 runs of 320 samples: 13 × 40 ms.
        assert_eq!(
            whole.summary().channels[0].active_ms,
            520,
            "{:?}",
            whole.summary()
        );
        assert_eq!(whole.summary().channels[1].active_ms, 1000);
    }

    #[test]
    fn silence_and_line_noise_are_silent_speech_is_not() {
        let mut meter = ActivityMeter::new();
        meter.push(&StereoFrames::from_pairs(&vec![[0, 0]; 8000 * 5]));
        // Line noise around -55 dBFS.
        let noise: Vec<[i16; 2]> = (0..8000)
            .map(|i| [if i % 2 == 0 { 60 } else { -60 }, 0])
            .collect();
        meter.push(&StereoFrames::from_pairs(&noise));
        let summary = meter.summary();
        assert_eq!(summary.duration_ms, 6000);
        assert!(summary.is_silent(), "{summary:?}");
        // Half a second of a loud tone in the caller's channel.
        let tone: Vec<[i16; 2]> = (0..4000)
            .map(|i| [((f64::from(i) * 0.3).sin() * 6000.0) as i16, 0])
            .collect();
        meter.push(&StereoFrames::from_pairs(&tone));
        let summary = meter.summary();
        assert!(!summary.is_silent());
        assert_eq!(summary.channels[0].active_ms, 500);
        assert_eq!(summary.channels[1], ChannelActivity::default());
        assert!(summary.channels[0].peak >= 5900);
    }

    #[test]
    fn a_short_click_is_not_a_message() {
        let mut meter = ActivityMeter::new();
        meter.push(&StereoFrames::from_pairs(&vec![[0, 0]; 8000]));
        meter.push(&StereoFrames::from_pairs(&vec![[0, i16::MIN]; 160 * 5])); // 100 ms, full scale, agent side
        meter.push(&StereoFrames::from_pairs(&vec![[0, 0]; 8000]));
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
    fn a_long_recording_started_to_disk_as_it_goes_reads_back_whole() {
        let dir = std::env::temp_dir().join(format!("media-rec-long-{}", std::process::id()));
        let path = dir.join("long.wav");
        let mut writer = WavFileWriter::create(&path).unwrap();
        // Ten seconds in half-second batches: write-out is started every 64 kB along the way.
        for batch in 0..20i16 {
            let pairs: Vec<[i16; 2]> = (0..4000).map(|i| [batch, (i % 100) as i16]).collect();
            writer.write_frames(&StereoFrames::from_pairs(&pairs)).unwrap();
        }
        writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 44 + 20 * 4000 * 4);
        assert_eq!(&bytes[40..44], &(20u32 * 4000 * 4).to_le_bytes());
        for batch in 0..20usize {
            let at = 44 + batch * 4000 * 4 + 99 * 4;
            assert_eq!(&bytes[at..at + 4], &[batch as u8, 0, 99, 0], "batch {batch}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writer_produces_a_valid_stereo_wav() {
        let dir = std::env::temp_dir().join(format!("media-rec-test-{}", std::process::id()));
        let path = dir.join("nested").join("call.wav");
        let mut w = WavFileWriter::create(&path).unwrap();
        w.write_frames(&StereoFrames::from_pairs(&[[1, -1], [2, -2], [3, -3]]))
            .unwrap();
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
