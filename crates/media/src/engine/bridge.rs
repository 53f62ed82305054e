//! Bridging two legs, putting one on hold with music, muting a side, attaching a supervisor's leg (listen,
//! whisper, barge), and recording the pair.
//!
//! Hold, mutes and the monitor mode live in one [`BridgeState`] word shared with the legs' tasks: the relay
//! reads it with one atomic load per packet, so none of them costs a message on the hot path. Attaching a
//! monitor starts a mixer task ([`super::monitor`]) for the listeners that hear more than one party.

use super::files::FileThread;
use super::leg::{
    LegCommand, LegShared, MixFeed, PartnerLink, RecordedFrame, RecordedFrames, RecorderTap, RtpLeg,
};
use super::monitor::{MIX_CHANNEL, MixerTask, MonitorHandle, run_mixer};
use super::{EngineShared, MediaError};
use crate::g711::SAMPLES_PER_FRAME;
use crate::mixer::{BridgeState, MonitorMode, Party};
use crate::prompt::Prompt;
use crate::recorder::{
    ActivityMeter, RecordingActivity, RecordingChannel, StereoFrames, StereoTimeline, WavFileWriter,
};
use crate::stream::Millis;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One of the two legs of a bridge: `A` is the caller, `B` the agent (or the called party).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BridgeSide {
    A,
    B,
}

impl BridgeSide {
    fn party(self) -> Party {
        match self {
            Self::A => Party::Caller,
            Self::B => Party::Agent,
        }
    }
}

/// The attached supervisor, as the bridge knows it.
struct Attached {
    id: u64,
    mode: MonitorMode,
    supervisor: mpsc::UnboundedSender<LegCommand>,
    stop: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Control {
    next_id: u64,
    monitor: Option<Attached>,
    /// The recording in progress (its id and where the legs send frames).
    recording: Option<(u64, Arc<RecordedFrames>)>,
    closed: bool,
}

impl Control {
    /// A barging supervisor is recorded (into the agent's channel); a listening or whispering one is not.
    fn sync_supervisor_tap(&self) {
        let Some(monitor) = &self.monitor else { return };
        let tap = match (&self.recording, monitor.mode) {
            (Some((_, frames)), MonitorMode::Barge) => Some(RecorderTap {
                channel: RecordingChannel::Supervisor,
                frames: frames.clone(),
            }),
            _ => None,
        };
        let _ = monitor.supervisor.send(LegCommand::SetRecorder(tap));
    }
}

/// What a bridge shares with its monitor and recording handles.
pub(crate) struct BridgeShared {
    engine: Arc<EngineShared>,
    state: Arc<AtomicU32>,
    a: mpsc::UnboundedSender<LegCommand>,
    b: mpsc::UnboundedSender<LegCommand>,
    a_leg: Weak<LegShared>,
    b_leg: Weak<LegShared>,
    control: Mutex<Control>,
}

impl BridgeShared {
    fn state(&self) -> BridgeState {
        BridgeState::from_bits(self.state.load(Ordering::Relaxed))
    }

    /// Applies `change` to the state word; returns the state before.
    fn update(&self, change: impl Fn(BridgeState) -> BridgeState) -> BridgeState {
        let previous = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(change(BridgeState::from_bits(bits)).bits())
            })
            .unwrap_or_else(|bits| bits); // the closure always returns Some
        BridgeState::from_bits(previous)
    }

    fn leg(&self, side: BridgeSide) -> &mpsc::UnboundedSender<LegCommand> {
        match side {
            BridgeSide::A => &self.a,
            BridgeSide::B => &self.b,
        }
    }

    pub(crate) fn set_monitor_mode(&self, id: u64, mode: MonitorMode) -> Result<(), MediaError> {
        let mut control = self.control.lock();
        let Some(monitor) = control.monitor.as_mut().filter(|m| m.id == id) else {
            return Err(MediaError::Closed);
        };
        monitor.mode = mode;
        self.update(|s| s.with_monitor(Some(mode)));
        control.sync_supervisor_tap();
        Ok(())
    }

    pub(crate) fn monitor_mode(&self, id: u64) -> Option<MonitorMode> {
        let control = self.control.lock();
        control.monitor.as_ref().filter(|m| m.id == id).map(|m| m.mode)
    }

    /// Detaches monitor `id` if it is still the attached one: relay at once, then the mixer stops.
    pub(crate) fn detach_monitor(&self, id: u64) {
        let mut control = self.control.lock();
        if control.monitor.as_ref().is_none_or(|m| m.id != id) {
            return;
        }
        let Some(mut monitor) = control.monitor.take() else {
            return;
        };
        self.update(|s| s.with_monitor(None));
        for leg in [&self.a, &self.b, &monitor.supervisor] {
            let _ = leg.send(LegCommand::SetMixFeed(None));
        }
        let _ = monitor.supervisor.send(LegCommand::SetRecorder(None));
        if let Some(stop) = monitor.stop.take() {
            let _ = stop.send(());
        }
        self.engine.metrics.monitors_active.dec();
    }

    fn end_recording(&self, id: u64) {
        let mut control = self.control.lock();
        if control.recording.as_ref().is_some_and(|(r, _)| *r == id) {
            control.recording = None;
            control.sync_supervisor_tap();
        }
    }
}

