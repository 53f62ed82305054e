//! DTMF digits, received and sent as RFC 4733 telephone-events ([`rfc4733`]) or detected in-band in the audio
//! ([`inband`]).
//!
//! A digit a caller presses is personal data once collected (card numbers, PINs): the engine hands digits to
//! its owner wrapped in `domain::Pii`, and nothing here logs them.

pub mod inband;
pub mod rfc4733;

/// One key of the 16-key DTMF pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfDigit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Pound,
    A,
    B,
    C,
    D,
}

/// Low-group (row) frequencies in Hz.
pub const ROW_HZ: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz.
pub const COL_HZ: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

const KEYPAD: [[DtmfDigit; 4]; 4] = [
    [DtmfDigit::D1, DtmfDigit::D2, DtmfDigit::D3, DtmfDigit::A],
    [DtmfDigit::D4, DtmfDigit::D5, DtmfDigit::D6, DtmfDigit::B],
    [DtmfDigit::D7, DtmfDigit::D8, DtmfDigit::D9, DtmfDigit::C],
    [DtmfDigit::Star, DtmfDigit::D0, DtmfDigit::Pound, DtmfDigit::D],
];

impl DtmfDigit {
    /// All sixteen digits, in RFC 4733 event-code order.
    pub const ALL: [DtmfDigit; 16] = [
        Self::D0,
        Self::D1,
        Self::D2,
        Self::D3,
        Self::D4,
        Self::D5,
        Self::D6,
        Self::D7,
        Self::D8,
        Self::D9,
        Self::Star,
        Self::Pound,
        Self::A,
        Self::B,
        Self::C,
        Self::D,
    ];

    /// The digit of an RFC 4733 event code (0-9, 10 `*`, 11 `#`, 12-15 A-D); other events are not digits.
    pub fn from_event(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The RFC 4733 event code.
    pub fn event(self) -> u8 {
        Self::ALL.iter().position(|d| *d == self).unwrap_or(0) as u8
    }

    /// The key's character.
    pub fn as_char(self) -> char {
        b"0123456789*#ABCD"
            .get(usize::from(self.event()))
            .map_or('?', |b| char::from(*b))
    }

    /// The digit of a key character (case-insensitive for A-D).
    pub fn from_char(c: char) -> Option<Self> {
        let position = "0123456789*#ABCD".find(c.to_ascii_uppercase())?;
        Self::ALL.get(position).copied()
    }

    /// The digit at a keypad row and column (0-3 each).
    pub fn from_keypad(row: usize, col: usize) -> Option<Self> {
        KEYPAD.get(row)?.get(col).copied()
    }

    /// Row and column of the key.
    pub fn keypad_position(self) -> (usize, usize) {
        for (r, row) in KEYPAD.iter().enumerate() {
            if let Some(c) = row.iter().position(|d| *d == self) {
                return (r, c);
            }
        }
        (0, 0)
    }

    /// The low and high tone frequencies in Hz.
    pub fn frequencies(self) -> (f64, f64) {
        let (r, c) = self.keypad_position();
        (ROW_HZ[r % 4], COL_HZ[c % 4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_chars_and_keypad_agree() {
        for (code, digit) in DtmfDigit::ALL.iter().enumerate() {
            assert_eq!(DtmfDigit::from_event(code as u8), Some(*digit));
            assert_eq!(digit.event(), code as u8);
            assert_eq!(DtmfDigit::from_char(digit.as_char()), Some(*digit));
            let (r, c) = digit.keypad_position();
            assert_eq!(DtmfDigit::from_keypad(r, c), Some(*digit));
        }
        assert_eq!(DtmfDigit::from_event(16), None);
        assert_eq!(DtmfDigit::from_char('x'), None);
        assert_eq!(DtmfDigit::from_char('b'), Some(DtmfDigit::B));
        assert_eq!(DtmfDigit::D5.frequencies(), (770.0, 1336.0));
        assert_eq!(DtmfDigit::Pound.frequencies(), (941.0, 1477.0));
    }
}
