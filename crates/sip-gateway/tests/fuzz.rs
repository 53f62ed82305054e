//! Fuzzing on the stable toolchain: each target mutates its seeds (the cargo-fuzz corpus plus messages
//! carriers and phones send: multipart bodies, `tel:` and %-escaped URIs, parameters with LWS, digest
//! credentials, SDP with several m= lines) with random byte flips, insertions, deletions, duplications
//! and splices, and feeds them to the gateway's parsers: none may panic, and what they return must
//! hold their invariants. Without `FUZZ_SECONDS` each target runs a fixed number of cases (part of the
//! ordinary test run); `scripts/fuzz-sip.sh` runs each for a fixed time. A failing input is written to
//! `<target dir>/fuzz-findings/<target>-<hash>` before the panic is passed on.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use sip_gateway::guard::{ScreenLimits, Screened, screen};
use sip_gateway::{body, digest, syntax, uri};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const INVITE: &str = "INVITE sip:%39%30%31@gw.example;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060 ; branch = z9hG4bK1 ; rport\r\nMax-Forwards: 70\r\nFrom: \"A \\\"B\\\"\" <sip:a@example.com> ; tag = 98asjd8\r\nTo: <tel:+1-555-0100;phone-context=example.com>\r\nCall-ID: c1@192.0.2.1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1;transport=tcp>;expires=60, \"x\" <sip:b@h>\r\nContent-Type: multipart/mixed;boundary=unique-boundary-1\r\nMIME-Version: 1.0\r\nContent-Length: 301\r\n\r\n--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\r\n--unique-boundary-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\r\n\x01\x00\x49\r\n--unique-boundary-1--\r\n";

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=sendonly\r\nm=video 5000 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\nm=audio 4002 RTP/AVP 0\r\na=inactive\r\n";

const AUTHORIZATION: &str = "Digest username=\"1001\", realm=\"cc.example.com\", nonce=\"abc.def\", uri=\"sip:cc.example.com\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, cnonce=\"x y\", qop=auth, nc=00000001, opaque=\"o\"";

/// The seeds of a target: the built-in ones and the cargo-fuzz corpus files of the same name.
fn seeds(target: &str, builtin: &[&str]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = builtin.iter().map(|s| s.as_bytes().to_vec()).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                out.push(bytes);
            }
        }
    }
    out
}

/// One mutation of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Splice(usize, usize, usize),
}

/// Bytes that matter to SIP and MIME grammars, inserted more often than random ones.
const SPECIAL: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b";",
    b"=",
    b" ",
    b"\t",
    b"\"",
    b"<",
    b">",
    b"%",
    b"%2",
    b":",
    b"@",
    b",",
    b"--",
    b"\\",
    b"\r\n ",
    b"boundary=",
    b"tag=",
    b"m=audio 0 RTP/AVP 0\r\n",
    b"\xff",
    b"\x00",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), prop::sample::select(SPECIAL)).prop_map(|(i, s)| Edit::Insert(i, s.to_vec())),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        (any::<usize>(), any::<usize>(), 1usize..128).prop_map(|(s, d, n)| Edit::Splice(s, d, n)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit], other: &[u8]) -> Vec<u8> {
    for e in edits {
        let len = data.len();
        match e {
            Edit::Flip(i, b) if len > 0 => data[i % len] ^= b | 1,
            Edit::Insert(i, bytes) => {
                let at = i % (len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(i, n) if len > 0 => {
                let at = i % len;
                data.drain(at..(at + n).min(len));
            }
            Edit::Duplicate(i, n) if len > 0 => {
                let at = i % len;
                let piece = data[at..(at + n).min(len)].to_vec();
                data.splice(at..at, piece);
            }
            Edit::Splice(s, d, n) if !other.is_empty() => {
                let from = s % other.len();
                let piece = &other[from..(from + n).min(other.len())];
                let at = d % (len + 1);
                data.splice(at..at, piece.iter().copied());
            }
            _ => {}
        }
    }
    data
}

/// Runs `check` on mutations of `seeds` for `FUZZ_SECONDS` (else a fixed 2,000 cases), recording the
/// input of a panic under `<target dir>/fuzz-findings`.
fn fuzz(target: &str, seeds: Vec<Vec<u8>>, check: impl Fn(&[u8])) {
    assert!(!seeds.is_empty());
    let seconds: Option<u64> = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok());
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let rng = match std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &bytes)
        }
        None => TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    };
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = (
        0..seeds.len(),
        0..seeds.len(),
        prop::collection::vec(edit(), 1..6),
    );
    for seed in &seeds {
        check(seed);
    }
    let mut cases = 0u64;
    loop {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if cases >= 2_000 => break,
            _ => {}
        }
        let (a, b, edits) = strategy.new_tree(&mut runner).expect("value").current();
        let input = apply(seeds[a].clone(), &edits, &seeds[b]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(panic) = outcome {
            let path = finding_path(target, &input);
            let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
            let _ = std::fs::write(&path, &input);
            eprintln!("{target}: failing input written to {}", path.display());
            std::panic::resume_unwind(panic);
        }
        cases += 1;
    }
    eprintln!("{target}: {cases} mutated inputs, no failure");
}

