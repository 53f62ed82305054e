//! SIP authentication against the real binary: a captured `Authorization` replayed from another port is
//! challenged again instead of registering; repeated failures ban the user at that source, then the
//! source, never the user everywhere; bans are counted in `/metrics`; a registered agent's phone is rung
//! directly only from a trusted source.

use std::net::UdpSocket;
use std::time::Duration;
use system_tests::*;

const USERS: &str = "[[sip.user]]\nname = \"1001\"\npassword = \"agent1001\"\n\n\
[[sip.user]]\nname = \"1002\"\npassword = \"agent1002\"\n";

fn client(ip: &str, platform: &Platform) -> RawSip {
    let socket = UdpSocket::bind(format!("{ip}:0")).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    RawSip {
        socket,
        target: platform.sip,
    }
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn register(raw: &RawSip, user: &str, id: &str, cseq: u32, authorization: Option<&str>) -> String {
    let (l, t) = (raw.local(), raw.target);
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};rport;branch=z9hG4bK{id}{cseq}\r\nMax-Forwards: 70\r\n\
From: <sip:{user}@{t}>;tag=r{id}\r\nTo: <sip:{user}@{t}>\r\nCall-ID: reg-{id}\r\nCSeq: {cseq} REGISTER\r\n\
Contact: <sip:{user}@{l}>\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// REGISTER with a password: challenge first, then the answer. Returns the final status and the
/// Authorization that was sent.
fn register_with(raw: &RawSip, user: &str, password: &str, id: &str) -> (Option<u16>, String) {
    let challenge = raw
        .exchange(register(raw, user, id, 1, None).as_bytes())
        .expect("a challenge");
    assert_eq!(status_of(&challenge), Some(401), "{challenge}");
    let www = header(&challenge, "WWW-Authenticate").expect("WWW-Authenticate");
    let uri = format!("sip:{}", raw.target);
    let authorization = sip_gateway::digest::answer_challenge(www, "REGISTER", &uri, user, password, id)
        .expect("an answer to the challenge");
    let response = raw
        .exchange(register(raw, user, id, 2, Some(&authorization)).as_bytes())
        .expect("a response");
    (status_of(&response), authorization)
}

#[test]
fn a_replayed_authorization_from_another_port_is_challenged_not_registered() {
    require_command("sipp");
    let platform = Platform::start(USERS);
    let phone = client("127.0.0.1", &platform);
    let (status, authorization) = register_with(&phone, "1001", "agent1001", "replay1");
    assert_eq!(status, Some(200), "{}", platform.log());
    // The attacker copies the header (same nonce, nc, cnonce, response) into its own REGISTER.
    let attacker = client("127.0.0.1", &platform);
    let replay = attacker
        .exchange(register(&attacker, "1001", "replay2", 7, Some(&authorization)).as_bytes())
        .expect("a response");
    assert_eq!(status_of(&replay), Some(401), "{replay}");
    assert!(
        platform
            .http_get("/metrics")
            .1
            .contains("sip_auth_failures_total{reason=\"replay\"} 1"),
        "{}",
        platform.http_get("/metrics").1
    );
}

#[test]
fn failures_ban_the_user_at_that_source_then_the_source_never_the_user_elsewhere() {
    require_command("sipp");
    let platform = Platform::start(&format!(
        "[sip.auth]\nuser_threshold = 3\nsource_threshold = 6\nwindow_secs = 120\nban_secs = 120\n{USERS}"
    ));
    let a = client("127.0.0.1", &platform);
    let b = client("127.0.0.2", &platform);
    for i in 0..3 {
        let (status, _) = register_with(&a, "1001", "guess", &format!("g{i}"));
        assert_eq!(status, Some(403));
    }
    // 1001 is banned at A only: the right password from A is refused, from B accepted.
    assert_eq!(register_with(&a, "1001", "agent1001", "ok-a").0, Some(403));
    assert_eq!(register_with(&b, "1001", "agent1001", "ok-b").0, Some(200));
    // Another user at A is not banned...
    assert_eq!(register_with(&a, "1002", "agent1002", "ok-a2").0, Some(200));
    // ...until the source itself has failed too often (six failures, any users).
    for i in 0..3 {
        assert_eq!(register_with(&a, "9999", "guess", &format!("u{i}")).0, Some(403));
    }
    assert_eq!(register_with(&a, "1002", "agent1002", "ok-a3").0, Some(403));
    assert_eq!(register_with(&b, "1002", "agent1002", "ok-b2").0, Some(200));
    let metrics = platform.http_get("/metrics").1;
    assert!(
        metrics.contains("sip_auth_bans_total{reason=\"user_source\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sip_auth_bans_total{reason=\"source\"} 1"),
        "{metrics}"
    );
    assert!(
        platform.log().contains("SIP authentication ban"),
        "{}",
        platform.log()
    );
}

#[test]
fn a_stranger_cannot_ring_a_registered_agents_phone_directly_unless_from_a_trusted_source() {
    // 127.0.0.2 is trusted (a PBX or the load balancer); 127.0.0.1 is anyone.
    let platform = Platform::start(&format!(
        "[sip.limits]\ntrusted_sources = [\"127.0.0.2\"]\n{USERS}"
    ));
    let phone = client("127.0.0.1", &platform);
    let (status, _) = register_with(&phone, "1001", "agent1001", "direct1");
    assert_eq!(status, Some(200), "{}", platform.log());
    // The agent is reached through the ACD; an INVITE to 1001 from a stranger gets what an unknown
    // number gets, and the phone is not rung.
    let stranger = client("127.0.0.1", &platform);
    let refused = stranger
        .exchange(stranger.invite("1001", "direct2").as_bytes())
        .expect("a response");
    assert_eq!(status_of(&refused), Some(404), "{refused}");
    // From the trusted source the call goes to the phone (which rings: an INVITE reaches it).
    let trusted = client("127.0.0.2", &platform);
    trusted
        .socket
        .send_to(trusted.invite("1001", "direct3").as_bytes(), trusted.target)
        .expect("send");
    let rung = phone.receive().expect("the phone is rung");
    assert!(rung.starts_with("INVITE sip:1001@"), "{rung}\n{}", platform.log());
}
