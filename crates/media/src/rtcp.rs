//! RTCP compound packets (RFC 3550 section 6): sender and receiver reports, source descriptions, BYE.
//!
//! RTCP travels at a few packets per call every few seconds, so the parsed form is owned (vectors) for
//! simplicity; parsing checks every length field and never panics. Unknown packet types are kept as raw
//! bodies so a compound packet round-trips.

use thiserror::Error;

/// RTCP packet type: sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type: receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type: source description.
pub const PT_SDES: u8 = 202;
/// RTCP packet type: goodbye.
pub const PT_BYE: u8 = 203;
/// SDES item type: canonical name.
pub const SDES_CNAME: u8 = 1;

/// Why bytes are not an RTCP compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    #[error("RTCP packet at offset {offset} is truncated")]
    Truncated { offset: usize },
    #[error("RTCP version {version} at offset {offset} is not 2")]
    BadVersion { offset: usize, version: u8 },
    #[error("RTCP padding at offset {offset} is invalid")]
    BadPadding { offset: usize },
    #[error("RTCP compound packet is empty")]
    Empty,
    #[error("RTCP field does not fit: {what}")]
    TooLarge { what: &'static str },
}

/// One reception report block (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, a signed 24-bit value (duplicates can make it negative).
    pub cumulative_lost: i32,
    pub extended_highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from this source.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 seconds.
    pub delay_since_last_sr: u32,
}

/// A sender report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderReport {
    pub ssrc: u32,
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
    pub reports: Vec<ReportBlock>,
    /// Profile-specific extension after the report blocks, kept verbatim.
    pub extension: Vec<u8>,
}

/// A receiver report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverReport {
    pub ssrc: u32,
    pub reports: Vec<ReportBlock>,
    pub extension: Vec<u8>,
}

/// One SDES item (type 1..=255, up to 255 bytes of text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesItem {
    pub kind: u8,
    pub text: Vec<u8>,
}

/// The SDES items of one source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdesChunk {
    pub ssrc: u32,
    pub items: Vec<SdesItem>,
}

/// A goodbye.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bye {
    pub ssrcs: Vec<u32>,
    pub reason: Option<Vec<u8>>,
}

/// One packet of a compound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport(SenderReport),
    ReceiverReport(ReceiverReport),
    SourceDescription(Vec<SdesChunk>),
    Bye(Bye),
    /// Any other type (APP, feedback, XR): the 5-bit count field and the body.
    Other {
        packet_type: u8,
        count: u8,
        body: Vec<u8>,
    },
}

/// A compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtcpCompound {
    pub packets: Vec<RtcpPacket>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        Some((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

fn read_report_block(r: &mut Reader<'_>) -> Option<ReportBlock> {
    let ssrc = r.u32()?;
    let lost_word = r.u32()?;
    let raw_lost = lost_word & 0x00ff_ffff;
    // Sign-extend the 24-bit value.
    let cumulative_lost = ((raw_lost << 8) as i32) >> 8;
    Some(ReportBlock {
        ssrc,
        fraction_lost: (lost_word >> 24) as u8,
        cumulative_lost,
        extended_highest_sequence: r.u32()?,
        jitter: r.u32()?,
        last_sr: r.u32()?,
        delay_since_last_sr: r.u32()?,
    })
}

fn write_report_block(out: &mut Vec<u8>, block: &ReportBlock) {
    out.extend_from_slice(&block.ssrc.to_be_bytes());
    let lost = (u32::from(block.fraction_lost) << 24) | (block.cumulative_lost as u32 & 0x00ff_ffff);
    out.extend_from_slice(&lost.to_be_bytes());
    out.extend_from_slice(&block.extended_highest_sequence.to_be_bytes());
    out.extend_from_slice(&block.jitter.to_be_bytes());
    out.extend_from_slice(&block.last_sr.to_be_bytes());
    out.extend_from_slice(&block.delay_since_last_sr.to_be_bytes());
}

fn parse_body(packet_type: u8, count: u8, body: &[u8], offset: usize) -> Result<RtcpPacket, RtcpError> {
    let truncated = RtcpError::Truncated { offset };
    let mut r = Reader { buf: body, pos: 0 };
    match packet_type {
        PT_SR => {
            let ssrc = r.u32().ok_or(truncated)?;
            let ntp_timestamp = r.u64().ok_or(truncated)?;
            let rtp_timestamp = r.u32().ok_or(truncated)?;
            let packet_count = r.u32().ok_or(truncated)?;
            let octet_count = r.u32().ok_or(truncated)?;
            let reports = (0..count)
                .map(|_| read_report_block(&mut r).ok_or(truncated))
                .collect::<Result<_, _>>()?;
            Ok(RtcpPacket::SenderReport(SenderReport {
                ssrc,
                ntp_timestamp,
                rtp_timestamp,
                packet_count,
                octet_count,
                reports,
                extension: r.rest().to_vec(),
            }))
        }
        PT_RR => {
            let ssrc = r.u32().ok_or(truncated)?;
            let reports = (0..count)
                .map(|_| read_report_block(&mut r).ok_or(truncated))
                .collect::<Result<_, _>>()?;
            Ok(RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc,
                reports,
                extension: r.rest().to_vec(),
            }))
        }
        PT_SDES => {
            let mut chunks = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let ssrc = r.u32().ok_or(truncated)?;
                let mut items = Vec::new();
                loop {
                    let kind = r.u8().ok_or(truncated)?;
                    if kind == 0 {
                        break;
                    }
                    let len = r.u8().ok_or(truncated)?;
                    let text = r.bytes(usize::from(len)).ok_or(truncated)?.to_vec();
                    items.push(SdesItem { kind, text });
                }
                // The null terminator is followed by zeros up to the next 32-bit boundary.
                let aligned = r.pos.div_ceil(4) * 4;
                r.bytes(aligned - r.pos).ok_or(truncated)?;
                chunks.push(SdesChunk { ssrc, items });
            }
            Ok(RtcpPacket::SourceDescription(chunks))
        }
        PT_BYE => {
            let ssrcs = (0..count)
                .map(|_| r.u32().ok_or(truncated))
                .collect::<Result<_, _>>()?;
            let reason = match r.u8() {
                Some(len) => Some(r.bytes(usize::from(len)).ok_or(truncated)?.to_vec()),
                None => None,
            };
            Ok(RtcpPacket::Bye(Bye { ssrcs, reason }))
        }
        _ => Ok(RtcpPacket::Other {
            packet_type,
            count,
            body: body.to_vec(),
        }),
    }
}