fn finding_path(target: &str, input: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target_dir
        .join("fuzz-findings")
        .join(format!("{target}-{:016x}", h.finish()))
}

#[test]
fn datagram_screen() {
    fuzz("screen", seeds("screen", &[INVITE]), |data| {
        if let Screened::Rewrite(bytes) = screen(data, ScreenLimits::default(), "fuzz") {
            assert!(!bytes.is_empty());
        }
    });
}

#[test]
fn multipart_bodies() {
    let body_seed = INVITE.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    fuzz("multipart", seeds("multipart", &[body_seed, SDP]), |data| {
        let ct = "multipart/mixed; boundary=\"unique-boundary-1\"";
        if let Ok(parts) = body::parse_multipart(ct, data) {
            for p in &parts {
                assert!(p.body.len() <= data.len());
            }
        }
        let _ = body::offer_of(Some(ct), None, data);
        let _ = body::offer_of(
            Some("multipart/alternative;boundary=unique-boundary-1"),
            None,
            data,
        );
        if let Ok(replaced) = body::replace_sdp(ct, data, SDP.as_bytes()) {
            // The SDP part now holds our SDP and the body still parses.
            assert!(body::offer_of(Some(ct), None, &replaced).is_ok());
        }
        // The content type is attacker-controlled too.
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = body::media_type(text);
            let _ = body::parameter(text, "boundary");
            let _ = body::offer_of(Some(text), Some("identity"), SDP.as_bytes());
        }
    });
}

#[test]
fn request_uris() {
    let seeds = seeds(
        "uri",
        &[
            "sip:%39%30%31@gw.example;user=phone",
            "tel:+1-555-0100;phone-context=example.com",
            "tel:0100;phone-context=+1-555",
            "sips:agent@[2001:db8::1]:5061;transport=tls?Subject=x",
            "<sip:800@h>",
            "mailto:x@y",
        ],
    );
    fuzz("uri", seeds, |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = uri::dialled(text);
            if let Some(plain) = uri::unescape(text) {
                assert!(plain.len() <= text.len());
            }
        }
    });
}

#[test]
fn header_parameters_and_addresses() {
    let seeds = seeds(
        "syntax",
        &[
            "\"A \\\"B\\\"\" <sip:a@example.com> ; tag = 98asjd8",
            "<sip:%75ser@h;lr>;tag=1;x",
            "sip:a@h;tag=1, <sip:b@h>;expires=0",
            "Bob <sips:bob@h>;q=0.5;+sip.instance=\"<urn:uuid:1>\"",
        ],
    );
    fuzz("syntax", seeds, |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = syntax::header_params(text);
            let _ = syntax::split_params(text);
            let _ = syntax::param(text, "tag");
            let tagged = syntax::has_tag(text);
            if let Some(normal) = syntax::normalize_params(text) {
                // Normalising keeps the tag (or its absence).
                assert_eq!(syntax::has_tag(&normal), tagged, "{text:?} -> {normal:?}");
            }
            let _ = syntax::restore_user_escapes(text);
            let _ = syntax::check_addresses(text, true);
            let _ = syntax::check_addresses(text, false);
        }
    });
}

#[test]
fn digest_credentials() {
    fuzz("digest", seeds("digest", &[AUTHORIZATION]), |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = digest::parse_authorization(text);
            let _ = digest::answer_challenge(text, "INVITE", "sip:x", "u", "p", "c");
        }
    });
}

#[test]
fn sdp_answers_mirrored_on_offers() {
    let answer = "v=0\r\no=- 2 2 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\n";
    fuzz("sdp", seeds("sdp", &[SDP, answer]), |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let mirrored = body::mirror_offer(text, answer);
            assert!(mirrored.contains("m=audio 30000") || mirrored == answer);
            let _ = body::mirror_offer(SDP, text);
        }
    });
}
