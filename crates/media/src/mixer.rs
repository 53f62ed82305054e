//! Mixing for a monitored call (supervisor listen, whisper, barge) and the bridge's routing: who hears whom.
//!
//! Pure: no IO, no clock. [`BridgeState`] packs the monitor mode, the hold and the two mutes into one word, so
//! the engine's relay hot path decides with a single atomic load whether a packet goes straight through
//! ([`BridgeState::relays`]), and the mixer task decides what each listener hears ([`BridgeState::hears`]).
//! [`Mixer`] keeps a short queue of linear samples per party (a little jitter tolerance) and hands out one
//! 20 ms frame per party per tick; a party with nothing queued contributes silence, so a slow source never
//! stalls the others. [`mix`] sums frames in 32 bits and saturates once, so the result does not depend on the
//! order of the sources.

use crate::g711::{G711, SAMPLES_PER_FRAME};
use std::collections::VecDeque;

/// One 20 ms frame of linear 8 kHz audio.
pub type Frame = [i16; SAMPLES_PER_FRAME];

/// Samples a party may have queued before the oldest are dropped: 80 ms bounds the added delay.
pub const MAX_QUEUED_SAMPLES: usize = 4 * SAMPLES_PER_FRAME;

/// What a supervisor attached to a bridged call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MonitorMode {
    /// The supervisor hears caller and agent; nobody hears the supervisor.
    Listen,
    /// As `Listen`, and the agent also hears the supervisor; the caller never does.
    Whisper,
    /// Three-way: each party hears the other two.
    Barge,
}

/// A party of a (possibly monitored) bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// Side A of the bridge.
    Caller,
    /// Side B of the bridge.
    Agent,
    /// The monitoring supervisor's leg.
    Supervisor,
}

impl Party {
    /// Every party, in index order.
    pub const ALL: [Party; 3] = [Party::Caller, Party::Agent, Party::Supervisor];

    /// Position in per-party arrays.
    pub const fn index(self) -> usize {
        match self {
            Self::Caller => 0,
            Self::Agent => 1,
            Self::Supervisor => 2,
        }
    }
}

const HELD: u32 = 1;
const HELD_AGENT: u32 = 1 << 1;
const MUTED_CALLER: u32 = 1 << 2;
const MUTED_AGENT: u32 = 1 << 3;
const MODE_SHIFT: u32 = 4;
const MODE_MASK: u32 = 0b11 << MODE_SHIFT;

/// The routing state of one bridge in one word: monitor mode, held side, muted sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeState(u32);