/// Two legs that hear each other. Dropping the bridge unlinks them (each leg keeps running on its own) and
/// detaches any supervisor.
pub struct Bridge {
    shared: Arc<BridgeShared>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state();
        f.debug_struct("Bridge")
            .field("held", &state.held().is_some())
            .field("monitor", &state.monitor())
            .finish()
    }
}

impl Bridge {
    pub(crate) fn new(engine: Arc<EngineShared>, a: &RtpLeg, b: &RtpLeg) -> Self {
        let state = Arc::new(AtomicU32::new(BridgeState::default().bits()));
        a.send(LegCommand::SetPartner(Some(PartnerLink {
            leg: b.shared().clone(),
            state: state.clone(),
            me: Party::Caller,
            partner: Party::Agent,
        })));
        b.send(LegCommand::SetPartner(Some(PartnerLink {
            leg: a.shared().clone(),
            state: state.clone(),
            me: Party::Agent,
            partner: Party::Caller,
        })));
        Self {
            shared: Arc::new(BridgeShared {
                engine,
                state,
                a: a.commands(),
                b: b.commands(),
                a_leg: Arc::downgrade(a.shared()),
                b_leg: Arc::downgrade(b.shared()),
                control: Mutex::new(Control::default()),
            }),
        }
    }

    /// Stops relaying both ways and plays `music` in a loop to the held party. With a supervisor attached, the
    /// held party hears only the music and nobody hears it; the others go on hearing each other as the monitor
    /// mode says (an agent can consult a whispering or barging supervisor while the caller holds).
    pub fn hold(&self, held: BridgeSide, music: Vec<Prompt>) {
        let previous = self.shared.update(|s| s.with_held(Some(held.party())));
        let previous = match previous.held() {
            Some(Party::Caller) => Some(BridgeSide::A),
            Some(Party::Agent) => Some(BridgeSide::B),
            _ => None,
        };
        if let Some(previous) = previous.filter(|p| *p != held) {
            let _ = self.shared.leg(previous).send(LegCommand::StopPlayback);
        }
        let _ = self.shared.leg(held).send(LegCommand::Play {
            prompts: music,
            looping: true,
            barge_in: false,
        });
    }

    /// Ends the hold: music stops and relaying resumes.
    pub fn resume(&self) {
        let previous = self.shared.update(|s| s.with_held(None));
        let side = match previous.held() {
            Some(Party::Caller) => Some(BridgeSide::A),
            Some(Party::Agent) => Some(BridgeSide::B),
            _ => None,
        };
        if let Some(side) = side {
            let _ = self.shared.leg(side).send(LegCommand::StopPlayback);
        }
    }

    /// Whether the bridge is on hold.
    pub fn is_held(&self) -> bool {
        self.shared.state().held().is_some()
    }

    /// Mutes (or unmutes) `side`: its audio and digits stop reaching anyone, the other side and an attached
    /// supervisor alike, and its channel of the recording is silent meanwhile. The muted party still hears.
    /// Takes effect with the next packet.
    pub fn mute(&self, side: BridgeSide, muted: bool) {
        self.shared.update(|s| s.with_muted(side.party(), muted));
    }

