//! RTP packets (RFC 3550 section 5): a borrowed view parsed from bytes, and serialisation back.
//!
//! [`RtpPacket::parse`] checks everything the header promises (version, CSRC count, extension length, padding)
//! so that code holding an `RtpPacket` never re-checks and never indexes out of range. The relay hot path uses
//! [`rewrite_header`] to patch sequence, timestamp and SSRC in place without copying the payload.

use thiserror::Error;

/// The only RTP version in use.
pub const RTP_VERSION: u8 = 2;
/// Size of the fixed header.
pub const FIXED_HEADER_LEN: usize = 12;
/// At most 15 contributing sources fit the 4-bit CSRC count.
pub const MAX_CSRCS: usize = 15;

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    #[error("packet of {len} bytes is shorter than the {needed} bytes its header needs")]
    TooShort { len: usize, needed: usize },
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    #[error("padding length {padding} does not fit a payload of {available} bytes")]
    BadPadding { padding: u8, available: usize },
    #[error("output buffer of {len} bytes is too small for {needed} bytes")]
    BufferTooSmall { len: usize, needed: usize },
    #[error("header extension of {len} bytes is not a multiple of 4 or is over 262140 bytes")]
    BadExtensionLength { len: usize },
    #[error("{count} CSRCs do not fit the 4-bit count")]
    TooManyCsrcs { count: usize },
}

/// A header extension (RFC 3550 5.3.1): a 16-bit profile value and data whose length is a multiple of 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    pub profile: u16,
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    csrcs: [u32; MAX_CSRCS],
    csrc_count: u8,
    pub extension: Option<RtpExtension<'a>>,
    pub payload: &'a [u8],
    /// Number of padding bytes (including the final count byte); 0 means no padding.
    pub padding: u8,
}