impl BridgeState {
    /// The packed bits (for an atomic).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// From packed bits; unknown bits are ignored.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits & (HELD | HELD_AGENT | MUTED_CALLER | MUTED_AGENT | MODE_MASK))
    }

    /// The attached monitor's mode, if any.
    pub const fn monitor(self) -> Option<MonitorMode> {
        match (self.0 & MODE_MASK) >> MODE_SHIFT {
            1 => Some(MonitorMode::Listen),
            2 => Some(MonitorMode::Whisper),
            3 => Some(MonitorMode::Barge),
            _ => None,
        }
    }

    /// With a monitor in `mode` attached (or none).
    pub const fn with_monitor(self, mode: Option<MonitorMode>) -> Self {
        let code = match mode {
            None => 0,
            Some(MonitorMode::Listen) => 1,
            Some(MonitorMode::Whisper) => 2,
            Some(MonitorMode::Barge) => 3,
        };
        Self((self.0 & !MODE_MASK) | (code << MODE_SHIFT))
    }

    /// The held party (it hears music; nobody hears it), if the bridge is on hold.
    pub const fn held(self) -> Option<Party> {
        if self.0 & HELD == 0 {
            None
        } else if self.0 & HELD_AGENT != 0 {
            Some(Party::Agent)
        } else {
            Some(Party::Caller)
        }
    }

    /// On hold with `party` held (the caller or the agent; the supervisor cannot be held), or off hold.
    pub const fn with_held(self, party: Option<Party>) -> Self {
        let cleared = self.0 & !(HELD | HELD_AGENT);
        Self(match party {
            None | Some(Party::Supervisor) => cleared,
            Some(Party::Caller) => cleared | HELD,
            Some(Party::Agent) => cleared | HELD | HELD_AGENT,
        })
    }

    /// Whether `party` is muted (the supervisor never is: it mutes by listening).
    pub const fn is_muted(self, party: Party) -> bool {
        match party {
            Party::Caller => self.0 & MUTED_CALLER != 0,
            Party::Agent => self.0 & MUTED_AGENT != 0,
            Party::Supervisor => false,
        }
    }

    /// With `party` muted or not (no effect on the supervisor).
    pub const fn with_muted(self, party: Party, muted: bool) -> Self {
        let bit = match party {
            Party::Caller => MUTED_CALLER,
            Party::Agent => MUTED_AGENT,
            Party::Supervisor => 0,
        };
        Self(if muted { self.0 | bit } else { self.0 & !bit })
    }

    /// Whether `listener` hears `source`. A held party hears no one (it has music) and no one hears it; a muted
    /// party is heard by no one (not the other side, not the supervisor, not the recording); without a monitor
    /// the supervisor is not part of the call.
    pub const fn hears(self, listener: Party, source: Party) -> bool {
        if listener.index() == source.index() || self.is_muted(source) {
            return false;
        }
        if let Some(held) = self.held()
            && (held.index() == listener.index() || held.index() == source.index())
        {
            return false;
        }
        !matches!(
            (self.monitor(), listener, source),
            (None, Party::Supervisor, _)
                | (None, _, Party::Supervisor)
                | (Some(MonitorMode::Listen), _, Party::Supervisor)
                | (Some(MonitorMode::Whisper), Party::Caller, Party::Supervisor)
        )
    }

    /// Whether `listener` hears more than one source in this monitor mode (hold and mute aside): then the mixer
    /// feeds it and nothing is relayed into it. Fixed per mode so that a mute or hold never switches paths.
    pub const fn is_mixed(self, listener: Party) -> bool {
        match (self.monitor(), listener) {
            (None, _) => false,
            (Some(_), Party::Supervisor) => true,
            (Some(MonitorMode::Listen), _) => false,
            (Some(MonitorMode::Whisper), Party::Caller) => false,
            (Some(MonitorMode::Whisper), Party::Agent) => true,
            (Some(MonitorMode::Barge), _) => true,
        }
    }

    /// Whether a packet received from `source` is relayed as it is to `listener` (the zero-copy path).
    #[inline]
    pub const fn relays(self, source: Party, listener: Party) -> bool {
        !self.is_mixed(listener) && self.hears(listener, source)
    }
}

/// Sums frames in 32 bits and saturates once: the result does not depend on the order of the sources.
pub fn mix<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Frame {
    let mut sum = [0i32; SAMPLES_PER_FRAME];
    for frame in frames {
        for (s, x) in sum.iter_mut().zip(frame) {
            *s += i32::from(*x);
        }
    }
    let mut out = [0i16; SAMPLES_PER_FRAME];
    for (o, s) in out.iter_mut().zip(sum) {
        *o = s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    }
    out
}

/// What `listener` hears this tick given each party's frame (`None`: nothing arrived, silence), or `None` when
/// no source it hears had a frame (nothing to send).
pub fn mix_for(state: BridgeState, listener: Party, frames: &[Option<Frame>; 3]) -> Option<Frame> {
    let mut audible = Party::ALL
        .iter()
        .filter(|source| state.hears(listener, **source))
        .filter_map(|source| frames[source.index()].as_ref())
        .peekable();
    audible.peek()?;
    Some(mix(audible))
}

/// Encodes a frame in `law`.
pub fn encode_frame(law: G711, frame: &Frame) -> [u8; SAMPLES_PER_FRAME] {
    let mut out = [law.silence(); SAMPLES_PER_FRAME];
    law.encode_into(frame, &mut out);
    out
}