    /// Whether `side` is muted.
    pub fn is_muted(&self, side: BridgeSide) -> bool {
        self.shared.state().is_muted(side.party())
    }

    /// Attaches `supervisor` (a leg of its own, not in another bridge) to this call in `mode`. What a party
    /// hears from more than one source is mixed from then on (20 ms frames, each listener's own law); the
    /// caller-agent paths that stay single-source keep the relay. One monitor per bridge:
    /// [`MediaError::Monitor`] if one is attached or `supervisor` is one of the bridged legs;
    /// [`MediaError::Closed`] if a bridged leg has ended.
    ///
    /// ```no_run
    /// # use media::engine::{MediaEngine, MediaError, RtpLeg};
    /// # fn example(engine: &MediaEngine, caller: &RtpLeg, agent: &RtpLeg, supervisor: &RtpLeg) -> Result<(), MediaError> {
    /// use media::engine::{BridgeSide, MonitorMode};
    /// let bridge = engine.bridge(caller, agent);
    /// bridge.mute(BridgeSide::B, true); // the agent's aside: the caller does not hear it, the recording is silent
    /// bridge.mute(BridgeSide::B, false);
    /// let monitor = bridge.monitor(supervisor, MonitorMode::Listen)?; // the supervisor hears both
    /// monitor.set_mode(MonitorMode::Whisper)?; // ... and coaches the agent; the caller never hears it
    /// monitor.set_mode(MonitorMode::Barge)?; // three-way
    /// monitor.stop(); // caller and agent back on the plain relay
    /// # Ok(())
    /// # }
    /// ```
    pub fn monitor(&self, supervisor: &RtpLeg, mode: MonitorMode) -> Result<MonitorHandle, MediaError> {
        let shared = &self.shared;
        let (Some(a), Some(b)) = (shared.a_leg.upgrade(), shared.b_leg.upgrade()) else {
            return Err(MediaError::Closed);
        };
        if Arc::ptr_eq(supervisor.shared(), &a) || Arc::ptr_eq(supervisor.shared(), &b) {
            return Err(MediaError::Monitor(
                "the supervisor's leg is one of the bridged legs",
            ));
        }
        let runtime = shared.engine.runtime()?;
        let mut control = shared.control.lock();
        if control.closed {
            return Err(MediaError::Closed);
        }
        if control.monitor.is_some() {
            return Err(MediaError::Monitor("a supervisor is already attached"));
        }
        control.next_id += 1;
        let id = control.next_id;
        let commands = supervisor.commands();
        let (frames, frame_rx) = mpsc::channel(MIX_CHANNEL);
        let (stop, stop_rx) = oneshot::channel();
        let task = MixerTask {
            legs: [a, b, supervisor.shared().clone()],
            commands: [shared.a.clone(), shared.b.clone(), commands.clone()],
            state: shared.state.clone(),
            bridge: Arc::downgrade(shared),
            id,
            metrics: shared.engine.metrics.clone(),
            epoch: shared.engine.epoch,
        };
        runtime.spawn(run_mixer(task, frame_rx, stop_rx));
        for (leg, party) in [
            (&shared.a, Party::Caller),
            (&shared.b, Party::Agent),
            (&commands, Party::Supervisor),
        ] {
            let _ = leg.send(LegCommand::SetMixFeed(Some(MixFeed {
                party,
                frames: frames.clone(),
            })));
        }
        control.monitor = Some(Attached {
            id,
            mode,
            supervisor: commands,
            stop: Some(stop),
        });
        shared.update(|s| s.with_monitor(Some(mode)));
        control.sync_supervisor_tap();
        shared.engine.metrics.monitors_active.inc();
        drop(control);
        Ok(MonitorHandle {
            bridge: shared.clone(),
            id,
        })
    }