impl RtcpCompound {
    /// Parses a compound datagram; every packet must be well formed.
    pub fn parse(buf: &[u8]) -> Result<Self, RtcpError> {
        if buf.is_empty() {
            return Err(RtcpError::Empty);
        }
        let mut packets = Vec::new();
        let mut offset = 0;
        while offset < buf.len() {
            let header = buf
                .get(offset..offset + 4)
                .ok_or(RtcpError::Truncated { offset })?;
            let version = header[0] >> 6;
            if version != 2 {
                return Err(RtcpError::BadVersion { offset, version });
            }
            let has_padding = header[0] & 0x20 != 0;
            let count = header[0] & 0x1f;
            let packet_type = header[1];
            let words = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let end = offset + 4 + words * 4;
            let mut body = buf.get(offset + 4..end).ok_or(RtcpError::Truncated { offset })?;
            if has_padding {
                // Only the last packet of a compound may be padded.
                let padding = usize::from(*body.last().ok_or(RtcpError::BadPadding { offset })?);
                if padding == 0 || padding > body.len() || end != buf.len() {
                    return Err(RtcpError::BadPadding { offset });
                }
                body = body
                    .get(..body.len() - padding)
                    .ok_or(RtcpError::BadPadding { offset })?;
            }
            packets.push(parse_body(packet_type, count, body, offset)?);
            offset = end;
        }
        Ok(Self { packets })
    }

