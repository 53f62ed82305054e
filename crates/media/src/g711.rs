//! G.711 mu-law (PCMU) and A-law (PCMA): table-based encode, decode and direct law-to-law transcoding.
//!
//! Tables are computed at compile time from the reference segment algorithms (ITU-T G.711, as in the classic
//! Sun reference code), so a sample costs one table lookup. Encoding tables are indexed by the top 14 bits of
//! the 16-bit sample (mu-law's resolution; A-law uses only 13 of them).

/// RTP payload type of PCMU (RFC 3551).
pub const PT_PCMU: u8 = 0;
/// RTP payload type of PCMA (RFC 3551).
pub const PT_PCMA: u8 = 8;
/// Samples per second.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples (and bytes) in a 20 ms frame.
pub const SAMPLES_PER_FRAME: usize = 160;

/// The two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// Mu-law, North America and Japan, payload type 0.
    Pcmu,
    /// A-law, the rest of the world, payload type 8.
    Pcma,
}

impl G711 {
    /// The static RTP payload type.
    pub const fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => PT_PCMU,
            Self::Pcma => PT_PCMA,
        }
    }
    /// The law for a static payload type.
    pub const fn from_payload_type(pt: u8) -> Option<Self> {
        match pt {
            PT_PCMU => Some(Self::Pcmu),
            PT_PCMA => Some(Self::Pcma),
            _ => None,
        }
    }
    /// The byte that decodes to (near) zero: what silence sounds like in this law.
    pub const fn silence(self) -> u8 {
        match self {
            Self::Pcmu => 0xff,
            Self::Pcma => 0xd5,
        }
    }
    /// Encodes one sample.
    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Self::Pcmu => linear_to_ulaw(sample),
            Self::Pcma => linear_to_alaw(sample),
        }
    }
    /// Decodes one byte.
    #[inline]
    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Self::Pcmu => ulaw_to_linear(byte),
            Self::Pcma => alaw_to_linear(byte),
        }
    }
    /// Encodes a buffer of samples into `out` (as many as fit in both).
    pub fn encode_into(self, samples: &[i16], out: &mut [u8]) {
        for (o, s) in out.iter_mut().zip(samples) {
            *o = self.encode(*s);
        }
    }
    /// Decodes a buffer of bytes into `out` (as many as fit in both).
    pub fn decode_into(self, bytes: &[u8], out: &mut [i16]) {
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = self.decode(*b);
        }
    }
    /// Converts a payload from this law to `to` in place.
    pub fn transcode_in_place(self, to: G711, payload: &mut [u8]) {
        let table = match (self, to) {
            (Self::Pcmu, Self::Pcma) => &ULAW_TO_ALAW,
            (Self::Pcma, Self::Pcmu) => &ALAW_TO_ULAW,
            _ => return,
        };
        for byte in payload {
            *byte = table[usize::from(*byte)];
        }
    }
}

const fn segment(value: i32, ends: &[i32; 8]) -> usize {
    let mut i = 0;
    while i < 8 {
        if value <= ends[i] {
            return i;
        }
        i += 1;
    }
    8
}

const SEG_UEND: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const SEG_AEND: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

const fn ref_linear_to_ulaw(sample: i32) -> u8 {
    let mut pcm = sample >> 2;
    let mask;
    if pcm < 0 {
        pcm = -pcm;
        mask = 0x7f;
    } else {
        mask = 0xff;
    }
    if pcm > 8159 {
        pcm = 8159;
    }
    pcm += 0x84 >> 2;
    let seg = segment(pcm, &SEG_UEND);
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let uval = ((seg as i32) << 4) | ((pcm >> (seg + 1)) & 0xf);
    (uval ^ mask) as u8
}

const fn ref_ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte as i32;
    let mut t = ((u & 0x0f) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

const fn ref_linear_to_alaw(sample: i32) -> u8 {
    let mut pcm = sample >> 3;
    let mask;
    if pcm >= 0 {
        mask = 0xd5;
    } else {
        mask = 0x55;
        pcm = -pcm - 1;
    }
    let seg = segment(pcm, &SEG_AEND);
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let mut aval = (seg as i32) << 4;
    if seg < 2 {
        aval |= (pcm >> 1) & 0xf;
    } else {
        aval |= (pcm >> seg) & 0xf;
    }
    (aval ^ mask) as u8
}

const fn ref_alaw_to_linear(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let mut t = (a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Index of a sample in the 14-bit encoding tables.
#[inline]
const fn index14(sample: i16) -> usize {
    ((sample as u16) >> 2) as usize
}

const fn build_ulaw_encode() -> [u8; 16384] {
    let mut table = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        let sample = ((i as u16) << 2) as i16;
        table[i] = ref_linear_to_ulaw(sample as i32);
        i += 1;
    }
    table
}

const fn build_alaw_encode() -> [u8; 16384] {
    let mut table = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        let sample = ((i as u16) << 2) as i16;
        table[i] = ref_linear_to_alaw(sample as i32);
        i += 1;
    }
    table
}

const fn build_ulaw_decode() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ref_ulaw_to_linear(i as u8);
        i += 1;
    }
    table
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ref_alaw_to_linear(i as u8);
        i += 1;
    }
    table
}

