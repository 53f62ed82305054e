//! Durations as script authors write them: `500ms`, `5s`, `2m`, `1m30s`, `1h`. Parsed once at load;
//! the interpreter only sees [`std::time::Duration`].

use std::time::Duration;

/// Longest duration a script may name; anything longer is almost surely a typo.
pub const MAX_SCRIPT_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write e.g. \"5s\", \"500ms\" or \"1m30s\"")]
    Empty,
    #[error("{0:?} is not a duration; write e.g. \"5s\", \"500ms\" or \"1m30s\"")]
    Malformed(String),
    #[error("duration {0:?} is longer than 24h")]
    TooLong(String),
    #[error("duration {0:?} is zero")]
    Zero(String),
}

/// Parses a positive duration made of `<integer><unit>` parts, units `h`, `m`, `s`, `ms`, largest first.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_string());
    let mut total_ms: u64 = 0;
    let mut rest = trimmed;
    // Each unit may appear once, in decreasing order, so "5s5s" or "1s1m" are rejected.
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 || digits_end > 9 {
            return Err(malformed());
        }
        let (digits, after) = rest.split_at(digits_end);
        let value: u64 = digits.parse().map_err(|_| malformed())?;
        let (unit_ms, rank, unit_len) = if after.starts_with("ms") {
            (1, 0, 2)
        } else if after.starts_with('s') {
            (1000, 1, 1)
        } else if after.starts_with('m') {
            (60_000, 2, 1)
        } else if after.starts_with('h') {
            (3_600_000, 3, 1)
        } else {
            return Err(malformed());
        };
        if rank >= last_rank {
            return Err(malformed());
        }
        last_rank = rank;
        total_ms = total_ms.saturating_add(value.saturating_mul(unit_ms));
        rest = after.get(unit_len..).unwrap_or("");
    }
    let duration = Duration::from_millis(total_ms);
    if duration > MAX_SCRIPT_DURATION {
        return Err(DurationError::TooLong(text.to_string()));
    }
    if duration.is_zero() {
        return Err(DurationError::Zero(text.to_string()));
    }
    Ok(duration)
}

/// Formats a duration the way [`parse_duration`] reads it, e.g. `1m30s`, `500ms`; used in messages.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, name) in [(3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")] {
        if ms >= unit {
            out.push_str(&format!("{}{name}", ms / unit));
            ms %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "5sec",
            "1s1m",
            "5s5s",
            "-1s",
            "1.5s",
            "99999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(parse_duration("0s"), Err(DurationError::Zero("0s".into())));
        assert_eq!(parse_duration("25h"), Err(DurationError::TooLong("25h".into())));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,12}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn format_then_parse_round_trips(ms in 1u64..86_400_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
