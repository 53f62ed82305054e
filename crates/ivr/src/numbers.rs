//! Numbers read aloud as numbers, in the caller's language: the prompt names that say `n`.
//!
//! Why: a balance of 10000 read digit by digit ("one zero zero zero zero") is not how anyone says
//! it. English groups by thousands ("ten thousand", "two million three hundred five"); Chinese
//! groups by ten-thousands (万, 亿), says 零 once for a gap, drops the leading 一 of 十 (十二, not
//! 一十二) and says 两 before a unit or when counting (两千, 两分钟) but 二 in an ordinal (第二位).
//!
//! Prompts: English uses `num-0`..`num-20`, the tens `num-30`..`num-90`, `num-hundred`,
//! `num-thousand`, `num-million`, `num-billion`; Chinese (`prompts/zh-CN/`) uses `num-0`..`num-10`,
//! `num-hundred` 百, `num-thousand` 千, `num-ten-thousand` 万, `num-hundred-million` 亿 and
//! `num-liang` 两. Numbers beyond the largest unit are read digit by digit.

/// How a number is used, which changes a word in some languages (Chinese 两 or 二).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberUse {
    /// A quantity: "two minutes", 两分钟.
    Count,
    /// A place in order: "number two", 第二位.
    Ordinal,
}

/// True for the languages read the Chinese way (`zh`, `zh-CN`, `cmn`, ...).
pub fn is_chinese(language: &str) -> bool {
    let l = language.to_ascii_lowercase();
    l == "zh" || l.starts_with("zh-") || l.starts_with("zh_") || l == "cmn"
}

/// The prompts that read `n` in `language` (English for every language not read otherwise).
pub fn say_number_in(n: u64, language: &str, usage: NumberUse) -> Vec<String> {
    if is_chinese(language) {
        chinese(n, usage)
    } else {
        english(n)
    }
}

fn name(s: impl std::fmt::Display) -> String {
    format!("num-{s}")
}

fn digits(n: u64) -> Vec<String> {
    n.to_string().chars().map(name).collect()
}

/// English, in words: "one hundred five", "ten thousand", "two million three hundred thousand".
pub fn english(n: u64) -> Vec<String> {
    fn below_thousand(n: u64, out: &mut Vec<String>) {
        if n >= 100 {
            out.push(name(n / 100));
            out.push(name("hundred"));
        }
        let rest = n % 100;
        if rest == 0 {
            return;
        }
        if rest <= 20 {
            out.push(name(rest));
        } else {
            out.push(name(rest / 10 * 10));
            if !rest.is_multiple_of(10) {
                out.push(name(rest % 10));
            }
        }
    }
    if n == 0 {
        return vec![name(0)];
    }
    if n >= 1_000_000_000_000 {
        return digits(n);
    }
    let mut out = Vec::new();
    for (unit, size) in [
        ("billion", 1_000_000_000),
        ("million", 1_000_000),
        ("thousand", 1_000),
    ] {
        let group = n / size % 1000;
        if group > 0 {
            below_thousand(group, &mut out);
            out.push(name(unit));
        }
    }
    below_thousand(n % 1000, &mut out);
    out
}

/// Chinese: 一万零五, 十二, 两千三百, 三亿零二十万.
pub fn chinese(n: u64, usage: NumberUse) -> Vec<String> {
    if n == 0 {
        return vec![name(0)];
    }
    if n >= 1_000_000_000_000 {
        return digits(n);
    }
    if n == 2 {
        return vec![match usage {
            NumberUse::Count => name("liang"),
            NumberUse::Ordinal => name(2),
        }];
    }
    // Groups of four digits: 亿, 万, ones.
    let groups = [
        (n / 100_000_000, Some("hundred-million")),
        (n / 10_000 % 10_000, Some("ten-thousand")),
        (n % 10_000, None),
    ];
    let mut out: Vec<String> = Vec::new();
    let mut zero_pending = false;
    for (group, unit) in groups {
        if group == 0 {
            if !out.is_empty() {
                zero_pending = true;
            }
            continue;
        }
        if !out.is_empty() && group < 1000 {
            zero_pending = true;
        }
        let leading = out.is_empty();
        if zero_pending {
            out.push(name(0));
            zero_pending = false;
        }
        within_group(group, leading, unit.is_some(), &mut out);
        if let Some(unit) = unit {
            out.push(name(unit));
        }
    }
    out
}

