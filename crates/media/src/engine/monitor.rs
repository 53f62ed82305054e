//! A supervisor's leg attached to a bridged call (listen, whisper, barge) and the mixer task that serves it.
//!
//! While a monitor is attached, the caller's, the agent's and the supervisor's leg tasks each hand their
//! received audio to one mixer task (a bounded channel, never awaited: a full channel drops). Every 20 ms the
//! task takes one frame per party from the pure [`Mixer`] and sends each listener whose mode gives it more than
//! one source ([`BridgeState::is_mixed`]) the sum of what it hears, encoded in its own law, out of its own
//! socket and stream. Paths with a single source (caller and agent in listen, agent to caller in whisper) stay
//! on the zero-copy relay. Mode, hold and mutes are read from the bridge's state word at every tick, so a
//! mode change takes effect on the next packet and the next tick. When any of the three legs ends (the
//! supervisor hangs up), the monitor detaches itself, so a closed leg's peer is never sent the call's audio.

use super::bridge::BridgeShared;
use super::leg::{LegCommand, LegShared, MixInput, send_local_frame};
use super::{MediaError, MediaMetrics};
use crate::mixer::{BridgeState, Mixer, MonitorMode, Party, mix_for};
use crate::stream::Millis;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

/// Frames queued from the three legs to the mixer before new ones are dropped.
pub(crate) const MIX_CHANNEL: usize = 64;

/// A supervisor attached to a bridged call. Dropping it (or [`MonitorHandle::stop`]) detaches the supervisor:
/// caller and agent return to the plain relay at once.
pub struct MonitorHandle {
    pub(crate) bridge: Arc<BridgeShared>,
    pub(crate) id: u64,
}

impl std::fmt::Debug for MonitorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorHandle")
            .field("mode", &self.mode())
            .finish()
    }
}

impl MonitorHandle {
    /// Switches to `mode` (takes effect with the next packet). [`MediaError::Closed`] when the monitor has
    /// been detached (its bridge was dropped).
    pub fn set_mode(&self, mode: MonitorMode) -> Result<(), MediaError> {
        self.bridge.set_monitor_mode(self.id, mode)
    }

    /// The current mode; `None` once detached.
    pub fn mode(&self) -> Option<MonitorMode> {
        self.bridge.monitor_mode(self.id)
    }

    /// Detaches the supervisor (the same as dropping the handle).
    pub fn stop(self) {}
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.bridge.detach_monitor(self.id);
    }
}

/// What the mixer task of one monitor works with.
pub(crate) struct MixerTask {
    /// Caller, agent and supervisor, in [`Party`] index order.
    pub(crate) legs: [Arc<LegShared>; 3],
    /// The legs' command channels: closed once a leg's task has ended.
    pub(crate) commands: [mpsc::UnboundedSender<LegCommand>; 3],
    pub(crate) state: Arc<AtomicU32>,
    pub(crate) bridge: Weak<BridgeShared>,
    pub(crate) id: u64,
    pub(crate) metrics: MediaMetrics,
    pub(crate) epoch: Instant,
}

/// Mixes for one monitored bridge until `stop` fires, the feeds are gone, or a leg ends.
pub(crate) async fn run_mixer(
    task: MixerTask,
    mut frames: mpsc::Receiver<MixInput>,
    mut stop: oneshot::Receiver<()>,
) {
    let MixerTask {
        legs,
        commands,
        state,
        bridge,
        id,
        metrics,
        epoch,
    } = task;
    let mut mixer = Mixer::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut mixed: u64 = 0;
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            input = frames.recv() => match input {
                Some(input) => mixer.push(input.party, input.law, input.bytes.get(..input.len).unwrap_or(&[])),
                None => break,
            },
            _ = tick.tick() => {
                if commands.iter().any(|c| c.is_closed()) {
                    if let Some(bridge) = bridge.upgrade() {
                        bridge.detach_monitor(id);
                    }
                    break;
                }
                let now = Instant::now().saturating_duration_since(epoch).as_millis() as Millis;
                let bridge = BridgeState::from_bits(state.load(Ordering::Relaxed));
                let heard = mixer.take_frames();
                for listener in Party::ALL {
                    if !bridge.is_mixed(listener) {
                        continue;
                    }
                    let Some(frame) = mix_for(bridge, listener, &heard) else {
                        continue;
                    };
                    if send_local_frame(&legs[listener.index()], &frame, now) {
                        mixed += 1;
                    }
                }
                ticks += 1;
                if ticks.is_multiple_of(50) {
                    metrics.frames_mixed.inc_by(std::mem::take(&mut mixed));
                }
            }
        }
    }
    metrics.frames_mixed.inc_by(mixed);
}