fn be_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl<'a> RtpPacket<'a> {
    /// A packet with no CSRC, extension or padding.
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32, payload: &'a [u8]) -> Self {
        Self {
            marker: false,
            payload_type: payload_type & 0x7f,
            sequence,
            timestamp,
            ssrc,
            csrcs: [0; MAX_CSRCS],
            csrc_count: 0,
            extension: None,
            payload,
            padding: 0,
        }
    }

    /// Sets the marker bit.
    pub fn with_marker(mut self, marker: bool) -> Self {
        self.marker = marker;
        self
    }

    /// Sets the contributing sources; fails if there are more than 15.
    pub fn with_csrcs(mut self, csrcs: &[u32]) -> Result<Self, RtpError> {
        if csrcs.len() > MAX_CSRCS {
            return Err(RtpError::TooManyCsrcs { count: csrcs.len() });
        }
        self.csrcs = [0; MAX_CSRCS];
        for (slot, value) in self.csrcs.iter_mut().zip(csrcs) {
            *slot = *value;
        }
        self.csrc_count = csrcs.len() as u8; // at most 15, checked above
        Ok(self)
    }

    /// The contributing sources.
    pub fn csrcs(&self) -> &[u32] {
        self.csrcs.get(..usize::from(self.csrc_count)).unwrap_or(&[])
    }

    /// Parses one datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let first = *buf.first().ok_or(RtpError::TooShort {
            len: 0,
            needed: FIXED_HEADER_LEN,
        })?;
        if buf.len() < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort {
                len: buf.len(),
                needed: FIXED_HEADER_LEN,
            });
        }
        let version = first >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = first & 0x20 != 0;
        let has_extension = first & 0x10 != 0;
        let csrc_count = first & 0x0f;
        let second = buf[1]; // length checked above
        let too_short = |needed: usize| RtpError::TooShort {
            len: buf.len(),
            needed,
        };
        let sequence = be_u16(buf, 2).ok_or(too_short(FIXED_HEADER_LEN))?;
        let timestamp = be_u32(buf, 4).ok_or(too_short(FIXED_HEADER_LEN))?;
        let ssrc = be_u32(buf, 8).ok_or(too_short(FIXED_HEADER_LEN))?;

        let mut offset = FIXED_HEADER_LEN;
        let mut csrcs = [0u32; MAX_CSRCS];
        for slot in csrcs.iter_mut().take(usize::from(csrc_count)) {
            *slot = be_u32(buf, offset).ok_or(too_short(offset + 4))?;
            offset += 4;
        }

        let extension = if has_extension {
            let profile = be_u16(buf, offset).ok_or(too_short(offset + 4))?;
            let words = be_u16(buf, offset + 2).ok_or(too_short(offset + 4))?;
            let start = offset + 4;
            let end = start + usize::from(words) * 4;
            let data = buf.get(start..end).ok_or(too_short(end))?;
            offset = end;
            Some(RtpExtension { profile, data })
        } else {
            None
        };

        let rest = buf.get(offset..).unwrap_or(&[]);
        let (payload, padding) = if has_padding {
            let padding = *rest.last().ok_or(RtpError::BadPadding {
                padding: 0,
                available: 0,
            })?;
            if padding == 0 || usize::from(padding) > rest.len() {
                return Err(RtpError::BadPadding {
                    padding,
                    available: rest.len(),
                });
            }
            (
                rest.get(..rest.len() - usize::from(padding)).unwrap_or(&[]),
                padding,
            )
        } else {
            (rest, 0)
        };

        Ok(Self {
            marker: second & 0x80 != 0,
            payload_type: second & 0x7f,
            sequence,
            timestamp,
            ssrc,
            csrcs,
            csrc_count,
            extension,
            payload,
            padding,
        })
    }

    /// Length of the serialised packet.
    pub fn serialized_len(&self) -> usize {
        FIXED_HEADER_LEN
            + 4 * usize::from(self.csrc_count)
            + self.extension.map_or(0, |e| 4 + e.data.len())
            + self.payload.len()
            + usize::from(self.padding)
    }

    /// Writes the packet into `out`, returning the number of bytes written.
    pub fn write_to(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        let needed = self.serialized_len();
        if out.len() < needed {
            return Err(RtpError::BufferTooSmall {
                len: out.len(),
                needed,
            });
        }
        if let Some(ext) = self.extension
            && (ext.data.len() % 4 != 0 || ext.data.len() / 4 > usize::from(u16::MAX))
        {
            return Err(RtpError::BadExtensionLength { len: ext.data.len() });
        }
        let out = &mut out[..needed]; // length checked above
        out[0] = (RTP_VERSION << 6)
            | if self.padding > 0 { 0x20 } else { 0 }
            | if self.extension.is_some() { 0x10 } else { 0 }
            | self.csrc_count;
        out[1] = if self.marker { 0x80 } else { 0 } | (self.payload_type & 0x7f);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut offset = FIXED_HEADER_LEN;
        for csrc in self.csrcs() {
            out[offset..offset + 4].copy_from_slice(&csrc.to_be_bytes());
            offset += 4;
        }
        if let Some(ext) = self.extension {
            out[offset..offset + 2].copy_from_slice(&ext.profile.to_be_bytes());
            let words = (ext.data.len() / 4) as u16; // range checked above
            out[offset + 2..offset + 4].copy_from_slice(&words.to_be_bytes());
            offset += 4;
            out[offset..offset + ext.data.len()].copy_from_slice(ext.data);
            offset += ext.data.len();
        }
        out[offset..offset + self.payload.len()].copy_from_slice(self.payload);
        offset += self.payload.len();
        if self.padding > 0 {
            let end = offset + usize::from(self.padding);
            out[offset..end].fill(0);
            out[end - 1] = self.padding;
            offset = end;
        }
        Ok(offset)
    }

    /// Serialises into a new vector (for tests and cold paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.serialized_len()];
        match self.write_to(&mut out) {
            Ok(len) => out.truncate(len),
            Err(_) => out.clear(),
        }
        out
    }
}

/// Offset of the payload in a datagram that [`RtpPacket::parse`] accepted, or `None` if it is not one.
pub fn payload_offset(buf: &[u8]) -> Option<usize> {
    let packet = RtpPacket::parse(buf).ok()?;
    Some(packet.payload.as_ptr() as usize - buf.as_ptr() as usize)
}

