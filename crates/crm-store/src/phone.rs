//! Phone numbers normalised to E.164 (`+` and 8 to 15 digits), whatever the format they were typed or
//! signalled in: spaces, dashes, dots, parentheses, `00` or `+` international prefixes, a national trunk
//! `0`, or a `tel:` / `sip:` URI. Numbers without a country code get the configured default one.
//! Pure and total: every input either parses or is rejected with a reason.

use std::fmt;

/// Shortest and longest E.164 numbers accepted, counting the country code's digits.
const MIN_DIGITS: usize = 8;
const MAX_DIGITS: usize = 15;

/// A country calling code (1 for NANP, 44 for the UK, 86 for China, ...) used for national numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountryCode(u16);

impl CountryCode {
    /// North America (NANP), the default when nothing is configured.
    pub const NANP: CountryCode = CountryCode(1);

    /// A country code: 1 to 999.
    pub fn new(code: u16) -> Result<Self, PhoneError> {
        if (1..=999).contains(&code) {
            Ok(Self(code))
        } else {
            Err(PhoneError::BadCountryCode(code))
        }
    }

    /// The code as a number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for CountryCode {
    fn default() -> Self {
        Self::NANP
    }
}

/// Why a text is not a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the number is empty")]
    Empty,
    #[error("the number has a character that is not a digit or a separator")]
    BadCharacter,
    #[error("the number has {0} digits; E.164 numbers have 8 to 15")]
    BadLength(usize),
    #[error("country code {0} is not between 1 and 999")]
    BadCountryCode(u16),
}

/// A phone number in E.164 form. Personal data: `Debug` and `Display` mask all but the last two digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// The number with its `+`, for storage and dialling only (never for logs).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the string out; same rule as [`E164::as_str`].
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({self})")
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.chars().count();
        let masked: String = self
            .0
            .chars()
            .enumerate()
            .map(|(i, c)| if i + 2 < n && i > 0 { '*' } else { c })
            .collect();
        f.write_str(&masked)
    }
}

/// Normalises a number typed or signalled in any usual format to E.164, using `default_country` for
/// national numbers (those with neither `+` nor `00`).
pub fn normalize_phone(raw: &str, default_country: CountryCode) -> Result<E164, PhoneError> {
    let mut text = raw.trim();
    // A SIP or tel URI: keep the user part only.
    for scheme in ["sips:", "sip:", "tel:"] {
        if let Some(rest) = strip_prefix_ignore_case(text, scheme) {
            text = rest;
        }
    }
    if let Some(at) = text.find(['@', ';']) {
        text = text.get(..at).unwrap_or(text);
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(PhoneError::Empty);
    }

    let mut international = false;
    let mut digits = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => international = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err(PhoneError::BadCharacter),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }

    let full = if international {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix('0') {
        // National trunk prefix, as in 020 7946 0958 (UK) or 0755 1234 5678 (CN).
        format!("{}{rest}", default_country.get())
    } else if default_country == CountryCode::NANP && digits.len() == 11 && digits.starts_with('1') {
        // NANP numbers are often written with their leading 1 and no `+`.
        digits
    } else {
        format!("{}{digits}", default_country.get())
    };

    if full.starts_with('0') {
        return Err(PhoneError::BadCharacter);
    }
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&full.len()) {
        return Err(PhoneError::BadLength(full.len()));
    }
    Ok(E164(format!("+{full}")))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(raw: &str, cc: u16) -> Result<String, PhoneError> {
        normalize_phone(raw, CountryCode::new(cc).unwrap()).map(E164::into_string)
    }

    #[test]
    fn usual_formats_normalise_to_the_same_number() {
        for raw in [
            "+1 415 555 0100",
            "(415) 555-0100",
            "415.555.0100",
            "1-415-555-0100",
            "001 415 555 0100",
            "sip:+14155550100@carrier.example;user=phone",
            "tel:+1-415-555-0100",
        ] {
            assert_eq!(norm(raw, 1).as_deref(), Ok("+14155550100"), "{raw}");
        }
        assert_eq!(norm("020 7946 0958", 44).as_deref(), Ok("+442079460958"));
        assert_eq!(norm("0755 1234 5678", 86).as_deref(), Ok("+8675512345678"));
        assert_eq!(norm("+44 20 7946 0958", 1).as_deref(), Ok("+442079460958"));
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        assert_eq!(norm("", 1), Err(PhoneError::Empty));
        assert_eq!(norm("  sip:@host", 1), Err(PhoneError::Empty));
        assert_eq!(norm("call me", 1), Err(PhoneError::BadCharacter));
        assert_eq!(norm("12+34", 1), Err(PhoneError::BadCharacter));
        assert_eq!(norm("123", 1), Err(PhoneError::BadLength(4)));
        assert_eq!(norm("+1234567890123456", 1), Err(PhoneError::BadLength(16)));
        assert_eq!(CountryCode::new(0), Err(PhoneError::BadCountryCode(0)));
    }

    #[test]
    fn display_masks_the_number() {
        let n = normalize_phone("+14155550100", CountryCode::NANP).unwrap();
        assert_eq!(n.to_string(), "+*********00");
        assert!(!format!("{n:?}").contains("555"));
    }

    proptest! {
        #[test]
        fn never_panics_and_output_is_e164(raw in ".{0,40}", cc in 1u16..=999) {
            if let Ok(n) = normalize_phone(&raw, CountryCode::new(cc).unwrap()) {
                let s = n.as_str();
                prop_assert!(s.starts_with('+'));
                prop_assert!(s[1..].chars().all(|c| c.is_ascii_digit()));
                prop_assert!((MIN_DIGITS..=MAX_DIGITS).contains(&(s.len() - 1)));
            }
        }

        #[test]
        fn normalising_is_idempotent(raw in "[0-9 ()+.-]{0,24}", cc in 1u16..=999) {
            let cc = CountryCode::new(cc).unwrap();
            if let Ok(once) = normalize_phone(&raw, cc) {
                prop_assert_eq!(normalize_phone(once.as_str(), cc), Ok(once));
            }
        }

        #[test]
        fn separators_do_not_matter(digits in "[1-9][0-9]{9,12}", seps in proptest::collection::vec("[ .()-]", 0..6)) {
            let mut spaced = String::from("+");
            for (i, c) in digits.chars().enumerate() {
                spaced.push(c);
                if let Some(sep) = seps.get(i) { spaced.push_str(sep); }
            }
            prop_assert_eq!(
                normalize_phone(&spaced, CountryCode::NANP).map(E164::into_string),
                Ok(format!("+{digits}"))
            );
        }
    }
}