    /// Serialises the compound (no padding). Fails if a count or length does not fit its field.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RtcpError> {
        let mut out = Vec::with_capacity(128);
        for packet in &self.packets {
            let start = out.len();
            out.extend_from_slice(&[0, 0, 0, 0]);
            let (packet_type, count) = match packet {
                RtcpPacket::SenderReport(sr) => {
                    out.extend_from_slice(&sr.ssrc.to_be_bytes());
                    out.extend_from_slice(&sr.ntp_timestamp.to_be_bytes());
                    out.extend_from_slice(&sr.rtp_timestamp.to_be_bytes());
                    out.extend_from_slice(&sr.packet_count.to_be_bytes());
                    out.extend_from_slice(&sr.octet_count.to_be_bytes());
                    sr.reports.iter().for_each(|b| write_report_block(&mut out, b));
                    out.extend_from_slice(&sr.extension);
                    (PT_SR, sr.reports.len())
                }
                RtcpPacket::ReceiverReport(rr) => {
                    out.extend_from_slice(&rr.ssrc.to_be_bytes());
                    rr.reports.iter().for_each(|b| write_report_block(&mut out, b));
                    out.extend_from_slice(&rr.extension);
                    (PT_RR, rr.reports.len())
                }
                RtcpPacket::SourceDescription(chunks) => {
                    for chunk in chunks {
                        let chunk_start = out.len();
                        out.extend_from_slice(&chunk.ssrc.to_be_bytes());
                        for item in &chunk.items {
                            let len = u8::try_from(item.text.len()).map_err(|_| RtcpError::TooLarge {
                                what: "SDES item text",
                            })?;
                            if item.kind == 0 {
                                return Err(RtcpError::TooLarge {
                                    what: "SDES item type 0",
                                });
                            }
                            out.push(item.kind);
                            out.push(len);
                            out.extend_from_slice(&item.text);
                        }
                        out.push(0);
                        while (out.len() - chunk_start) % 4 != 0 {
                            out.push(0);
                        }
                    }
                    (PT_SDES, chunks.len())
                }
                RtcpPacket::Bye(bye) => {
                    bye.ssrcs
                        .iter()
                        .for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
                    if let Some(reason) = &bye.reason {
                        let len = u8::try_from(reason.len())
                            .map_err(|_| RtcpError::TooLarge { what: "BYE reason" })?;
                        out.push(len);
                        out.extend_from_slice(reason);
                        while (out.len() - start) % 4 != 0 {
                            out.push(0);
                        }
                    }
                    (PT_BYE, bye.ssrcs.len())
                }
                RtcpPacket::Other {
                    packet_type,
                    count,
                    body,
                } => {
                    out.extend_from_slice(body);
                    (*packet_type, usize::from(*count))
                }
            };
            if count > 31 {
                return Err(RtcpError::TooLarge { what: "RTCP count" });
            }
            if (out.len() - start) % 4 != 0 {
                return Err(RtcpError::TooLarge {
                    what: "RTCP body not a multiple of 4 bytes",
                });
            }
            let words = u16::try_from((out.len() - start) / 4 - 1)
                .map_err(|_| RtcpError::TooLarge { what: "RTCP length" })?;
            let header = [0x80 | count as u8, packet_type, (words >> 8) as u8, words as u8];
            out[start..start + 4].copy_from_slice(&header);
        }
        Ok(out)
    }
}

/// The wait before the next RTCP report (RFC 3550 §6.3.1): the nominal interval times a factor drawn
/// uniformly from [0.5, 1.5), `random_unit` in [0, 1). Randomised so that legs started together (a bench,
/// a campaign's burst of answers) do not all report, and wake, in the same instant.
pub fn report_interval(nominal: std::time::Duration, random_unit: f64) -> std::time::Duration {
    nominal.mul_f64(0.5 + random_unit.clamp(0.0, 1.0))
}