/// Rewrites payload type, sequence number, timestamp and SSRC in a datagram in place (relay hot path).
/// Fails only if the buffer is shorter than the fixed header.
pub fn rewrite_header(
    buf: &mut [u8],
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) -> Result<(), RtpError> {
    let header = buf.get_mut(..FIXED_HEADER_LEN).ok_or(RtpError::TooShort {
        len: 0,
        needed: FIXED_HEADER_LEN,
    })?;
    header[1] = (header[1] & 0x80) | (payload_type & 0x7f);
    header[2..4].copy_from_slice(&sequence.to_be_bytes());
    header[4..8].copy_from_slice(&timestamp.to_be_bytes());
    header[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_minimal_pcmu_packet() {
        let mut bytes = vec![0x80, 0x80, 0x12, 0x34, 0, 0, 0x01, 0x40, 0xde, 0xad, 0xbe, 0xef];
        bytes.extend_from_slice(&[0xff; 160]);
        let packet = RtpPacket::parse(&bytes).unwrap();
        assert!(packet.marker);
        assert_eq!(packet.payload_type, 0);
        assert_eq!(packet.sequence, 0x1234);
        assert_eq!(packet.timestamp, 320);
        assert_eq!(packet.ssrc, 0xdead_beef);
        assert_eq!(packet.payload.len(), 160);
        assert_eq!(packet.to_vec(), bytes);
    }

    #[test]
    fn parses_csrc_extension_and_padding() {
        let payload = [1u8, 2, 3];
        let ext_data = [9u8; 8];
        let packet = RtpPacket::new(8, 7, 99, 5, &payload)
            .with_csrcs(&[10, 20])
            .unwrap();
        let packet = RtpPacket {
            extension: Some(RtpExtension {
                profile: 0xbede,
                data: &ext_data,
            }),
            padding: 5,
            ..packet
        };
        let bytes = packet.to_vec();
        assert_eq!(bytes.len(), 12 + 8 + 4 + 8 + 3 + 5);
        let back = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(back, packet);
        assert_eq!(back.csrcs(), &[10, 20]);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            RtpPacket::parse(&[]),
            Err(RtpError::TooShort { len: 0, needed: 12 })
        );
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        // CSRC count 2 but no room.
        assert!(matches!(
            RtpPacket::parse(&[0x82, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::TooShort { .. })
        ));
        // Padding byte 0.
        let mut bytes = vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(
            RtpPacket::parse(&bytes),
            Err(RtpError::BadPadding { .. })
        ));
        // Padding longer than the rest.
        *bytes.last_mut().unwrap() = 3;
        assert!(matches!(
            RtpPacket::parse(&bytes),
            Err(RtpError::BadPadding { .. })
        ));
        assert!(RtpPacket::new(0, 0, 0, 0, &[]).with_csrcs(&[0; 16]).is_err());
    }

    #[test]
    fn rewrite_header_keeps_marker_and_payload() {
        let payload = [5u8; 4];
        let mut bytes = RtpPacket {
            marker: true,
            ..RtpPacket::new(0, 1, 2, 3, &payload)
        }
        .to_vec();
        rewrite_header(&mut bytes, 8, 100, 200, 300).unwrap();
        let packet = RtpPacket::parse(&bytes).unwrap();
        assert!(packet.marker);
        assert_eq!(
            (
                packet.payload_type,
                packet.sequence,
                packet.timestamp,
                packet.ssrc
            ),
            (8, 100, 200, 300)
        );
        assert_eq!(packet.payload, &payload);
        assert_eq!(payload_offset(&bytes), Some(12));
        assert!(rewrite_header(&mut [0u8; 11], 0, 0, 0, 0).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(packet) = RtpPacket::parse(&bytes) {
                // Whatever parses serialises to bytes that parse to the same packet (padding is re-zeroed).
                let again = packet.to_vec();
                prop_assert_eq!(RtpPacket::parse(&again).unwrap(), packet);
            }
        }

        #[test]
        fn round_trip(
            marker in any::<bool>(),
            payload_type in 0u8..128,
            sequence in any::<u16>(),
            timestamp in any::<u32>(),
            ssrc in any::<u32>(),
            csrcs in proptest::collection::vec(any::<u32>(), 0..=15),
            ext in proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..5usize).prop_map(|v| v.repeat(4)))),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            padding in 0u8..=255,
        ) {
            let base = RtpPacket::new(payload_type, sequence, timestamp, ssrc, &payload).with_csrcs(&csrcs).unwrap();
            let packet = RtpPacket {
                marker,
                extension: ext.as_ref().map(|(profile, data)| RtpExtension { profile: *profile, data }),
                padding,
                ..base
            };
            let bytes = packet.to_vec();
            prop_assert_eq!(bytes.len(), packet.serialized_len());
            prop_assert_eq!(RtpPacket::parse(&bytes).unwrap(), packet);
        }
    }
}
