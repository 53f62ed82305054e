//! One outgoing RTP stream: our SSRC and a sequence number and timestamp that stay continuous whatever feeds
//! the stream (a relayed peer whose SSRC changes after a re-INVITE, a prompt, music on hold, DTMF).
//!
//! Relayed packets keep their own spacing: their sequence and timestamp are shifted by offsets fixed when the
//! incoming source starts or changes, so reordering and loss pass through unchanged. When the feed switches,
//! the next timestamp continues from the last one plus the wall-clock gap, and the marker bit is set.

/// Milliseconds on the owner's clock (only differences are used).
pub type Millis = i64;

/// Header fields for one outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
}

/// The header fields of a packet being relayed, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceHeader {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
}

#[derive(Debug, Clone, Copy)]
struct RelayMapping {
    source_ssrc: u32,
    sequence_offset: u16,
    timestamp_offset: u32,
}

/// State of our sending side on one leg.
#[derive(Debug, Clone)]
pub struct OutgoingStream {
    ssrc: u32,
    next_sequence: u16,
    next_timestamp: u32,
    last_sent_at: Option<Millis>,
    relay: Option<RelayMapping>,
    packets_sent: u32,
    octets_sent: u32,
}

/// Gaps shorter than this keep the timestamp strictly continuous (timer jitter is not a gap).
const CONTINUOUS_GAP_MS: Millis = 60;