    /// Starts a stereo recording `<recordings_dir>/<name>.wav`: side A left, side B right (with a barging
    /// supervisor mixed into the right channel; a listening or whispering one is not recorded).
    pub fn start_recording(&self, name: &str) -> Result<RecordingHandle, MediaError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(MediaError::BadRecordingName);
        }
        let shared = &self.shared;
        let path = shared.engine.config.recordings_dir.join(format!("{name}.wav"));
        let writer =
            WavFileWriter::create(&path).map_err(|e| MediaError::Io(format!("{}: {e}", path.display())))?;
        let runtime = shared.engine.runtime()?;
        let frames = Arc::new(RecordedFrames::default());
        let (control, control_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = oneshot::channel();
        runtime.spawn(run_recorder(
            shared.engine.epoch,
            shared.engine.files()?,
            writer,
            frames.clone(),
            control_rx,
            done,
        ));
        let _ = shared.a.send(LegCommand::SetRecorder(Some(RecorderTap {
            channel: RecordingChannel::Caller,
            frames: frames.clone(),
        })));
        let _ = shared.b.send(LegCommand::SetRecorder(Some(RecorderTap {
            channel: RecordingChannel::Agent,
            frames: frames.clone(),
        })));
        let id = {
            let mut bridge = shared.control.lock();
            bridge.next_id += 1;
            let id = bridge.next_id;
            bridge.recording = Some((id, frames));
            bridge.sync_supervisor_tap();
            id
        };
        Ok(RecordingHandle {
            control,
            done: done_rx,
            legs: [shared.a.clone(), shared.b.clone()],
            bridge: Arc::downgrade(shared),
            id,
            path,
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.shared.a.send(LegCommand::SetPartner(None));
        let _ = self.shared.b.send(LegCommand::SetPartner(None));
        let attached = {
            let mut control = self.shared.control.lock();
            control.closed = true;
            control.monitor.as_ref().map(|m| m.id)
        };
        if let Some(id) = attached {
            self.shared.detach_monitor(id);
        }
    }
}

enum RecorderControl {
    Pause(bool),
    Stop,
}

/// A finished recording: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    pub path: PathBuf,
    /// Length and, per channel, how much was above silence.
    pub activity: RecordingActivity,
}

impl RecordingSummary {
    /// True when nothing in it rises above silence for [`crate::recorder::MIN_ACTIVE_MS`]: a voicemail like
    /// that is not worth keeping (delete the file, record no message).
    pub fn is_silent(&self) -> bool {
        self.activity.is_silent()
    }
}

/// A recording in progress.
pub struct RecordingHandle {
    control: mpsc::UnboundedSender<RecorderControl>,
    done: oneshot::Receiver<std::io::Result<RecordingSummary>>,
    legs: [mpsc::UnboundedSender<LegCommand>; 2],
    bridge: Weak<BridgeShared>,
    id: u64,
    path: PathBuf,
}

impl std::fmt::Debug for RecordingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl RecordingHandle {
    /// Where the file is being written.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
    /// Replaces audio with silence until [`RecordingHandle::resume`] (card details must not be recorded).
    pub fn pause(&self) {
        let _ = self.control.send(RecorderControl::Pause(true));
    }
    /// Records audio again.
    pub fn resume(&self) {
        let _ = self.control.send(RecorderControl::Pause(false));
    }
    /// Stops, completes the file and returns its path for the CRM.
    pub async fn stop(self) -> Result<PathBuf, MediaError> {
        self.stop_with_summary().await.map(|summary| summary.path)
    }

    /// Stops, completes the file and returns its path with what it holds: a voicemail whose
    /// [`RecordingSummary::is_silent`] is true can be dropped.
    pub async fn stop_with_summary(self) -> Result<RecordingSummary, MediaError> {
        for leg in &self.legs {
            let _ = leg.send(LegCommand::SetRecorder(None));
        }
        if let Some(bridge) = self.bridge.upgrade() {
            bridge.end_recording(self.id);
        }
        let _ = self.control.send(RecorderControl::Stop);
        match self.done.await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(e)) => Err(MediaError::Io(format!("{}: {e}", self.path.display()))),
            Err(_) => Err(MediaError::Closed),
        }
    }
}

