//! SDES key exchange (RFC 4568): the `a=crypto` attribute of `RTP/SAVP` media lines, and the choice of keys
//! for an SRTP leg ([`crate::srtp`]).
//!
//! ```text
//! a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4
//!          tag suite                  key||salt, base64 (30 bytes)        lifetime MKI:length
//! ```
//!
//! Each side's attribute carries the key *it sends with*. An answer picks one offered attribute (its tag and
//! suite) and puts a fresh key of ours in it. Offers we cannot honour are skipped rather than misread: an
//! unknown suite, an MKI (we send none and cannot match one), several keys, or session parameters that
//! change the protection (`UNENCRYPTED_SRTP`, `KDR` other than 0, ...). Parsing never panics; an attribute
//! that does not follow the grammar is an error naming what is wrong.
//!
//! [`crypto_attribute_parse`] and [`crypto_attribute_format`] are what the SDP writer and reader use.

use crate::srtp::{MASTER_KEY_LEN, MASTER_SALT_LEN, MasterKey, SrtpKeys, SrtpSuite};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

/// Key lifetime and MKI as offered (kept to decide whether the offer is usable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParams {
    pub key: MasterKey,
    /// Packets the key may protect (`2^20` is written as 1048576).
    pub lifetime: Option<u64>,
    /// MKI value and its length in bytes.
    pub mki: Option<(u64, u8)>,
}

/// One `a=crypto` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// Identifies the attribute within the media line (1 to 999999999).
    pub tag: u32,
    /// The suite; `None` for one we do not implement (kept so that the attribute still parses).
    pub suite: Option<SrtpSuite>,
    /// The suite's name as written.
    pub suite_name: String,
    /// One or more keys (we use attributes with exactly one).
    pub keys: Vec<KeyParams>,
    /// Session parameters as written (`KDR=0`, `WSH=64`, `UNENCRYPTED_SRTP`, ...).
    pub session_params: Vec<String>,
}

/// What is wrong with an `a=crypto` attribute.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("a=crypto needs a tag, a suite and key parameters")]
    MissingField,
    #[error("the tag must be a number of 1 to 9 digits")]
    BadTag,
    #[error("key parameters must start with inline:")]
    NotInline,
    #[error("the inline key is not base64")]
    BadBase64,
    #[error("the inline key must hold {expected} bytes of key and salt, not {found}")]
    BadKeyLength { expected: usize, found: usize },
    #[error("bad key lifetime")]
    BadLifetime,
    #[error("bad MKI (value:length, length 1 to 128)")]
    BadMki,
}

const KEY_AND_SALT: usize = MASTER_KEY_LEN + MASTER_SALT_LEN;
/// Longest attribute considered (a few keys with lifetimes and MKIs fit easily).
const MAX_ATTRIBUTE_LEN: usize = 1024;

fn parse_lifetime(text: &str) -> Result<u64, CryptoError> {
    if let Some(exponent) = text.strip_prefix("2^") {
        let exponent: u32 = exponent.parse().map_err(|_| CryptoError::BadLifetime)?;
        return 1u64
            .checked_shl(exponent)
            .filter(|_| exponent < 64)
            .ok_or(CryptoError::BadLifetime);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::BadLifetime);
    }
    text.parse().map_err(|_| CryptoError::BadLifetime)
}

fn parse_key_params(text: &str) -> Result<KeyParams, CryptoError> {
    let inline = text.strip_prefix("inline:").ok_or(CryptoError::NotInline)?;
    let mut parts = inline.split('|');
    let encoded = parts.next().unwrap_or_default();
    let bytes = STANDARD.decode(encoded).map_err(|_| CryptoError::BadBase64)?;
    let bytes: [u8; KEY_AND_SALT] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::BadKeyLength {
            expected: KEY_AND_SALT,
            found: bytes.len(),
        })?;
    let mut lifetime = None;
    let mut mki = None;
    for part in parts {
        // The lifetime comes before the MKI; an MKI has a colon.
        if let Some((value, length)) = part.split_once(':') {
            if mki.is_some() {
                return Err(CryptoError::BadMki);
            }
            let value: u64 = value.parse().map_err(|_| CryptoError::BadMki)?;
            let length: u8 = length.parse().map_err(|_| CryptoError::BadMki)?;
            if !(1..=128).contains(&length) {
                return Err(CryptoError::BadMki);
            }
            mki = Some((value, length));
        } else if lifetime.is_none() && mki.is_none() {
            lifetime = Some(parse_lifetime(part)?);
        } else {
            return Err(CryptoError::BadLifetime);
        }
    }
    Ok(KeyParams {
        key: MasterKey::from_bytes(&bytes),
        lifetime,
        mki,
    })
}

