//! What a recorded leg hands its recording: the received payload as it came (G.711), left in a buffer
//! the recorder takes and decodes on its tick, off the packet's way to the other party.

use crate::g711::{G711, SAMPLES_PER_FRAME};
use crate::recorder::RecordingChannel;
use crate::stream::Millis;
use std::sync::Arc;

/// One 20 ms (or shorter) piece of received audio for the recorder, still encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordedFrame {
    pub(crate) channel: RecordingChannel,
    pub(crate) timestamp: u32,
    pub(crate) arrival: Millis,
    pub(crate) law: G711,
    /// A muted party's piece is recorded as silence (a muted aside is not recorded).
    pub(crate) muted: bool,
    pub(crate) len: usize,
    pub(crate) payload: [u8; SAMPLES_PER_FRAME],
}

impl RecordedFrame {
    /// The piece as linear samples, into `out`; silence when muted.
    pub(crate) fn decode<'a>(&self, out: &'a mut [i16; SAMPLES_PER_FRAME]) -> &'a [i16] {
        let len = self.len.min(SAMPLES_PER_FRAME);
        let (samples, _) = out.split_at_mut(len);
        match self.payload.get(..len) {
            Some(payload) if !self.muted => self.law.decode_into(payload, samples),
            _ => samples.fill(0),
        }
        samples
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(law: G711, muted: bool, payload: &[u8]) -> RecordedFrame {
        let mut frame = RecordedFrame {
            channel: RecordingChannel::Caller,
            timestamp: 0,
            arrival: 0,
            law,
            muted,
            len: payload.len(),
            payload: [0; SAMPLES_PER_FRAME],
        };
        frame.payload[..payload.len()].copy_from_slice(payload);
        frame
    }

    #[test]
    fn a_piece_decodes_in_its_own_law_and_a_muted_one_is_silence() {
        let payload: Vec<u8> = (0..SAMPLES_PER_FRAME as u8).collect();
        let mut out = [7i16; SAMPLES_PER_FRAME];
        for law in [G711::Pcmu, G711::Pcma] {
            let expected: Vec<i16> = payload.iter().map(|b| law.decode(*b)).collect();
            assert_eq!(frame(law, false, &payload).decode(&mut out), expected.as_slice());
        }
        assert!(
            frame(G711::Pcmu, true, &payload)
                .decode(&mut out)
                .iter()
                .all(|s| *s == 0)
        );
        // A short last piece (a 30 ms packet's second half) keeps its length.
        assert_eq!(
            frame(G711::Pcma, false, &payload[..80]).decode(&mut out).len(),
            80
        );
    }
}
