//! Bridging two legs, putting one on hold with music, and recording the pair.

use super::leg::{LegCommand, PartnerLink, RecordedFrame, RecorderTap, RtpLeg};
use super::{EngineShared, MediaError};
use crate::prompt::Prompt;
use crate::recorder::{RecordingChannel, StereoTimeline, WavFileWriter};
use crate::stream::Millis;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One of the two legs of a bridge: `A` is the caller, `B` the agent (or the called party).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BridgeSide {
    A,
    B,
}

/// Two legs that hear each other. Dropping the bridge unlinks them (each leg keeps running on its own).
pub struct Bridge {
    engine: Arc<EngineShared>,
    a: mpsc::UnboundedSender<LegCommand>,
    b: mpsc::UnboundedSender<LegCommand>,
    held: Arc<AtomicBool>,
    held_side: parking_lot::Mutex<Option<BridgeSide>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish()
    }
}

impl Bridge {
    pub(crate) fn new(engine: Arc<EngineShared>, a: &RtpLeg, b: &RtpLeg) -> Self {
        let held = Arc::new(AtomicBool::new(false));
        a.send(LegCommand::SetPartner(Some(PartnerLink {
            leg: b.shared().clone(),
            held: held.clone(),
        })));
        b.send(LegCommand::SetPartner(Some(PartnerLink {
            leg: a.shared().clone(),
            held: held.clone(),
        })));
        Self {
            engine,
            a: a.commands(),
            b: b.commands(),
            held,
            held_side: parking_lot::Mutex::new(None),
        }
    }

    fn leg(&self, side: BridgeSide) -> &mpsc::UnboundedSender<LegCommand> {
        match side {
            BridgeSide::A => &self.a,
            BridgeSide::B => &self.b,
        }
    }

    /// Stops relaying both ways and plays `music` in a loop to the held party.
    pub fn hold(&self, held: BridgeSide, music: Vec<Prompt>) {
        self.held.store(true, Ordering::Relaxed);
        let previous = self.held_side.lock().replace(held);
        if let Some(previous) = previous.filter(|p| *p != held) {
            let _ = self.leg(previous).send(LegCommand::StopPlayback);
        }
        let _ = self.leg(held).send(LegCommand::Play {
            prompts: music,
            looping: true,
            barge_in: false,
        });
    }

    /// Ends the hold: music stops and relaying resumes.
    pub fn resume(&self) {
        if let Some(side) = self.held_side.lock().take() {
            let _ = self.leg(side).send(LegCommand::StopPlayback);
        }
        self.held.store(false, Ordering::Relaxed);
    }

    /// Whether the bridge is on hold.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Starts a stereo recording `<recordings_dir>/<name>.wav`: side A left, side B right.
    pub fn start_recording(&self, name: &str) -> Result<RecordingHandle, MediaError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(MediaError::BadRecordingName);
        }
        let path = self.engine.config.recordings_dir.join(format!("{name}.wav"));
        let writer =
            WavFileWriter::create(&path).map_err(|e| MediaError::Io(format!("{}: {e}", path.display())))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime)?;
        let (frames, frame_rx) = mpsc::channel(1024);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = oneshot::channel();
        runtime.spawn(run_recorder(
            self.engine.epoch,
            writer,
            frame_rx,
            control_rx,
            done,
        ));
        let _ = self.a.send(LegCommand::SetRecorder(Some(RecorderTap {
            channel: RecordingChannel::Caller,
            frames: frames.clone(),
        })));
        let _ = self.b.send(LegCommand::SetRecorder(Some(RecorderTap {
            channel: RecordingChannel::Agent,
            frames,
        })));
        Ok(RecordingHandle {
            control,
            done: done_rx,
            legs: [self.a.clone(), self.b.clone()],
            path,
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.a.send(LegCommand::SetPartner(None));
        let _ = self.b.send(LegCommand::SetPartner(None));
    }
}

enum RecorderControl {
    Pause(bool),
    Stop,
}

/// A recording in progress.
#[derive(Debug)]
pub struct RecordingHandle {
    control: mpsc::UnboundedSender<RecorderControl>,
    done: oneshot::Receiver<std::io::Result<PathBuf>>,
    legs: [mpsc::UnboundedSender<LegCommand>; 2],
    path: PathBuf,
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
        for leg in &self.legs {
            let _ = leg.send(LegCommand::SetRecorder(None));
        }
        let _ = self.control.send(RecorderControl::Stop);
        match self.done.await {
            Ok(Ok(path)) => Ok(path),
            Ok(Err(e)) => Err(MediaError::Io(format!("{}: {e}", self.path.display()))),
            Err(_) => Err(MediaError::Closed),
        }
    }
}

async fn run_recorder(
    epoch: Instant,
    mut writer: WavFileWriter,
    mut frames: mpsc::Receiver<RecordedFrame>,
    mut control: mpsc::UnboundedReceiver<RecorderControl>,
    done: oneshot::Sender<std::io::Result<PathBuf>>,
) {
    let now_ms = || Instant::now().saturating_duration_since(epoch).as_millis() as Millis;
    let mut timeline = StereoTimeline::new(now_ms());
    let mut ready = Vec::with_capacity(8000);
    let mut flush = tokio::time::interval(Duration::from_millis(500));
    let mut failure: Option<std::io::Error> = None;
    let push = |timeline: &mut StereoTimeline, frame: RecordedFrame| {
        timeline.push(
            frame.channel,
            frame.timestamp,
            frame.arrival,
            frame.samples.get(..frame.len).unwrap_or(&[]),
        );
    };
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => push(&mut timeline, frame),
                None => break, // both legs gone
            },
            command = control.recv() => match command {
                Some(RecorderControl::Pause(paused)) => timeline.set_paused(paused),
                Some(RecorderControl::Stop) | None => break,
            },
            _ = flush.tick() => {
                timeline.drain_until(now_ms(), &mut ready);
                if failure.is_none() && let Err(e) = writer.write_frames(&ready) {
                    failure = Some(e);
                }
                ready.clear();
            }
        }
    }
    while let Ok(frame) = frames.try_recv() {
        push(&mut timeline, frame);
    }
    timeline.finish(&mut ready);
    let result = match failure {
        Some(e) => Err(e),
        None => writer.write_frames(&ready).and_then(|()| writer.finish()),
    };
    let _ = done.send(result);
}