/// Per-party queues of received linear audio, taken out 20 ms at a time.
#[derive(Debug, Clone, Default)]
pub struct Mixer {
    queues: [VecDeque<i16>; 3],
}

impl Mixer {
    /// An empty mixer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a received G.711 payload of `party` (any length); beyond [`MAX_QUEUED_SAMPLES`] the oldest
    /// samples are dropped, bounding the delay a burst can add.
    pub fn push(&mut self, party: Party, law: G711, payload: &[u8]) {
        let queue = &mut self.queues[party.index()];
        queue.extend(payload.iter().map(|b| law.decode(*b)));
        let excess = queue.len().saturating_sub(MAX_QUEUED_SAMPLES);
        queue.drain(..excess);
    }

    /// Samples queued for `party`.
    pub fn queued(&self, party: Party) -> usize {
        self.queues[party.index()].len()
    }

    /// Takes the next frame of every party that has a whole one queued; the others give `None` (silence) and
    /// keep what they have for the next tick.
    pub fn take_frames(&mut self) -> [Option<Frame>; 3] {
        let mut frames = [None; 3];
        for (slot, queue) in frames.iter_mut().zip(self.queues.iter_mut()) {
            if queue.len() >= SAMPLES_PER_FRAME {
                let mut frame = [0i16; SAMPLES_PER_FRAME];
                for (f, s) in frame.iter_mut().zip(queue.drain(..SAMPLES_PER_FRAME)) {
                    *f = s;
                }
                *slot = Some(frame);
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Party = Party::Caller;
    const B: Party = Party::Agent;
    const S: Party = Party::Supervisor;

    fn flat(value: i16) -> Frame {
        [value; SAMPLES_PER_FRAME]
    }

    fn monitored(mode: MonitorMode) -> BridgeState {
        BridgeState::default().with_monitor(Some(mode))
    }

    /// Who `listener` hears, as a sorted list.
    fn heard_by(state: BridgeState, listener: Party) -> Vec<Party> {
        Party::ALL
            .into_iter()
            .filter(|s| state.hears(listener, *s))
            .collect()
    }

    #[test]
    fn routing_per_mode() {
        let plain = BridgeState::default();
        assert_eq!(heard_by(plain, A), [B]);
        assert_eq!(heard_by(plain, B), [A]);
        assert_eq!(heard_by(plain, S), []);
        let listen = monitored(MonitorMode::Listen);
        assert_eq!(heard_by(listen, A), [B]);
        assert_eq!(heard_by(listen, B), [A]);
        assert_eq!(heard_by(listen, S), [A, B]);
        let whisper = monitored(MonitorMode::Whisper);
        assert_eq!(heard_by(whisper, A), [B]);
        assert_eq!(heard_by(whisper, B), [A, S]);
        assert_eq!(heard_by(whisper, S), [A, B]);
        let barge = monitored(MonitorMode::Barge);
        assert_eq!(heard_by(barge, A), [B, S]);
        assert_eq!(heard_by(barge, B), [A, S]);
        assert_eq!(heard_by(barge, S), [A, B]);
    }

    #[test]
    fn only_single_source_paths_relay_and_mixing_follows_the_mode() {
        let relayed = |state: BridgeState| {
            let mut pairs = Vec::new();
            for source in Party::ALL {
                for listener in Party::ALL {
                    if state.relays(source, listener) {
                        pairs.push((source, listener));
                    }
                }
            }
            pairs
        };
        assert_eq!(relayed(BridgeState::default()), [(A, B), (B, A)]);
        assert_eq!(relayed(monitored(MonitorMode::Listen)), [(A, B), (B, A)]);
        assert_eq!(relayed(monitored(MonitorMode::Whisper)), [(B, A)]);
        assert_eq!(relayed(monitored(MonitorMode::Barge)), []);
        // Every listener that hears more than one source in a mode is mixed.
        for mode in [MonitorMode::Listen, MonitorMode::Whisper, MonitorMode::Barge] {
            let state = monitored(mode);
            for listener in Party::ALL {
                assert_eq!(
                    state.is_mixed(listener),
                    heard_by(state, listener).len() > 1,
                    "{mode:?} {listener:?}"
                );
            }
        }
    }

    #[test]
    fn mute_silences_a_party_for_everyone_and_only_that_party() {
        let muted = monitored(MonitorMode::Barge).with_muted(B, true);
        assert!(muted.is_muted(B) && !muted.is_muted(A));
        assert_eq!(heard_by(muted, A), [S]);
        assert_eq!(heard_by(muted, S), [A]);
        assert_eq!(heard_by(muted, B), [A, S], "the muted party still hears");
        // Without a monitor: the other side stops hearing, and the relay stops.
        let plain = BridgeState::default().with_muted(A, true);
        assert!(!plain.relays(A, B) && plain.relays(B, A));
        // Mute does not switch a mixed listener to the relay (paths depend on the mode only).
        assert_eq!(muted.is_mixed(A), monitored(MonitorMode::Barge).is_mixed(A));
        assert_eq!(muted.with_muted(B, false), monitored(MonitorMode::Barge));
        assert!(!BridgeState::default().with_muted(S, true).is_muted(S));
    }

    #[test]
    fn hold_isolates_the_held_party_and_keeps_the_others_talking() {
        let plain = BridgeState::default().with_held(Some(A));
        assert_eq!(plain.held(), Some(A));
        assert!(!plain.relays(A, B) && !plain.relays(B, A));
        let whisper = monitored(MonitorMode::Whisper).with_held(Some(A));
        assert_eq!(heard_by(whisper, A), []);
        assert_eq!(heard_by(whisper, B), [S]);
        assert_eq!(heard_by(whisper, S), [B]);
        let barge = monitored(MonitorMode::Barge).with_held(Some(B));
        assert_eq!(barge.held(), Some(B));
        assert_eq!(heard_by(barge, A), [S]);
        assert_eq!(heard_by(barge, B), []);
        assert_eq!(barge.with_held(None), monitored(MonitorMode::Barge));
    }

    #[test]
    fn state_bits_round_trip_and_fields_are_independent() {
        let state = BridgeState::default()
            .with_monitor(Some(MonitorMode::Whisper))
            .with_held(Some(B))
            .with_muted(A, true);
        assert_eq!(BridgeState::from_bits(state.bits()), state);
        assert_eq!(
            BridgeState::from_bits(u32::MAX).monitor(),
            Some(MonitorMode::Barge)
        );
        let detached = state.with_monitor(None);
        assert_eq!(detached.monitor(), None);
        assert_eq!((detached.held(), detached.is_muted(A)), (Some(B), true));
    }

    #[test]
    fn mixing_sums_and_saturates() {
        assert_eq!(mix([&flat(1000), &flat(-300), &flat(50)]), flat(750));
        assert_eq!(mix([&flat(30000), &flat(30000)]), flat(i16::MAX));
        assert_eq!(mix([&flat(-30000), &flat(-30000)]), flat(i16::MIN));
        assert_eq!(mix(std::iter::empty::<&Frame>()), flat(0));
        // Saturation happens once, at the end: a loud pair cancelled by a third source is exact.
        assert_eq!(mix([&flat(30000), &flat(30000), &flat(-30000)]), flat(30000));
    }

    proptest! {
        #[test]
        fn mixing_is_order_independent(a in any::<i16>(), b in any::<i16>(), c in any::<i16>()) {
            let (fa, fb, fc) = (flat(a), flat(b), flat(c));
            let expected = mix([&fa, &fb, &fc]);
            for order in [[&fa, &fc, &fb], [&fb, &fa, &fc], [&fb, &fc, &fa], [&fc, &fa, &fb], [&fc, &fb, &fa]] {
                prop_assert_eq!(mix(order), expected);
            }
            let exact = (i32::from(a) + i32::from(b) + i32::from(c)).clamp(-32768, 32767) as i16;
            prop_assert_eq!(expected, flat(exact));
        }
    }

    #[test]
    fn each_listener_gets_the_others_in_its_own_law() {
        let mut mixer = Mixer::new();
        mixer.push(A, G711::Pcmu, &[G711::Pcmu.encode(1000); 160]);
        mixer.push(B, G711::Pcma, &[G711::Pcma.encode(3000); 160]);
        mixer.push(S, G711::Pcmu, &[G711::Pcmu.encode(9000); 160]);
        let frames = mixer.take_frames();
        let a = i32::from(G711::Pcmu.decode(G711::Pcmu.encode(1000)));
        let b = i32::from(G711::Pcma.decode(G711::Pcma.encode(3000)));
        let s = i32::from(G711::Pcmu.decode(G711::Pcmu.encode(9000)));
        let barge = monitored(MonitorMode::Barge);
        let at_agent = mix_for(barge, B, &frames).unwrap();
        assert_eq!(at_agent, flat((a + s) as i16));
        let encoded = encode_frame(G711::Pcma, &at_agent);
        assert_eq!(encoded, [G711::Pcma.encode((a + s) as i16); 160]);
        assert_eq!(mix_for(barge, S, &frames).unwrap(), flat((a + b) as i16));
        assert_eq!(mix_for(barge, A, &frames).unwrap(), flat((b + s) as i16));
        // In whisper the caller hears the agent alone.
        let whisper = monitored(MonitorMode::Whisper);
        assert_eq!(mix_for(whisper, A, &frames).unwrap(), flat(b as i16));
        // A-law silence encodes to the law's silence byte.
        assert_eq!(encode_frame(G711::Pcma, &flat(0)), [G711::Pcma.silence(); 160]);
    }

    #[test]
    fn a_missing_source_is_silence_and_does_not_stall_the_others() {
        let mut mixer = Mixer::new();
        mixer.push(A, G711::Pcmu, &[G711::Pcmu.encode(1000); 160]);
        // The agent's packet is late: half a frame so far.
        mixer.push(B, G711::Pcmu, &[G711::Pcmu.encode(3000); 80]);
        let frames = mixer.take_frames();
        assert!(frames[0].is_some() && frames[1].is_none() && frames[2].is_none());
        let barge = monitored(MonitorMode::Barge);
        let a = G711::Pcmu.decode(G711::Pcmu.encode(1000));
        assert_eq!(
            mix_for(barge, S, &frames),
            Some(flat(a)),
            "the caller is heard on time"
        );
        assert_eq!(
            mix_for(barge, A, &frames),
            None,
            "nothing to send: no source had a frame"
        );
        // The rest of the late packet arrives; it is heard on the next tick.
        mixer.push(B, G711::Pcmu, &[G711::Pcmu.encode(3000); 80]);
        assert_eq!(mixer.queued(B), 160);
        let next = mixer.take_frames();
        assert!(next[0].is_none() && next[1].is_some());
    }

    #[test]
    fn queues_are_bounded_by_dropping_the_oldest() {
        let mut mixer = Mixer::new();
        for value in 0..10u8 {
            mixer.push(S, G711::Pcmu, &[value; 160]);
        }
        assert_eq!(mixer.queued(S), MAX_QUEUED_SAMPLES);
        let first = mixer.take_frames()[2].unwrap();
        assert_eq!(
            first,
            flat(G711::Pcmu.decode(6)),
            "the four newest frames are kept"
        );
    }

    #[test]
    fn muted_and_held_sources_are_left_out_of_the_mix() {
        let mut mixer = Mixer::new();
        for party in Party::ALL {
            mixer.push(party, G711::Pcmu, &[G711::Pcmu.encode(2000); 160]);
        }
        let frames = mixer.take_frames();
        let one = G711::Pcmu.decode(G711::Pcmu.encode(2000));
        let barge = monitored(MonitorMode::Barge);
        assert_eq!(mix_for(barge.with_muted(B, true), A, &frames), Some(flat(one)));
        assert_eq!(mix_for(barge.with_held(Some(A)), S, &frames), Some(flat(one)));
        assert_eq!(mix_for(barge.with_held(Some(A)), A, &frames), None);
    }
}