const fn build_ulaw_to_alaw() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ref_linear_to_alaw(ref_ulaw_to_linear(i as u8) as i32);
        i += 1;
    }
    table
}

const fn build_alaw_to_ulaw() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ref_linear_to_ulaw(ref_alaw_to_linear(i as u8) as i32);
        i += 1;
    }
    table
}

static ULAW_ENCODE: [u8; 16384] = build_ulaw_encode();
static ALAW_ENCODE: [u8; 16384] = build_alaw_encode();
static ULAW_DECODE: [i16; 256] = build_ulaw_decode();
static ALAW_DECODE: [i16; 256] = build_alaw_decode();
static ULAW_TO_ALAW: [u8; 256] = build_ulaw_to_alaw();
static ALAW_TO_ULAW: [u8; 256] = build_alaw_to_ulaw();

/// Mu-law encode of one 16-bit sample.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    ULAW_ENCODE[index14(sample)]
}
/// A-law encode of one 16-bit sample.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    ALAW_ENCODE[index14(sample)]
}
/// Mu-law decode.
#[inline]
pub fn ulaw_to_linear(byte: u8) -> i16 {
    ULAW_DECODE[usize::from(byte)]
}
/// A-law decode.
#[inline]
pub fn alaw_to_linear(byte: u8) -> i16 {
    ALAW_DECODE[usize::from(byte)]
}
/// Direct mu-law to A-law.
#[inline]
pub fn ulaw_to_alaw(byte: u8) -> u8 {
    ULAW_TO_ALAW[usize::from(byte)]
}
/// Direct A-law to mu-law.
#[inline]
pub fn alaw_to_ulaw(byte: u8) -> u8 {
    ALAW_TO_ULAW[usize::from(byte)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xaa), 32256);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for byte in 0..=255u8 {
            let ulaw_back = linear_to_ulaw(ulaw_to_linear(byte));
            // 0x7f (negative zero) encodes back as 0xff (positive zero); the value is the same.
            assert_eq!(ulaw_to_linear(ulaw_back), ulaw_to_linear(byte));
            assert_eq!(linear_to_alaw(alaw_to_linear(byte)), byte);
        }
    }

    #[test]
    fn transcoding_tables_match_decode_then_encode() {
        for byte in 0..=255u8 {
            assert_eq!(ulaw_to_alaw(byte), linear_to_alaw(ulaw_to_linear(byte)));
            assert_eq!(alaw_to_ulaw(byte), linear_to_ulaw(alaw_to_linear(byte)));
        }
        let mut payload = [0xffu8, 0x80, 0x00];
        G711::Pcmu.transcode_in_place(G711::Pcma, &mut payload);
        assert_eq!(
            payload,
            [ulaw_to_alaw(0xff), ulaw_to_alaw(0x80), ulaw_to_alaw(0x00)]
        );
        G711::Pcma.transcode_in_place(G711::Pcma, &mut payload);
        assert_eq!(
            payload,
            [ulaw_to_alaw(0xff), ulaw_to_alaw(0x80), ulaw_to_alaw(0x00)]
        );
    }

    #[test]
    fn payload_types_and_silence() {
        for law in [G711::Pcmu, G711::Pcma] {
            assert_eq!(G711::from_payload_type(law.payload_type()), Some(law));
            assert!(law.decode(law.silence()).abs() <= 8);
        }
        assert_eq!(G711::from_payload_type(18), None);
    }

    proptest! {
        #[test]
        fn quantisation_error_is_bounded(sample in any::<i16>()) {
            // G.711 keeps roughly 12-13 bits of relative precision: error under 1/16 of the magnitude plus a step.
            for law in [G711::Pcmu, G711::Pcma] {
                let back = law.decode(law.encode(sample));
                let error = (i32::from(back) - i32::from(sample)).abs();
                prop_assert!(error <= i32::from(sample).abs() / 16 + 40, "{law:?} {sample} -> {back}");
                prop_assert!(i32::from(back).signum() * i32::from(sample).signum() >= 0);
            }
        }
    }
}
