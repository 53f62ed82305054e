//! Business hours and holiday calendars, evaluated in a flow's time zone. The interpreter hands in
//! `now` as a [`domain::Timestamp`]; this module converts it, so no clock is ever read.

use domain::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use std::collections::BTreeSet;

/// Opening hours of a flow: open on `days` during any of `hours`, closed on `holidays`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub days: Vec<Weekday>,
    /// Half-open ranges `[open, close)` of local time.
    pub hours: Vec<(Time, Time)>,
    pub holidays: BTreeSet<Date>,
}

/// Local calendar facts of one instant in one time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub date: Date,
    pub weekday: Weekday,
    pub time: Time,
}

impl LocalTime {
    /// Converts `now` into `zone`. An instant outside jiff's range (years beyond ±9999) is clamped to the epoch.
    pub fn of(now: Timestamp, zone: &TimeZone) -> Self {
        let instant =
            jiff::Timestamp::from_millisecond(now.as_millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let civil = zone.to_datetime(instant);
        Self {
            date: civil.date(),
            weekday: civil.weekday(),
            time: civil.time(),
        }
    }
}

impl Schedule {
    /// Whether the schedule is open at this local time.
    pub fn is_open(&self, local: LocalTime) -> bool {
        !self.is_holiday(local)
            && self.days.contains(&local.weekday)
            && self
                .hours
                .iter()
                .any(|(open, close)| *open <= local.time && local.time < *close)
    }
    /// Whether the local date is a holiday.
    pub fn is_holiday(&self, local: LocalTime) -> bool {
        self.holidays.contains(&local.date)
    }
}

/// Parses a weekday name: `mon`..`sun` or the full English name, any case.
pub fn parse_weekday(text: &str) -> Result<Weekday, String> {
    let lower = text.trim().to_ascii_lowercase();
    let day = match lower.get(..3).unwrap_or("") {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => {
            return Err(format!(
                "{text:?} is not a weekday; write mon, tue, wed, thu, fri, sat or sun"
            ));
        }
    };
    let full = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    if lower.len() == 3 || full.contains(&lower.as_str()) {
        Ok(day)
    } else {
        Err(format!(
            "{text:?} is not a weekday; write mon, tue, wed, thu, fri, sat or sun"
        ))
    }
}

/// Parses a local time of day `HH:MM` (24-hour). `24:00` means the end of the day.
pub fn parse_time_of_day(text: &str) -> Result<Time, String> {
    let bad = || format!("{text:?} is not a time of day; write HH:MM, e.g. \"08:30\"");
    let (hours, minutes) = text.trim().split_once(':').ok_or_else(bad)?;
    if hours.len() != 2
        || minutes.len() != 2
        || !hours.chars().chain(minutes.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let h: i8 = hours.parse().map_err(|_| bad())?;
    let m: i8 = minutes.parse().map_err(|_| bad())?;
    if (h, m) == (24, 0) {
        return Ok(Time::MAX);
    }
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// Parses `HH:MM-HH:MM` into a non-empty range.
pub fn parse_hours(text: &str) -> Result<(Time, Time), String> {
    let (open, close) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range of hours; write e.g. \"08:00-20:00\""))?;
    let (open, close) = (parse_time_of_day(open)?, parse_time_of_day(close)?);
    if open >= close {
        return Err(format!("{text:?} closes before it opens"));
    }
    Ok((open, close))
}

/// Parses a date `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<Date, String> {
    text.trim()
        .parse::<Date>()
        .map_err(|_| format!("{text:?} is not a date; write YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn business() -> Schedule {
        Schedule {
            days: vec![
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ],
            hours: vec![parse_hours("08:00-20:00").unwrap()],
            holidays: [parse_date("2026-12-25").unwrap()].into_iter().collect(),
        }
    }

    #[test]
    fn converts_to_the_flow_time_zone() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-11-23 06:30 UTC is 07:30 in Berlin (CET, UTC+1): a Monday, before opening.
        let now = Timestamp::from_millis(1_795_415_400_000);
        let local = LocalTime::of(now, &berlin);
        assert_eq!(local.weekday, Weekday::Monday);
        assert_eq!(local.time, Time::new(7, 30, 0, 0).unwrap());
        assert!(!business().is_open(local));
        let later = LocalTime::of(now + std::time::Duration::from_secs(3600), &berlin);
        assert!(business().is_open(later));
    }

    #[test]
    fn follows_daylight_saving_time() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-07-06 06:30 UTC is 08:30 in Berlin (CEST, UTC+2): a Monday, open.
        let summer = LocalTime::of(Timestamp::from_secs(1_783_319_400), &berlin);
        assert_eq!(summer.weekday, Weekday::Monday);
        assert_eq!(summer.time, Time::new(8, 30, 0, 0).unwrap());
        assert!(business().is_open(summer));
    }

    #[test]
    fn holidays_and_weekends_are_closed() {
        let utc = TimeZone::UTC;
        // 2026-12-25 12:00 UTC, a Friday and a holiday.
        let christmas = LocalTime::of(Timestamp::from_secs(1_798_200_000), &utc);
        assert_eq!(christmas.weekday, Weekday::Friday);
        assert!(business().is_holiday(christmas));
        assert!(!business().is_open(christmas));
        // 2026-11-22 12:00 UTC, a Sunday.
        let sunday = LocalTime::of(Timestamp::from_secs(1_795_348_800), &utc);
        assert_eq!(sunday.weekday, Weekday::Sunday);
        assert!(!business().is_open(sunday));
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_weekday("Fri"), Ok(Weekday::Friday));
        assert_eq!(parse_weekday("saturday"), Ok(Weekday::Saturday));
        assert!(parse_weekday("fr").is_err());
        assert!(parse_weekday("frizzle").is_err());
        assert!(parse_time_of_day("8:00").is_err());
        assert!(parse_time_of_day("25:00").is_err());
        assert!(parse_hours("20:00-08:00").is_err());
        assert!(parse_hours("08:00-24:00").is_ok());
        assert!(parse_date("2026-02-30").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,16}") {
            let _ = parse_weekday(&text);
            let _ = parse_time_of_day(&text);
            let _ = parse_hours(&text);
            let _ = parse_date(&text);
        }

        #[test]
        fn any_instant_converts(ms in any::<i64>()) {
            let _ = LocalTime::of(Timestamp::from_millis(ms), &TimeZone::UTC);
        }
    }
}