/// Parses an `a=crypto` attribute: its value (`1 AES_CM_128_HMAC_SHA1_80 inline:...`), with or without the
/// leading `a=crypto:` or `crypto:`.
pub fn crypto_attribute_parse(text: &str) -> Result<CryptoAttribute, CryptoError> {
    let text = text.trim();
    if text.len() > MAX_ATTRIBUTE_LEN {
        return Err(CryptoError::MissingField);
    }
    let value = text
        .strip_prefix("a=crypto:")
        .or_else(|| text.strip_prefix("crypto:"))
        .unwrap_or(text);
    let mut fields = value.split_ascii_whitespace();
    let (Some(tag), Some(suite_name), Some(key_params)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(CryptoError::MissingField);
    };
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::BadTag);
    }
    let tag: u32 = tag.parse().map_err(|_| CryptoError::BadTag)?;
    let keys = key_params
        .split(';')
        .map(parse_key_params)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CryptoAttribute {
        tag,
        suite: SrtpSuite::from_name(suite_name),
        suite_name: suite_name.to_owned(),
        keys,
        session_params: fields.map(str::to_owned).collect(),
    })
}

/// Writes the attribute as an SDP line's content after `a=`: `crypto:<tag> <suite> inline:<key>[|...]`.
pub fn crypto_attribute_format(attribute: &CryptoAttribute) -> String {
    let keys: Vec<String> = attribute
        .keys
        .iter()
        .map(|params| {
            let mut text = format!("inline:{}", STANDARD.encode(params.key.to_bytes()));
            if let Some(lifetime) = params.lifetime {
                text.push_str(&format!("|{lifetime}"));
            }
            if let Some((value, length)) = params.mki {
                text.push_str(&format!("|{value}:{length}"));
            }
            text
        })
        .collect();
    let mut line = format!(
        "crypto:{} {} {}",
        attribute.tag,
        attribute.suite_name,
        keys.join(";")
    );
    for param in &attribute.session_params {
        line.push(' ');
        line.push_str(param);
    }
    line
}

impl CryptoAttribute {
    /// An attribute offering `key` with `suite` under `tag` (no lifetime, no MKI).
    pub fn new(tag: u32, suite: SrtpSuite, key: MasterKey) -> Self {
        Self {
            tag,
            suite: Some(suite),
            suite_name: suite.name().to_owned(),
            keys: vec![KeyParams {
                key,
                lifetime: None,
                mki: None,
            }],
            session_params: Vec::new(),
        }
    }

    /// The suite and key if we can use this attribute as it is: a suite we implement, exactly one key without
    /// MKI, and no session parameter that changes the protection (window size hints and FEC order are fine).
    pub fn usable(&self) -> Option<(SrtpSuite, &MasterKey)> {
        let suite = self.suite?;
        let [params] = self.keys.as_slice() else {
            return None;
        };
        if params.mki.is_some() {
            return None;
        }
        let harmless =
            |param: &String| param == "KDR=0" || param.starts_with("WSH=") || param.starts_with("FEC_ORDER=");
        self.session_params
            .iter()
            .all(harmless)
            .then_some((suite, &params.key))
    }
}

/// Answers an offer's `a=crypto` attributes: the first usable one (in the offer's order, which is the
/// offerer's preference) is taken with a fresh key of ours. Returns the attribute for our answer and the
/// leg's keys; `None` if none is usable (answer the media line with port 0, or 488 if SRTP was required).
pub fn answer_crypto(offered: &[CryptoAttribute]) -> Option<(CryptoAttribute, SrtpKeys)> {
    offered.iter().find_map(|attribute| {
        let (suite, remote) = attribute.usable()?;
        let local = MasterKey::generate();
        let answer = CryptoAttribute::new(attribute.tag, suite, local.clone());
        Some((
            answer,
            SrtpKeys {
                suite,
                local,
                remote: remote.clone(),
            },
        ))
    })
}

/// Our offer: one attribute per suite we implement, 80-bit tag first, each with its own fresh key.
pub fn offer_crypto() -> Vec<CryptoAttribute> {
    [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AesCm128HmacSha1_32]
        .into_iter()
        .zip(1..)
        .map(|(suite, tag)| CryptoAttribute::new(tag, suite, MasterKey::generate()))
        .collect()
}