/// Middle 32 bits of a 64-bit NTP timestamp, as echoed in `last_sr`.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// NTP timestamp (seconds since 1900 in the high 32 bits, fraction in the low) from milliseconds since 1970.
pub fn ntp_from_unix_millis(ms: i64) -> u64 {
    const UNIX_TO_NTP_SECS: i64 = 2_208_988_800;
    let secs = ms.div_euclid(1000) + UNIX_TO_NTP_SECS;
    let frac_ms = ms.rem_euclid(1000) as u64;
    ((secs.max(0) as u64) << 32) | ((frac_ms << 32) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> RtcpCompound {
        RtcpCompound {
            packets: vec![
                RtcpPacket::SenderReport(SenderReport {
                    ssrc: 1,
                    ntp_timestamp: 0x0102_0304_0506_0708,
                    rtp_timestamp: 160,
                    packet_count: 10,
                    octet_count: 1600,
                    reports: vec![ReportBlock {
                        ssrc: 2,
                        fraction_lost: 12,
                        cumulative_lost: -3,
                        extended_highest_sequence: 70000,
                        jitter: 40,
                        last_sr: 5,
                        delay_since_last_sr: 6,
                    }],
                    extension: vec![],
                }),
                RtcpPacket::SourceDescription(vec![SdesChunk {
                    ssrc: 1,
                    items: vec![SdesItem {
                        kind: SDES_CNAME,
                        text: b"media@cc".to_vec(),
                    }],
                }]),
                RtcpPacket::Bye(Bye {
                    ssrcs: vec![1],
                    reason: Some(b"hangup".to_vec()),
                }),
            ],
        }
    }

    #[test]
    fn sr_sdes_bye_round_trip() {
        let compound = sample();
        let bytes = compound.to_bytes().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(bytes[1], PT_SR);
        assert_eq!(RtcpCompound::parse(&bytes).unwrap(), compound);
    }

    #[test]
    fn known_receiver_report_bytes() {
        // RR from SSRC 0x11223344 with one block about 0x55667788: 25/256 lost, 3 cumulative.
        let bytes = [
            0x81, 201, 0, 7, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 25, 0, 0, 3, 0, 1, 0, 10, 0, 0,
            0, 20, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let compound = RtcpCompound::parse(&bytes).unwrap();
        let RtcpPacket::ReceiverReport(rr) = &compound.packets[0] else {
            panic!("not an RR")
        };
        assert_eq!(rr.ssrc, 0x1122_3344);
        assert_eq!(rr.reports[0].fraction_lost, 25);
        assert_eq!(rr.reports[0].cumulative_lost, 3);
        assert_eq!(rr.reports[0].extended_highest_sequence, 65546);
        assert_eq!(rr.reports[0].jitter, 20);
        assert_eq!(compound.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn rejects_truncated_and_bad_padding() {
        let bytes = sample().to_bytes().unwrap();
        for cut in 1..bytes.len() {
            // Cutting at a packet boundary leaves a valid shorter compound; anywhere else is an error.
            let _ = RtcpCompound::parse(&bytes[..cut]);
        }
        assert!(RtcpCompound::parse(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(RtcpCompound::parse(&[]), Err(RtcpError::Empty));
        assert!(matches!(
            RtcpCompound::parse(&[0x40, 200, 0, 0]),
            Err(RtcpError::BadVersion { .. })
        ));
        // Padded RR whose padding count is zero.
        assert!(matches!(
            RtcpCompound::parse(&[0xa0, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::BadPadding { .. })
        ));
        // A valid padded RR: 4 bytes SSRC + 4 bytes padding.
        let padded = [0xa0, 201, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4];
        let compound = RtcpCompound::parse(&padded).unwrap();
        assert_eq!(
            compound.packets,
            vec![RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 9,
                ..Default::default()
            })]
        );
    }

    #[test]
    fn ntp_conversion() {
        let ntp = ntp_from_unix_millis(1500);
        assert_eq!(ntp >> 32, 2_208_988_801);
        assert_eq!(ntp & 0xffff_ffff, 1 << 31);
        assert_eq!(ntp_middle(ntp), ((2_208_988_801u64 << 16) as u32) | 0x8000);
    }

    fn block() -> impl Strategy<Value = ReportBlock> {
        (
            any::<u32>(),
            any::<u8>(),
            -(1i32 << 23)..(1i32 << 23),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(ssrc, fraction_lost, cumulative_lost, ehs, jitter, last_sr, dlsr)| ReportBlock {
                    ssrc,
                    fraction_lost,
                    cumulative_lost,
                    extended_highest_sequence: ehs,
                    jitter,
                    last_sr,
                    delay_since_last_sr: dlsr,
                },
            )
    }

    fn words() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<[u8; 4]>(), 0..3).prop_map(|v| v.concat())
    }

    fn packet() -> impl Strategy<Value = RtcpPacket> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(block(), 0..4),
                words()
            )
                .prop_map(|(ssrc, ntp, rtp, pc, oc, reports, extension)| {
                    RtcpPacket::SenderReport(SenderReport {
                        ssrc,
                        ntp_timestamp: ntp,
                        rtp_timestamp: rtp,
                        packet_count: pc,
                        octet_count: oc,
                        reports,
                        extension,
                    })
                }),
            (any::<u32>(), proptest::collection::vec(block(), 0..4), words()).prop_map(
                |(ssrc, reports, extension)| RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc,
                    reports,
                    extension
                })
            ),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    proptest::collection::vec(
                        (1u8..=255, proptest::collection::vec(any::<u8>(), 0..20)),
                        0..4
                    )
                ),
                0..4
            )
            .prop_map(|chunks| RtcpPacket::SourceDescription(
                chunks
                    .into_iter()
                    .map(|(ssrc, items)| SdesChunk {
                        ssrc,
                        items: items
                            .into_iter()
                            .map(|(kind, text)| SdesItem { kind, text })
                            .collect()
                    })
                    .collect()
            )),
            (
                proptest::collection::vec(any::<u32>(), 0..5),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30))
            )
                .prop_map(|(ssrcs, reason)| RtcpPacket::Bye(Bye { ssrcs, reason })),
            (204u8..=255, 0u8..32, words()).prop_map(|(packet_type, count, body)| RtcpPacket::Other {
                packet_type,
                count,
                body
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(packets in proptest::collection::vec(packet(), 1..5)) {
            let compound = RtcpCompound { packets };
            let bytes = compound.to_bytes().unwrap();
            prop_assert_eq!(RtcpCompound::parse(&bytes).unwrap(), compound);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RtcpCompound::parse(&bytes);
        }

        #[test]
        fn mutated_valid_packets_never_panic(index in 0usize..200, value in any::<u8>()) {
            let mut bytes = sample().to_bytes().unwrap();
            let len = bytes.len();
            bytes[index % len] = value;
            let _ = RtcpCompound::parse(&bytes);
        }
    }

    #[test]
    fn report_intervals_spread_between_half_and_one_and_a_half_times_nominal() {
        let nominal = std::time::Duration::from_secs(5);
        assert_eq!(
            report_interval(nominal, 0.0),
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(report_interval(nominal, 0.5), nominal);
        assert_eq!(
            report_interval(nominal, 1.0),
            std::time::Duration::from_millis(7500)
        );
        assert_eq!(
            report_interval(nominal, 2.0),
            std::time::Duration::from_millis(7500)
        );
    }
}
