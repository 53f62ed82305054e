//! Header parameters read as RFC 3261 §25.1 writes them: `;` and `=` may have linear white space
//! around them, quoted strings may hold `;`, and names compare case-insensitively. The guard and the
//! response builder use this instead of looking for a literal `;tag=` (RFC 4475 §3.1.1.1 has
//! `; tag = 98asjd8`). Pure; never panics.

/// The header's parameters after its value (`name-addr` or `addr-spec`), names lower-cased.
/// A `name-addr`'s URI parameters inside `<...>` are not header parameters; an `addr-spec` without
/// `<>` has none of its own (RFC 3261 §20: its `;` parameters are header parameters).
pub fn header_params(value: &str) -> Vec<(String, Option<String>)> {
    let Some(start) = params_start(value) else {
        return Vec::new();
    };
    split_params(value.get(start..).unwrap_or_default())
}

/// Where the header parameters of `value` start: after the `>` that closes a name-addr's URI (not
/// one inside a quoted display name or parameter value), else at an addr-spec's first `;`.
fn params_start(value: &str) -> Option<usize> {
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
    start
}

/// The value with its header parameters written `;name=value` (no white space around `;` and `=`);
/// `None` when it already is (or has no parameters).
pub fn normalize_params(value: &str) -> Option<String> {
    let params = header_params(value);
    if params.is_empty() {
        return None;
    }
    // Where the parameters start, found as `header_params` finds them (a '>' or ';' inside quotes,
    // e.g. `+sip.instance="<urn:uuid:1>"`, is not the start).
    let start = params_start(value)?;
    let mut out = value[..start].trim_end().to_string();
    for (name, v) in &params {
        out.push(';');
        out.push_str(name);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    (out != value).then_some(out)
}

/// Undoes the SIP stack's second escaping of a URI's user part when it renders a header it parsed
/// (`%75` on the wire comes out as `%2575`): the user part of a SIP URI on the wire holds no bare `%`,
/// so every `%25` there was added by the rendering.
pub fn restore_user_escapes(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    let Some(scheme) = lower.find("sip:").or_else(|| lower.find("sips:")) else {
        return value.to_string();
    };
    let user_start = scheme
        + if lower[scheme..].starts_with("sips:") {
            5
        } else {
            4
        };
    let rest = &value[user_start..];
    let end = rest.find(['>', ';', ' ']).unwrap_or(rest.len());
    let Some(at) = rest[..end].find('@') else {
        return value.to_string();
    };
    let user = rest[..at].replace("%25", "%");
    format!("{}{}{}", &value[..user_start], user, &rest[at..])
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

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// Splits a header value on commas outside quotes and `<>` (Contact lists several addresses).
fn split_addresses(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' if !in_angle => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// Checks a From, To or Contact value (`list`: several comma-separated addresses, or `*`) against the
/// `name-addr / addr-spec *(SEMI param)` grammar; the error names what is wrong.
pub fn check_addresses(value: &str, list: bool) -> Result<(), &'static str> {
    if list && value.trim() == "*" {
        return Ok(());
    }
    let parts = if list { split_addresses(value) } else { vec![value] };
    for part in parts {
        check_address(part.trim())?;
    }
    Ok(())
}

fn check_address(value: &str) -> Result<(), &'static str> {
    let rest;
    if value.starts_with('"') || value.contains('<') {
        // name-addr: [ display-name ] "<" addr-spec ">"
        let mut chars = value.char_indices().peekable();
        let mut display_end = 0;
        if value.starts_with('"') {
            chars.next();
            let mut closed = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        closed = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            display_end = closed.ok_or("unterminated quoted string")?;
        }
        let after = &value[display_end..];
        let open = after.find('<').ok_or("missing <")?;
        let display = after[..open].trim();
        if display_end == 0 && !display.split_whitespace().all(|w| w.chars().all(is_token_char)) {
            return Err("display name is neither tokens nor a quoted string");
        }
        if display_end > 0 && !display.is_empty() {
            return Err("text after the quoted display name");
        }
        let close = after[open..].find('>').ok_or("missing >")? + open;
        let uri = &after[open + 1..close];
        if uri.is_empty() || uri.chars().any(char::is_whitespace) {
            return Err("white space inside <>");
        }
        rest = &after[close + 1..];
    } else {
        // addr-spec: a URI with ',', '?' or ';' of its own must be enclosed in <> (RFC 3261 §20.10);
        // here ';' starts the header's parameters.
        let end = value.find(';').unwrap_or(value.len());
        let uri = value[..end].trim();
        if uri.is_empty() || uri.chars().any(char::is_whitespace) {
            return Err("white space inside the address");
        }
        if uri.contains('?') {
            return Err("a URI with headers must be enclosed in <>");
        }
        rest = &value[end..];
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Ok(());
    }
    let Some(params) = rest.strip_prefix(';') else {
        return Err("text after the address");
    };
    // Every `;` starts a parameter with a token name.
    let mut text = String::from(";");
    text.push_str(params);
    let raw_count = {
        let mut n = 0;
        let mut in_quotes = false;
        for c in text.chars() {
            match c {
                '"' => in_quotes = !in_quotes,
                ';' if !in_quotes => n += 1,
                _ => {}
            }
        }
        n
    };
    let parsed = split_params(&text);
    if parsed.len() != raw_count {
        return Err("empty parameter");
    }
    if parsed
        .iter()
        .any(|(name, _)| name.is_empty() || !name.chars().all(is_token_char))
    {
        return Err("bad parameter name");
    }
    Ok(())
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

    #[test]
    fn normalizing_and_restoring() {
        assert_eq!(
            normalize_params("\"J\" <sip:j@example.com> ;\r\n tag = 98asjd8").as_deref(),
            Some("\"J\" <sip:j@example.com>;tag=98asjd8")
        );
        assert_eq!(normalize_params("<sip:a@b>;tag=1"), None);
        // A '>' inside a quoted parameter value does not end the URI (found by the fuzz test).
        assert_eq!(
            normalize_params("<sip:a@b>;x=\"<urn:1>\" ; tag = 1").as_deref(),
            Some("<sip:a@b>;x=\"<urn:1>\";tag=1")
        );
        assert_eq!(
            normalize_params("sip:a@b ;   tag    = x").as_deref(),
            Some("sip:a@b;tag=x")
        );
        assert_eq!(
            restore_user_escapes("<sip:%2538%2530@h:5060>"),
            "<sip:%38%30@h:5060>"
        );
        assert_eq!(restore_user_escapes("sip:h;x=%25"), "sip:h;x=%25");
    }

    #[test]
    fn addresses_follow_the_grammar() {
        for ok in [
            "<sip:a@b>;tag=1",
            "sip:a@b ;   tag    = 1918181833n",
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com> ; tag = 98asjd8",
            "caller<sip:caller@example.com>;tag=323",
            "token1~` token2'+_ <sip:m@example.com>;p=\"x;y\";tag=t",
            "<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>",
        ] {
            assert_eq!(check_addresses(ok, false), Ok(()), "{ok}");
        }
        assert_eq!(check_addresses("*", true), Ok(()));
        assert_eq!(
            check_addresses("<sip:a@b>, \"x,y\" <sip:c@d>;q=0.5", true),
            Ok(())
        );
        for bad in [
            "\"Joe\" <sip:joe@example.org>;;;;",
            "\"Mr. J. User <sip:j.user@example.com>",
            "<sip: caller@example.org:5060>;tag=38923n",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        ] {
            let list = bad.starts_with("Bell") || bad.contains("Route");
            assert!(
                check_addresses(bad, list).is_err() || check_addresses(bad, false).is_err(),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,120}") {
            let _ = check_addresses(&text, true);
            let _ = header_params(&text);
            let _ = has_tag(&text);
        }
    }
}
