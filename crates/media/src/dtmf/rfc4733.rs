//! RFC 4733 telephone-events: the 4-byte payload, a receiver that reports each digit once (the end of an event
//! is sent three times, all with the event's timestamp) and a sender that produces the packet train of a digit.

use super::DtmfDigit;
use thiserror::Error;

/// The payload type offered for telephone-event when the peer has not chosen one.
pub const DEFAULT_PAYLOAD_TYPE: u8 = 101;
/// Timestamp units (8 kHz samples) per 20 ms packet interval.
pub const UNITS_PER_PACKET: u32 = 160;
/// How many times the final (end) packet is sent.
pub const END_REPEATS: usize = 3;

/// Why a payload is not a telephone-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EventError {
    #[error("telephone-event payload of {0} bytes is shorter than 4")]
    TooShort(usize),
}

/// One telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first four bytes of a payload (RFC 4733 allows several events per packet; the first one is
    /// the current event).
    pub fn parse(payload: &[u8]) -> Result<Self, EventError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(Self {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(EventError::TooShort(payload.len())),
        }
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        [
            self.event,
            if self.end { 0x80 } else { 0 } | (self.volume & 0x3f),
            d0,
            d1,
        ]
    }
}

/// A digit reported by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedDigit {
    pub digit: DtmfDigit,
    /// RTP timestamp of the event start.
    pub timestamp: u32,
    /// Duration in timestamp units (8 kHz).
    pub duration: u16,
    /// False when the end packets were lost and a later event (or [`Rfc4733Receiver::flush`]) closed it.
    pub ended_cleanly: bool,
}

#[derive(Debug, Clone, Copy)]
struct ActiveEvent {
    digit: DtmfDigit,
    timestamp: u32,
    duration: u16,
    reported: bool,
}

/// Turns a stream of telephone-event packets into digits, each reported once.
#[derive(Debug, Default)]
pub struct Rfc4733Receiver {
    current: Option<ActiveEvent>,
    ready: Option<ReceivedDigit>,
    /// Second slot: a lost-end event closed by a new event that itself ends in the same packet.
    ready_next: Option<ReceivedDigit>,
}

/// True if `a` is before `b` in 32-bit RTP timestamp arithmetic.
fn timestamp_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Rfc4733Receiver {
    /// A receiver with no event in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one packet's RTP timestamp and payload. Malformed payloads and non-digit events are ignored.
    pub fn handle_packet(&mut self, timestamp: u32, payload: &[u8]) {
        let Ok(event) = TelephoneEvent::parse(payload) else {
            return;
        };
        let Some(digit) = DtmfDigit::from_event(event.event) else {
            return;
        };
        match self.current {
            Some(ref mut active) if active.timestamp == timestamp => {
                if active.reported {
                    return; // a redundant end packet, or a late update after the end
                }
                active.duration = active.duration.max(event.duration);
                if event.end {
                    active.reported = true;
                    let done = ReceivedDigit {
                        digit: active.digit,
                        timestamp,
                        duration: active.duration,
                        ended_cleanly: true,
                    };
                    self.push(done);
                }
            }
            Some(active) if timestamp_before(timestamp, active.timestamp) => {} // late packet of an old event
            previous => {
                if let Some(old) = previous.filter(|a| !a.reported) {
                    self.push(ReceivedDigit {
                        digit: old.digit,
                        timestamp: old.timestamp,
                        duration: old.duration,
                        ended_cleanly: false,
                    });
                }
                self.current = Some(ActiveEvent {
                    digit,
                    timestamp,
                    duration: event.duration,
                    reported: event.end,
                });
                if event.end {
                    self.push(ReceivedDigit {
                        digit,
                        timestamp,
                        duration: event.duration,
                        ended_cleanly: true,
                    });
                }
            }
        }
    }

    fn push(&mut self, digit: ReceivedDigit) {
        if self.ready.is_none() {
            self.ready = Some(digit);
        } else {
            self.ready_next = Some(digit);
        }
    }

    /// The next completed digit, if any.
    pub fn poll_digit(&mut self) -> Option<ReceivedDigit> {
        let out = self.ready.take();
        self.ready = self.ready_next.take();
        out
    }

    /// Closes an event whose end packets never came (call it when the stream stops).
    pub fn flush(&mut self) {
        if let Some(active) = self.current.as_mut().filter(|a| !a.reported) {
            active.reported = true;
            let done = ReceivedDigit {
                digit: active.digit,
                timestamp: active.timestamp,
                duration: active.duration,
                ended_cleanly: false,
            };
            self.push(done);
        }
    }
}

/// One packet of an outgoing digit; all packets of a digit carry the event's start timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingEventPacket {
    /// Set on the first packet of the event only.
    pub marker: bool,
    pub event: TelephoneEvent,
}

