//! Header parameters read as RFC 3261 §25.1 writes them: `;` and `=` may have linear white space
//! around them, quoted strings may hold `;`, and names compare case-insensitively. The guard and the
//! response builder use this instead of looking for a literal `;tag=` (RFC 4475 §3.1.1.1 has
//! `; tag = 98asjd8`). Pure; never panics.

/// The header's parameters after its value (`name-addr` or `addr-spec`), names lower-cased.
/// A `name-addr`'s URI parameters inside `<...>` are not header parameters; an `addr-spec` without
/// `<>` has none of its own (RFC 3261 §20: its `;` parameters are header parameters).
pub fn header_params(value: &str) -> Vec<(String, Option<String>)> {
    let bytes = value.as_bytes();
    let mut i = 0;
    let mut in_quotes = false;
    // Skip the display name and the <...> part, honouring quotes.
    let mut start = None;
    let has_angle = {
        let mut q = false;
        let mut found = false;
        for (j, b) in bytes.iter().enumerate() {
            match b {
                b'\\' if q => {}
                b'"' if j == 0 || bytes[j - 1] != b'\\' => q = !q,
                b'<' if !q => {
                    found = true;
                    break;
                }
                _ => {}
            }
        }
        found
    };
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if has_angle && b == b'>' {
            start = Some(i + 1);
            break;
        } else if !has_angle && b == b';' {
            start = Some(i);
            break;
        }
        i += 1;
    }
    let Some(start) = start else { return Vec::new() };
    split_params(value.get(start..).unwrap_or_default())
}

/// Splits `;a=b ; c ; d = "x;y"` into its parameters.
pub fn split_params(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let push = |raw: &str, out: &mut Vec<(String, Option<String>)>| {
        let raw = raw.trim();
        if raw.is_empty() {
            return;
        }
        match raw.split_once('=') {
            Some((k, v)) => out.push((k.trim().to_ascii_lowercase(), Some(v.trim().to_string()))),
            None => out.push((raw.to_ascii_lowercase(), None)),
        }
    };
    for c in text.chars() {
        if escaped {
            escaped = false;
            current.push(c);
            continue;
        }
        match c {
            '\\' if in_quotes => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ';' if !in_quotes => {
                push(&current, &mut out);
                current.clear();
            }
            c => current.push(c),
        }
    }
    push(&current, &mut out);
    out
}

/// The value of the header parameter `name` (`tag`, `branch`, ...), if present.
pub fn param(value: &str, name: &str) -> Option<Option<String>> {
    header_params(value)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Whether the header carries a non-empty `tag` parameter.
pub fn has_tag(value: &str) -> bool {
    matches!(param(value, "tag"), Some(Some(v)) if !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tags_are_found_with_white_space_around_separators() {
        assert!(has_tag("<sip:a@b>;tag=1"));
        assert!(has_tag(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n    ;\r\n    tag = 98asjd8"
        ));
        assert!(has_tag("<sip:a@b> ; TAG = x"));
        assert!(has_tag("sip:a@b;tag=x"));
        assert!(!has_tag("<sip:a@b;tag=inside-the-uri>"));
        assert!(!has_tag("\"a;tag=x\" <sip:a@b>"));
        assert!(!has_tag("<sip:a@b>;tagx=1"));
        assert!(!has_tag("<sip:a@b>;tag="));
        assert_eq!(
            param("<sip:a@b>;expires = 60 ; q=0.5", "q"),
            Some(Some("0.5".into()))
        );
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,120}") {
            let _ = header_params(&text);
            let _ = has_tag(&text);
        }
    }
}
