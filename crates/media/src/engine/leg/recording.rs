//! What a recorded leg hands its recording: decoded frames, left in a buffer the recorder takes on
//! its tick.

use crate::g711::SAMPLES_PER_FRAME;
use crate::recorder::RecordingChannel;
use crate::stream::Millis;
use std::sync::Arc;

/// One decoded 20 ms (or shorter) piece of received audio for the recorder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordedFrame {
    pub(crate) channel: RecordingChannel,
    pub(crate) timestamp: u32,
    pub(crate) arrival: Millis,
    pub(crate) len: usize,
    pub(crate) samples: [i16; SAMPLES_PER_FRAME],
}

/// Where the legs of a recording leave their decoded audio; the recorder takes it all at once on
/// its flush tick. One short, rarely contended lock per frame: a channel cost a send and a receive
/// per frame (about 8 % of the node's CPU at 1000 recorded calls in `perf`).
#[derive(Default)]
pub(crate) struct RecordedFrames {
    frames: parking_lot::Mutex<Vec<RecordedFrame>>,
}

impl RecordedFrames {
    /// Frames kept between two takes at most: 10 s of both sides of a call. Beyond it the recorder
    /// is stuck, and a frame is dropped rather than the leg delayed or memory grown.
    const MAX_WAITING: usize = 1024;

    /// Leaves one frame for the recorder.
    pub(crate) fn push(&self, frame: RecordedFrame) {
        let mut frames = self.frames.lock();
        if frames.len() < Self::MAX_WAITING {
            frames.push(frame);
        }
    }

    /// Takes every frame left so far, in order, into `into` (emptied first; buffers are swapped,
    /// so neither side allocates once both have grown).
    pub(crate) fn take(&self, into: &mut Vec<RecordedFrame>) {
        into.clear();
        std::mem::swap(&mut *self.frames.lock(), into);
    }
}

#[derive(Clone)]
pub(crate) struct RecorderTap {
    pub(crate) channel: RecordingChannel,
    pub(crate) frames: Arc<RecordedFrames>,
}
