//! SRTP interoperability with libsrtp, the reference implementation: packets protected by libsrtp
//! (`testdata/srtp_libsrtp_vectors.txt`, written by `testdata/srtp_vectors.py` through the pylibsrtp package)
//! must unprotect to their plain packets here, and protecting the plain packets here must give libsrtp's
//! bytes exactly (both suites, across a sequence-number wrap, and SRTCP).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test's answer

use media::srtp::{MAX_RTP_OVERHEAD, MasterKey, RTCP_OVERHEAD, SrtpReceiver, SrtpSender, SrtpSuite};

struct Vector {
    kind: String,
    suite: SrtpSuite,
    master: MasterKey,
    plain: Vec<u8>,
    protected: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("../testdata/srtp_libsrtp_vectors.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let master: [u8; 30] = hex(f[2]).try_into().unwrap();
            Vector {
                kind: f[0].to_owned(),
                suite: SrtpSuite::from_name(f[1]).unwrap(),
                master: MasterKey::from_bytes(&master),
                plain: hex(f[3]),
                protected: hex(f[4]),
            }
        })
        .collect()
}

#[test]
fn libsrtp_packets_unprotect_here() {
    let all = vectors();
    assert_eq!(all.len(), 24);
    for suite in [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AesCm128HmacSha1_32] {
        let mut receiver: Option<SrtpReceiver> = None;
        for v in all.iter().filter(|v| v.suite == suite) {
            let receiver = receiver.get_or_insert_with(|| SrtpReceiver::new(v.suite, &v.master));
            let mut buf = v.protected.clone();
            let len = match v.kind.as_str() {
                "rtp" => receiver.unprotect_rtp(&mut buf),
                _ => receiver.unprotect_rtcp(&mut buf),
            }
            .unwrap_or_else(|e| panic!("{} {suite:?}: {e}", v.kind));
            assert_eq!(buf[..len], v.plain[..], "{} {suite:?}", v.kind);
        }
    }
}

#[test]
fn packets_protected_here_equal_libsrtp_s() {
    for suite in [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AesCm128HmacSha1_32] {
        let all: Vec<Vector> = vectors().into_iter().filter(|v| v.suite == suite).collect();
        let mut sender = SrtpSender::new(suite, &all[0].master);
        // libsrtp numbers its first SRTCP packet 1: spend index 0 on a packet of our own.
        let mut spare = all.iter().find(|v| v.kind == "rtcp").unwrap().plain.clone();
        let spare_len = spare.len();
        spare.resize(spare_len + RTCP_OVERHEAD, 0);
        sender.protect_rtcp(&mut spare, spare_len).unwrap();
        for v in &all {
            let mut buf = v.plain.clone();
            buf.resize(v.plain.len() + MAX_RTP_OVERHEAD.max(RTCP_OVERHEAD), 0);
            let len = match v.kind.as_str() {
                "rtp" => sender.protect_rtp(&mut buf, v.plain.len()),
                _ => sender.protect_rtcp(&mut buf, v.plain.len()),
            }
            .unwrap();
            assert_eq!(buf[..len], v.protected[..], "{} {suite:?}", v.kind);
        }
    }
}
