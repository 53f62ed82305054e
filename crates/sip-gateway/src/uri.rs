//! What a Request-URI asks for, as routing needs it: the user part of a `sip:`/`sips:` URI with its
//! %-escapes undone (RFC 3261 §19.1.4, so `sip:%39%30%31@host` dials `901`), the number of a `tel:` URI
//! (RFC 3966, global `+...` or local with `phone-context`, visual separators removed), or a scheme we do
//! not serve (answered 416). Pure; never panics.

/// The routing key of a Request-URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialled {
    /// The unescaped user part of a SIP URI (empty when the URI has none).
    User(String),
    /// The number of a `tel:` URI.
    Number(String),
    /// A scheme we do not route (416 Unsupported URI Scheme).
    UnsupportedScheme(String),
    /// Escapes that do not decode to UTF-8, or a `tel:` URI without digits (400/404).
    Malformed,
}

/// Undoes %-escapes; `None` when an escape is broken or the result is not UTF-8.
pub fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads the routing key of a Request-URI's text (`sip:user@host;params`, `tel:+1-555-0100`, ...).
pub fn dialled(uri: &str) -> Dialled {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Dialled::UnsupportedScheme(String::new());
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "sip" | "sips" => {
            // userinfo ends at the last '@' before any parameter or header.
            let end = rest.find([';', '?']).unwrap_or(rest.len());
            let Some(at) = rest[..end].rfind('@') else {
                return Dialled::User(String::new());
            };
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            match unescape(user) {
                Some(u) => Dialled::User(u),
                None => Dialled::Malformed,
            }
        }
        "tel" => {
            let number = rest.split([';', '?']).next().unwrap_or_default();
            let Some(number) = unescape(number) else {
                return Dialled::Malformed;
            };
            // RFC 3966 §5.1.1: visual separators carry no meaning.
            let number: String = number
                .chars()
                .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
                .collect();
            let digits = number.strip_prefix('+').unwrap_or(&number);
            if digits.is_empty()
                || !digits
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, '*' | '#'))
            {
                return Dialled::Malformed;
            }
            Dialled::Number(number)
        }
        other => Dialled::UnsupportedScheme(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sip_users_are_unescaped() {
        assert_eq!(dialled("sip:%39%30%31@example.com"), Dialled::User("901".into()));
        assert_eq!(
            dialled("sips:900@example.com;transport=tls"),
            Dialled::User("900".into())
        );
        assert_eq!(
            dialled("sip:alice:secret@example.com"),
            Dialled::User("alice".into())
        );
        assert_eq!(dialled("sip:example.com"), Dialled::User(String::new()));
        assert_eq!(dialled("SIP:user@host?Subject=x@y"), Dialled::User("user".into()));
        assert_eq!(dialled("sip:%ff@host"), Dialled::Malformed);
        assert_eq!(dialled("sip:%4@host"), Dialled::Malformed);
    }

    #[test]
    fn tel_uris_give_their_number() {
        assert_eq!(dialled("tel:+1-555-0100"), Dialled::Number("+15550100".into()));
        assert_eq!(
            dialled("tel:900;phone-context=callcenter.local"),
            Dialled::Number("900".into())
        );
        assert_eq!(dialled("tel:(555)%20123"), Dialled::Number("555123".into()));
        assert_eq!(dialled("tel:;phone-context=x"), Dialled::Malformed);
        assert_eq!(dialled("tel:+"), Dialled::Malformed);
    }

    #[test]
    fn other_schemes_are_unsupported() {
        assert_eq!(
            dialled("http://example.com/"),
            Dialled::UnsupportedScheme("http".into())
        );
        assert_eq!(
            dialled("im:alice@example.com"),
            Dialled::UnsupportedScheme("im".into())
        );
        assert_eq!(dialled("nothing"), Dialled::UnsupportedScheme(String::new()));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = dialled(&text);
            let _ = unescape(&text);
        }
    }
}