fn newer_u16(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

fn newer_u32(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

impl OutgoingStream {
    /// A stream with the given SSRC, first sequence number and first timestamp (random in production).
    pub fn new(ssrc: u32, first_sequence: u16, first_timestamp: u32) -> Self {
        Self {
            ssrc,
            next_sequence: first_sequence,
            next_timestamp: first_timestamp,
            last_sent_at: None,
            relay: None,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    /// Packets sent so far (for sender reports).
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }
    /// Payload octets sent so far (for sender reports).
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }
    /// The timestamp the next continuous packet would carry.
    pub fn next_timestamp(&self) -> u32 {
        self.next_timestamp
    }

    /// Where the timestamp continues after a feed switch: continuous if the gap is short, else advanced by it.
    fn resume_timestamp(&self, now: Millis) -> (u32, bool) {
        match self.last_sent_at {
            None => (self.next_timestamp, true),
            Some(last) => {
                let gap = now.saturating_sub(last);
                if gap < CONTINUOUS_GAP_MS {
                    (self.next_timestamp, false)
                } else {
                    // The next packet would have been due 20 ms after the last one; the rest of the gap is silence.
                    let extra = u32::try_from((gap - 20).max(0).saturating_mul(8)).unwrap_or(u32::MAX);
                    (self.next_timestamp.wrapping_add(extra), true)
                }
            }
        }
    }

    fn record(&mut self, now: Millis, payload_len: usize) {
        self.last_sent_at = Some(now);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    /// Stamps a locally generated audio packet of `samples` samples (prompt, music on hold, recorder echo).
    pub fn stamp_local(&mut self, now: Millis, samples: u32, payload_len: usize) -> Stamp {
        let switching = self.relay.take().is_some();
        let (timestamp, gap) = self.resume_timestamp(now);
        let stamp = Stamp {
            sequence: self.next_sequence,
            timestamp,
            marker: gap || switching,
        };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.next_timestamp = timestamp.wrapping_add(samples);
        self.record(now, payload_len);
        stamp
    }

    /// Stamps one packet of a telephone-event whose start timestamp is `event_timestamp` (all packets of an
    /// event share it); `event_timestamp` comes from [`OutgoingStream::begin_event`].
    pub fn stamp_event(
        &mut self,
        now: Millis,
        event_timestamp: u32,
        marker: bool,
        elapsed_samples: u32,
    ) -> Stamp {
        self.relay = None;
        let stamp = Stamp {
            sequence: self.next_sequence,
            timestamp: event_timestamp,
            marker,
        };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let after = event_timestamp.wrapping_add(elapsed_samples);
        if newer_u32(after, self.next_timestamp) {
            self.next_timestamp = after;
        }
        self.record(now, 4);
        stamp
    }

    /// The start timestamp of a new telephone-event sent now.
    pub fn begin_event(&self, now: Millis) -> u32 {
        self.resume_timestamp(now).0
    }

    /// Stamps a relayed packet from a source with `source_ssrc`, keeping its own sequence and timestamp spacing.
    pub fn stamp_relayed(
        &mut self,
        now: Millis,
        source: SourceHeader,
        samples: u32,
        payload_len: usize,
    ) -> Stamp {
        let SourceHeader {
            ssrc: source_ssrc,
            sequence: source_sequence,
            timestamp: source_timestamp,
            marker,
        } = source;
        let mut marker = marker;
        let mapping = match self.relay {
            Some(m) if m.source_ssrc == source_ssrc => m,
            _ => {
                let (timestamp, _) = self.resume_timestamp(now);
                marker = true;
                let m = RelayMapping {
                    source_ssrc,
                    sequence_offset: self.next_sequence.wrapping_sub(source_sequence),
                    timestamp_offset: timestamp.wrapping_sub(source_timestamp),
                };
                self.relay = Some(m);
                m
            }
        };
        let sequence = source_sequence.wrapping_add(mapping.sequence_offset);
        let timestamp = source_timestamp.wrapping_add(mapping.timestamp_offset);
        // A late (reordered) packet keeps its mapped numbers but does not move the stream backwards.
        if !newer_u16(self.next_sequence, sequence.wrapping_add(1)) {
            self.next_sequence = sequence.wrapping_add(1);
        }
        let end = timestamp.wrapping_add(samples);
        if newer_u32(end, self.next_timestamp) {
            self.next_timestamp = end;
        }
        self.record(now, payload_len);
        Stamp {
            sequence,
            timestamp,
            marker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_frames_are_continuous() {
        let mut s = OutgoingStream::new(7, 65534, 4_294_967_000);
        let stamps: Vec<Stamp> = (0..4).map(|i| s.stamp_local(i * 20, 160, 160)).collect();
        assert!(stamps[0].marker);
        assert!(stamps[1..].iter().all(|s| !s.marker));
        assert_eq!(
            stamps.iter().map(|s| s.sequence).collect::<Vec<_>>(),
            [65534, 65535, 0, 1]
        );
        for pair in stamps.windows(2) {
            assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 160);
        }
        assert_eq!((s.packets_sent(), s.octets_sent()), (4, 640));
    }

    #[test]
    fn relay_keeps_source_spacing_and_survives_source_changes() {
        let mut s = OutgoingStream::new(1, 100, 1000);
        s.stamp_local(0, 160, 160); // a prompt frame: seq 100, ts 1000
        let a = s.stamp_relayed(
            20,
            SourceHeader {
                ssrc: 0xaaaa,
                sequence: 5000,
                timestamp: 90_000,
                marker: false,
            },
            160,
            160,
        );
        assert_eq!((a.sequence, a.timestamp, a.marker), (101, 1160, true));
        // Packet 5002 arrives before 5001 (reordered; 5001 was sent as well later).
        let c = s.stamp_relayed(
            60,
            SourceHeader {
                ssrc: 0xaaaa,
                sequence: 5002,
                timestamp: 90_320,
                marker: false,
            },
            160,
            160,
        );
        let b = s.stamp_relayed(
            61,
            SourceHeader {
                ssrc: 0xaaaa,
                sequence: 5001,
                timestamp: 90_160,
                marker: false,
            },
            160,
            160,
        );
        assert_eq!((b.sequence, b.timestamp, b.marker), (102, 1320, false));
        assert_eq!((c.sequence, c.timestamp), (103, 1480));
        // The peer re-INVITEs and restarts with a new SSRC and random numbers: we continue seamlessly.
        let d = s.stamp_relayed(
            80,
            SourceHeader {
                ssrc: 0xbbbb,
                sequence: 7,
                timestamp: 3,
                marker: false,
            },
            160,
            160,
        );
        assert_eq!((d.sequence, d.timestamp, d.marker), (104, 1640, true));
        // Back to a prompt after a 1 s gap: timestamp jumps by the gap.
        let e = s.stamp_local(1080, 160, 160);
        assert_eq!(e.sequence, 105);
        assert_eq!(e.timestamp, 1800 + 980 * 8);
        assert!(e.marker);
    }

    #[test]
    fn events_share_their_start_timestamp() {
        let mut s = OutgoingStream::new(1, 0, 0);
        s.stamp_local(0, 160, 160);
        let start = s.begin_event(20);
        assert_eq!(start, 160);
        let first = s.stamp_event(20, start, true, 160);
        let second = s.stamp_event(40, start, false, 320);
        assert_eq!((first.sequence, second.sequence), (1, 2));
        assert_eq!((first.timestamp, second.timestamp), (160, 160));
        let audio = s.stamp_local(60, 160, 160);
        assert_eq!(audio.timestamp, 480);
    }
}