/// One group of up to four digits (千 百 十 个), with 零 once for a gap inside it.
fn within_group(group: u64, leading: bool, before_unit: bool, out: &mut Vec<String>) {
    let places = [
        (group / 1000, Some("thousand")),
        (group / 100 % 10, Some("hundred")),
        (group / 10 % 10, Some("10")),
        (group % 10, None),
    ];
    let mut started = false;
    let mut gap = false;
    for (i, (digit, unit)) in places.into_iter().enumerate() {
        if digit == 0 {
            if started {
                gap = true;
            }
            continue;
        }
        if gap {
            out.push(name(0));
            gap = false;
        }
        let is_ten = unit == Some("10");
        // 十二, not 一十二, at the start of the number.
        let skip_one = is_ten && digit == 1 && !started && leading;
        if !skip_one {
            // 两 leads a number before a unit: 两千, 两万, 两亿 (inside one, 二: 一万二千).
            let first = !started && leading && digit == 2;
            let liang = first && (unit == Some("thousand") || (i == 3 && before_unit));
            out.push(if liang { name("liang") } else { name(digit) });
        }
        if let Some(unit) = unit {
            out.push(name(unit));
        }
        started = true;
    }
}

/// Every prompt name a reading may use, by language (for checking that a prompt set is complete).
pub fn prompt_names(language: &str) -> Vec<String> {
    if is_chinese(language) {
        let mut names: Vec<String> = (0..=10).map(name).collect();
        names.extend(["hundred", "thousand", "ten-thousand", "hundred-million", "liang"].map(name));
        names
    } else {
        let mut names: Vec<String> = (0..=20).map(name).collect();
        names.extend((3..=9).map(|t| name(t * 10)));
        names.extend(["hundred", "thousand", "million", "billion"].map(name));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(names: Vec<String>) -> String {
        names
            .iter()
            .map(|n| n.trim_start_matches("num-"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn english_reads_numbers_as_numbers() {
        assert_eq!(words(english(0)), "0");
        assert_eq!(words(english(17)), "17");
        assert_eq!(words(english(42)), "40 2");
        assert_eq!(words(english(105)), "1 hundred 5");
        assert_eq!(words(english(10_000)), "10 thousand");
        assert_eq!(words(english(2024)), "2 thousand 20 4");
        assert_eq!(
            words(english(2_300_405)),
            "2 million 3 hundred thousand 4 hundred 5"
        );
        assert_eq!(words(english(1_000_000_000_000)), "1 0 0 0 0 0 0 0 0 0 0 0 0");
    }

    #[test]
    fn chinese_reads_numbers_the_chinese_way() {
        let zh = |n| words(chinese(n, NumberUse::Count));
        assert_eq!(zh(0), "0");
        assert_eq!(zh(2), "liang");
        assert_eq!(words(chinese(2, NumberUse::Ordinal)), "2");
        assert_eq!(zh(10), "10");
        assert_eq!(zh(12), "10 2");
        assert_eq!(zh(20), "2 10");
        assert_eq!(zh(105), "1 hundred 0 5");
        assert_eq!(zh(110), "1 hundred 1 10");
        assert_eq!(zh(2000), "liang thousand");
        assert_eq!(zh(1005), "1 thousand 0 5");
        assert_eq!(zh(10_000), "1 ten-thousand");
        assert_eq!(zh(10_005), "1 ten-thousand 0 5");
        assert_eq!(zh(100_000), "10 ten-thousand");
        assert_eq!(zh(20_000), "liang ten-thousand");
        assert_eq!(zh(300_200_000), "3 hundred-million 0 2 10 ten-thousand");
        assert_eq!(zh(12_345), "1 ten-thousand 2 thousand 3 hundred 4 10 5");
        assert_eq!(zh(200_000_000), "liang hundred-million");
    }

    #[test]
    fn the_language_picks_the_reading() {
        assert_eq!(say_number_in(12, "zh-CN", NumberUse::Count), ["num-10", "num-2"]);
        assert_eq!(say_number_in(12, "en", NumberUse::Count), ["num-12"]);
        assert!(is_chinese("zh") && is_chinese("ZH-cn") && !is_chinese("en"));
    }

    proptest! {
        #[test]
        fn every_reading_uses_only_its_languages_prompts(n in any::<u64>(), zh in any::<bool>(), ordinal in any::<bool>()) {
            let language = if zh { "zh-CN" } else { "en" };
            let usage = if ordinal { NumberUse::Ordinal } else { NumberUse::Count };
            let known = prompt_names(language);
            let said = say_number_in(n, language, usage);
            prop_assert!(!said.is_empty());
            for name in said {
                prop_assert!(known.contains(&name), "{n} in {language}: {name}");
            }
        }
    }
}