/// The leg's keys once the peer answered our [`offer_crypto`]: the answer names one of our tags; we send
/// with the key we offered under it and receive with the answer's key. `None` if the answer matches none
/// of our attributes or changes the suite.
pub fn keys_from_answer(our_offer: &[CryptoAttribute], answer: &CryptoAttribute) -> Option<SrtpKeys> {
    let (suite, remote) = answer.usable()?;
    let ours = our_offer.iter().find(|a| a.tag == answer.tag)?;
    let (our_suite, local) = ours.usable()?;
    (our_suite == suite).then(|| SrtpKeys {
        suite,
        local: local.clone(),
        remote: remote.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC_EXAMPLE: &str =
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

    #[test]
    fn the_rfc_4568_example_parses() {
        let attribute = crypto_attribute_parse(RFC_EXAMPLE).unwrap();
        assert_eq!(attribute.tag, 1);
        assert_eq!(attribute.suite, Some(SrtpSuite::AesCm128HmacSha1_80));
        assert_eq!(attribute.keys.len(), 1);
        assert_eq!(attribute.keys[0].lifetime, Some(1 << 20));
        assert_eq!(attribute.keys[0].mki, Some((1, 4)));
        assert_eq!(
            attribute.keys[0].key.to_bytes().to_vec(),
            STANDARD
                .decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
                .unwrap()
        );
        assert!(attribute.usable().is_none(), "an MKI we cannot match");
        assert_eq!(
            format!("a={}", crypto_attribute_format(&attribute)),
            RFC_EXAMPLE.replace("2^20", "1048576")
        );
    }

    #[test]
    fn what_phones_send_is_usable_and_round_trips() {
        let line = "crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj";
        let attribute = crypto_attribute_parse(line).unwrap();
        assert_eq!(
            attribute.usable().map(|(s, _)| s),
            Some(SrtpSuite::AesCm128HmacSha1_32)
        );
        assert_eq!(crypto_attribute_format(&attribute), line);
        let with_params = crypto_attribute_parse(&format!("{line} WSH=128 KDR=0")).unwrap();
        assert!(with_params.usable().is_some());
        let unencrypted = crypto_attribute_parse(&format!("{line} UNENCRYPTED_SRTP")).unwrap();
        assert!(unencrypted.usable().is_none());
    }

    #[test]
    fn bad_attributes_say_what_is_wrong() {
        let key = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        for (text, error) in [
            ("1 AES_CM_128_HMAC_SHA1_80", CryptoError::MissingField),
            (&format!("x AES_CM_128_HMAC_SHA1_80 {key}"), CryptoError::BadTag),
            (
                &format!("1234567890 AES_CM_128_HMAC_SHA1_80 {key}"),
                CryptoError::BadTag,
            ),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:sip:x", CryptoError::NotInline),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!", CryptoError::BadBase64),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:QUJD",
                CryptoError::BadKeyLength {
                    expected: 30,
                    found: 3,
                },
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 {key}|2^99"),
                CryptoError::BadLifetime,
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 {key}|1:0"),
                CryptoError::BadMki,
            ),
        ] {
            assert_eq!(crypto_attribute_parse(text), Err(error), "{text}");
        }
    }

    #[test]
    fn an_unknown_suite_parses_but_is_not_used() {
        let attribute =
            crypto_attribute_parse("3 AEAD_AES_256_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
                .unwrap();
        assert_eq!(attribute.suite, None);
        assert!(answer_crypto(&[attribute]).is_none());
    }

    #[test]
    fn offer_and_answer_agree_on_keys_in_both_directions() {
        let our_offer = offer_crypto();
        // The phone answers our second attribute with a key of its own.
        let wire: Vec<String> = our_offer.iter().map(crypto_attribute_format).collect();
        let received: Vec<CryptoAttribute> =
            wire.iter().map(|l| crypto_attribute_parse(l).unwrap()).collect();
        let (phone_answer, phone_keys) = answer_crypto(&received[1..]).unwrap();
        assert_eq!(phone_answer.tag, 2);
        let answer = crypto_attribute_parse(&crypto_attribute_format(&phone_answer)).unwrap();
        let our_keys = keys_from_answer(&our_offer, &answer).unwrap();
        assert_eq!(our_keys.suite, SrtpSuite::AesCm128HmacSha1_32);
        assert_eq!(our_keys.local, phone_keys.remote);
        assert_eq!(our_keys.remote, phone_keys.local);
        // An answer to a tag we did not offer, or with another suite, gives no keys.
        let mut wrong = answer.clone();
        wrong.tag = 9;
        assert!(keys_from_answer(&our_offer, &wrong).is_none());
        let mut switched = answer;
        switched.suite = Some(SrtpSuite::AesCm128HmacSha1_80);
        assert!(keys_from_answer(&our_offer, &switched).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = crypto_attribute_parse(&text);
        }

        #[test]
        fn formatted_attributes_parse_back(
            tag in 1u32..999_999_999,
            key in proptest::array::uniform30(any::<u8>()),
            lifetime in proptest::option::of(1u64..u64::MAX),
            mki in proptest::option::of((any::<u64>(), 1u8..=128)),
            suite_80 in any::<bool>(),
        ) {
            let suite = if suite_80 { SrtpSuite::AesCm128HmacSha1_80 } else { SrtpSuite::AesCm128HmacSha1_32 };
            let mut attribute = CryptoAttribute::new(tag, suite, MasterKey::from_bytes(&key));
            attribute.keys[0].lifetime = lifetime;
            attribute.keys[0].mki = mki;
            let text = crypto_attribute_format(&attribute);
            prop_assert_eq!(crypto_attribute_parse(&text), Ok(attribute));
        }
    }
}