/// Records what one leg receives into a mono WAV `<recordings_dir>/<name>.wav` (a voicemail).
pub(crate) fn record_leg(
    engine: &Arc<EngineShared>,
    leg: &RtpLeg,
    name: &str,
) -> Result<RecordingHandle, MediaError> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(MediaError::BadRecordingName);
    }
    let path = engine.config.recordings_dir.join(format!("{name}.wav"));
    let writer =
        WavFileWriter::create_mono(&path).map_err(|e| MediaError::Io(format!("{}: {e}", path.display())))?;
    let runtime = engine.runtime()?;
    let frames = Arc::new(RecordedFrames::default());
    let (control, control_rx) = mpsc::unbounded_channel();
    let (done, done_rx) = oneshot::channel();
    runtime.spawn(run_recorder(
        engine.epoch,
        engine.files()?,
        writer,
        frames.clone(),
        control_rx,
        done,
    ));
    leg.send(LegCommand::SetRecorder(Some(RecorderTap {
        channel: RecordingChannel::Caller,
        frames,
    })));
    Ok(RecordingHandle {
        control,
        done: done_rx,
        legs: [leg.commands(), leg.commands()],
        bridge: Weak::new(),
        id: 0,
        path,
    })
}

/// Writes one batch on the engine's file thread and hands the writer and the (emptied) batch back.
async fn write_off_the_workers(
    files: &FileThread,
    mut writer: WavFileWriter,
    mut batch: StereoFrames,
) -> Result<(WavFileWriter, StereoFrames), std::io::Error> {
    files
        .run(move || {
            let written = writer.write_frames(&batch);
            batch.clear();
            written.map(|()| (writer, batch))
        })
        .await
        .unwrap_or_else(|| Err(std::io::Error::other("the recording file thread is gone")))
}

async fn run_recorder(
    epoch: Instant,
    files: FileThread,
    writer: WavFileWriter,
    frames: Arc<RecordedFrames>,
    mut control: mpsc::UnboundedReceiver<RecorderControl>,
    done: oneshot::Sender<std::io::Result<RecordingSummary>>,
) {
    let now_ms = || Instant::now().saturating_duration_since(epoch).as_millis() as Millis;
    let mut timeline = StereoTimeline::new(now_ms());
    let mut ready = StereoFrames::with_capacity(8000);
    let mut taken: Vec<RecordedFrame> = Vec::with_capacity(64);
    let mut flush = tokio::time::interval(Duration::from_millis(500));
    // The writer, or why the recording failed (then the rest of the call is not written).
    let mut writer: Result<WavFileWriter, std::io::Error> = Ok(writer);
    let mut meter = ActivityMeter::new();
    let mut take_all = |timeline: &mut StereoTimeline| {
        frames.take(&mut taken);
        let mut samples = [0i16; SAMPLES_PER_FRAME];
        for frame in &taken {
            timeline.push(
                frame.channel,
                frame.timestamp,
                frame.arrival,
                frame.decode(&mut samples),
            );
        }
    };
    loop {
        // Frames are taken on the flush tick, not one wake-up per 20 ms frame of each leg.
        tokio::select! {
            command = control.recv() => match command {
                Some(RecorderControl::Pause(paused)) => {
                    take_all(&mut timeline);
                    timeline.set_paused(paused);
                }
                Some(RecorderControl::Stop) | None => break,
            },
            _ = flush.tick() => {
                take_all(&mut timeline);
                // Nobody else holds the buffer: every leg has let the recording go.
                if Arc::strong_count(&frames) == 1 {
                    break;
                }
                timeline.drain_until(now_ms(), &mut ready);
                meter.push(&ready);
                let batch = std::mem::take(&mut ready);
                if let Ok(file) = writer {
                    writer = match write_off_the_workers(&files, file, batch).await {
                        Ok((file, emptied)) => {
                            ready = emptied;
                            Ok(file)
                        }
                        Err(e) => Err(e),
                    };
                }
            }
        }
    }
    take_all(&mut timeline);
    timeline.finish(&mut ready);
    meter.push(&ready);
    let result = match writer {
        Err(e) => Err(e),
        // The last frames, the header and the fsync on a blocking thread too: an fsync may take tens
        // of milliseconds on a busy disk (hundreds of recordings end at once when a campaign's calls do).
        Ok(mut file) => {
            tokio::task::spawn_blocking(move || file.write_frames(&ready).and_then(|()| file.finish()))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(format!("recording writer: {e}"))))
        }
    }
    .map(|path| RecordingSummary {
        path,
        activity: meter.summary(),
    });
    let _ = done.send(result);
}