/// The packets of one digit, one per 20 ms: updates with growing duration, then the end packet three times.
/// `duration_ms` is capped at the 16-bit duration field (about 8 s) and at least one packet interval.
pub fn digit_packets(
    digit: DtmfDigit,
    duration_ms: u32,
    volume: u8,
) -> impl Iterator<Item = OutgoingEventPacket> {
    let total = (duration_ms.saturating_mul(8)).clamp(UNITS_PER_PACKET, u32::from(u16::MAX));
    let updates = total.div_ceil(UNITS_PER_PACKET);
    let code = digit.event();
    (1..=updates)
        .map(move |k| (k, k == updates))
        .chain((0..END_REPEATS - 1).map(move |_| (updates, true)))
        .map(move |(k, end)| {
            let duration = (k * UNITS_PER_PACKET).min(total) as u16; // total fits u16 by the clamp
            OutgoingEventPacket {
                marker: k == 1,
                event: TelephoneEvent {
                    event: code,
                    end,
                    volume: volume & 0x3f,
                    duration,
                },
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(
        receiver: &mut Rfc4733Receiver,
        timestamp: u32,
        packets: impl Iterator<Item = OutgoingEventPacket>,
    ) -> Vec<ReceivedDigit> {
        let mut out = Vec::new();
        for packet in packets {
            receiver.handle_packet(timestamp, &packet.event.to_bytes());
            while let Some(d) = receiver.poll_digit() {
                out.push(d);
            }
        }
        out
    }

    #[test]
    fn payload_round_trip_and_short_payload() {
        let event = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(event.to_bytes(), [11, 0x8a, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::parse(&event.to_bytes()), Ok(event));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(EventError::TooShort(3)));
    }

    #[test]
    fn sender_train_has_marker_growing_durations_and_three_ends() {
        let packets: Vec<_> = digit_packets(DtmfDigit::D5, 100, 10).collect();
        // 100 ms = 800 units: updates at 160, 320, 480, 640, 800 (end), then two more ends.
        let durations: Vec<u16> = packets.iter().map(|p| p.event.duration).collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = packets.iter().map(|p| p.event.end).collect();
        assert_eq!(ends, [false, false, false, false, true, true, true]);
        assert!(packets[0].marker);
        assert!(packets[1..].iter().all(|p| !p.marker));
        assert!(packets.iter().all(|p| p.event.event == 5 && p.event.volume == 10));
        // A duration that is not a multiple of 20 ms ends on the exact value.
        let odd: Vec<u16> = digit_packets(DtmfDigit::D1, 50, 0)
            .map(|p| p.event.duration)
            .collect();
        assert_eq!(odd, [160, 320, 400, 400, 400]);
    }

    #[test]
    fn receiver_reports_each_digit_once_despite_redundant_ends() {
        let mut receiver = Rfc4733Receiver::new();
        let first = feed(&mut receiver, 1000, digit_packets(DtmfDigit::D1, 100, 10));
        let second = feed(&mut receiver, 2600, digit_packets(DtmfDigit::Pound, 60, 10));
        let repeat = feed(&mut receiver, 4200, digit_packets(DtmfDigit::Pound, 60, 10));
        assert_eq!(
            first,
            [ReceivedDigit {
                digit: DtmfDigit::D1,
                timestamp: 1000,
                duration: 800,
                ended_cleanly: true
            }]
        );
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].digit, DtmfDigit::Pound);
        // The same key pressed again is a new event (new timestamp) and is reported again.
        assert_eq!(repeat.len(), 1);
    }

    #[test]
    fn lost_end_packets_are_closed_by_the_next_event_or_flush() {
        let mut receiver = Rfc4733Receiver::new();
        let no_end = digit_packets(DtmfDigit::D7, 100, 10).filter(|p| !p.event.end);
        assert!(feed(&mut receiver, 500, no_end).is_empty());
        let next = feed(&mut receiver, 2000, digit_packets(DtmfDigit::D8, 40, 10).take(1));
        assert_eq!(next.len(), 1);
        assert_eq!(
            (next[0].digit, next[0].ended_cleanly, next[0].duration),
            (DtmfDigit::D7, false, 640)
        );
        receiver.flush();
        let flushed = receiver.poll_digit().unwrap();
        assert_eq!((flushed.digit, flushed.ended_cleanly), (DtmfDigit::D8, false));
        receiver.flush();
        assert_eq!(receiver.poll_digit(), None);
    }

    #[test]
    fn late_and_foreign_packets_are_ignored() {
        let mut receiver = Rfc4733Receiver::new();
        feed(&mut receiver, 5000, digit_packets(DtmfDigit::D2, 60, 10));
        // A delayed update of an older event.
        receiver.handle_packet(
            3000,
            &TelephoneEvent {
                event: 3,
                end: false,
                volume: 10,
                duration: 160,
            }
            .to_bytes(),
        );
        // Flash-hook (event 16) is not a digit; a 2-byte payload is malformed.
        receiver.handle_packet(
            7000,
            &TelephoneEvent {
                event: 16,
                end: true,
                volume: 10,
                duration: 160,
            }
            .to_bytes(),
        );
        receiver.handle_packet(7000, &[1, 2]);
        assert_eq!(receiver.poll_digit(), None);
    }

    proptest! {
        #[test]
        fn any_packet_sequence_never_panics_and_reports_at_most_one_per_timestamp(
            packets in proptest::collection::vec((0u32..5, proptest::collection::vec(any::<u8>(), 0..6)), 0..60)
        ) {
            let mut receiver = Rfc4733Receiver::new();
            let mut reported = Vec::new();
            for (ts, payload) in &packets {
                receiver.handle_packet(ts * 1000, payload);
                while let Some(d) = receiver.poll_digit() {
                    reported.push(d.timestamp);
                }
            }
            // Timestamps only move forward here when they change, so each event is reported at most once in a row.
            for pair in reported.windows(2) {
                prop_assert!(pair[0] != pair[1]);
            }
        }

        #[test]
        fn every_digit_and_duration_round_trips(code in 0u8..16, ms in 20u32..3000, ts in any::<u32>()) {
            let digit = DtmfDigit::from_event(code).unwrap();
            let mut receiver = Rfc4733Receiver::new();
            let got = feed(&mut receiver, ts, digit_packets(digit, ms, 10));
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(got[0].digit, digit);
            prop_assert_eq!(u32::from(got[0].duration), (ms * 8).max(160));
        }
    }
}
