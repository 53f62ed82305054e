//! SIP and SDP interop against the real binary with hand-written messages (what carriers and phones
//! send beyond SIPp's default scenario): RFC 3264 answers line for line, multipart bodies, 415,
//! Request-URIs (%-escapes, `tel:`, other schemes), late offer with the answer in the ACK, and
//! SDES-SRTP whose audio decrypts with the key in our answer; outbound late offer (an INVITE without SDP to
//! a phone or trunk set to `late_offer`, their offer in the 2xx, our answer in the ACK) with SIPp as the peer. Each call goes to the IVR route and
//! is checked by the RTP that arrives where the SDP says.

use media::sdes::{crypto_attribute_format, crypto_attribute_parse, offer_crypto};
use media::srtp::SrtpKeys;
use std::net::UdpSocket;
use std::time::Duration;
use system_tests::*;

fn limits() -> &'static str {
    "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n"
}

fn ivr_platform(flows: &tempfile::TempDir) -> Platform {
    Platform::start_with_flows(
        &format!("{}[[route]]\nnumber = \"800\"\nivr = \"main\"\n", limits()),
        flows.path(),
    )
}

/// A UDP socket for RTP with a read timeout (an awaited event, bounded).
fn rtp_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind rtp");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().expect("addr").port()
}

/// The first packet that arrives on `socket`, if any within its timeout.
fn first_packet(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    let (n, _) = recv_datagram(socket, &mut buf)?;
    Some(buf[..n].to_vec())
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(message: &str) -> &str {
    message.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default()
}

fn m_lines(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("m="))
        .map(|l| {
            // Our port is whatever the engine picked: keep only whether it is 0.
            let mut parts: Vec<&str> = l.split(' ').collect();
            if parts.len() > 1 && parts[1] != "0" {
                parts[1] = "PORT";
            }
            parts.join(" ")
        })
        .collect()
}

/// An INVITE to `request_uri` with `body` (none: a late offer).
fn invite(raw: &RawSip, request_uri: &str, call_id: &str, content_type: &str, body: &str) -> String {
    let l = raw.local();
    let ct = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\r\n")
    };
    format!(
        "INVITE {request_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n\
From: <sip:caller@{l}>;tag=f{call_id}\r\nTo: <{request_uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:caller@{l}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The ACK (with `sdp` when given) and, later, the BYE for the dialog a 2xx set up.
fn in_dialog(raw: &RawSip, ok: &str, method: &str, cseq: u32, call_id: &str, sdp: Option<&str>) -> String {
    let l = raw.local();
    let to = header(ok, "To").unwrap_or_default();
    let target = header(ok, "Contact")
        .unwrap_or_default()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_string();
    let (ct, body) = match sdp {
        Some(s) => ("Content-Type: application/sdp\r\n".to_string(), s.to_string()),
        None => (String::new(), String::new()),
    };
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{method}{call_id}{cseq}\r\nMax-Forwards: 70\r\n\
From: <sip:caller@{l}>;tag=f{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{ct}\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The final response to an INVITE (skipping provisionals).
fn final_response(raw: &RawSip, request: &str) -> String {
    let mut response = raw.exchange(request.as_bytes()).expect("a response");
    while status_of(&response).is_some_and(|c| c < 200) {
        response = raw.receive().expect("a final response");
    }
    response
}

fn hang_up(raw: &RawSip, ok: &str, call_id: &str) {
    let bye = in_dialog(raw, ok, "BYE", 2, call_id, None);
    let mut answer = raw.exchange(bye.as_bytes()).expect("an answer to BYE");
    // 2xx retransmissions may arrive before the BYE's answer.
    while answer.starts_with("SIP/2.0 200") && answer.contains("CSeq: 1 INVITE") {
        answer = raw.receive().expect("an answer to BYE");
    }
    assert_eq!(status_of(&answer), Some(200), "{answer}");
}

fn sdp(rtp_port: u16, media: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}")
        .replace("RTP_PORT", &rtp_port.to_string())
}

#[test]
fn an_offer_with_video_and_two_audio_lines_is_answered_line_for_line_on_the_first_usable_one() {
    require_command("sipp");
    let flows = test_flows();
    let platform = ivr_platform(&flows);
    let raw = RawSip::new(platform.sip);
    let unused = rtp_socket();
    let used = rtp_socket();
    // First audio line: G.729 only (unusable); then video; then PCMU on another port.
    let offer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {} RTP/AVP 18\r\nm=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        port(&unused),
        port(&used)
    );
    let uri = format!("sip:800@{}", platform.sip);
    let ok = final_response(&raw, &invite(&raw, &uri, "mline1", "application/sdp", &offer));
    assert_eq!(status_of(&ok), Some(200), "{ok}\n{}", platform.log());
    assert_eq!(
        m_lines(body(&ok)),
        [
            "m=audio 0 RTP/AVP 18",
            "m=video 0 RTP/AVP 96",
            "m=audio PORT RTP/AVP 0 101"
        ],
        "{ok}"
    );
    raw.socket
        .send_to(
            in_dialog(&raw, &ok, "ACK", 1, "mline1", None).as_bytes(),
            platform.sip,
        )
        .expect("ack");
    // The IVR's greeting arrives on the line that was answered.
    let packet = first_packet(&used).expect("RTP on the answered line");
    assert_eq!(packet[1] & 0x7f, 0, "PCMU");
    hang_up(&raw, &ok, "mline1");
}

#[test]
fn multipart_bodies_give_their_sdp_and_unusable_bodies_get_415_with_accept() {
    require_command("sipp");
    let flows = test_flows();
    let platform = ivr_platform(&flows);
    let raw = RawSip::new(platform.sip);
    let audio = rtp_socket();
    let sdp = sdp(port(&audio), "m=audio RTP_PORT RTP/AVP 8\r\n");
    let multipart = format!(
        "--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--unique-boundary-1\r\n\
Content-Type: application/ISUP; version=itu-t92+\r\nContent-Disposition: signal; handling=optional\r\n\r\n\
\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03\x06\x0d\x03\x10\x20\x22\r\n\
--unique-boundary-1--\r\n"
    );
    let uri = format!("sip:800@{}", platform.sip);
    let ok = final_response(
        &raw,
        &invite(
            &raw,
            &uri,
            "mpart1",
            "multipart/mixed;boundary=unique-boundary-1",
            &multipart,
        ),
    );
    assert_eq!(status_of(&ok), Some(200), "{ok}\n{}", platform.log());
    assert_eq!(m_lines(body(&ok)), ["m=audio PORT RTP/AVP 8"], "{ok}");
    raw.socket
        .send_to(
            in_dialog(&raw, &ok, "ACK", 1, "mpart1", None).as_bytes(),
            platform.sip,
        )
        .expect("ack");
    assert!(first_packet(&audio).is_some(), "no RTP for the multipart offer");
    hang_up(&raw, &ok, "mpart1");

    let refused = final_response(&raw, &invite(&raw, &uri, "xml1", "application/xml", "<x/>"));
    assert_eq!(status_of(&refused), Some(415), "{refused}");
    let accept = header(&refused, "Accept").unwrap_or_default();
    assert!(
        accept.contains("application/sdp") && accept.contains("multipart/mixed"),
        "{refused}"
    );
}

#[test]
fn request_uris_escaped_tel_and_other_schemes() {
    require_command("sipp");
    let flows = test_flows();
    let platform = ivr_platform(&flows);
    let raw = RawSip::new(platform.sip);
    let audio = rtp_socket();
    let offer = sdp(port(&audio), "m=audio RTP_PORT RTP/AVP 0\r\n");
    // %38%30%30 is 800 (RFC 3261 §19.1.4); the To comes back as it was sent, with our tag added.
    let uri = format!("sip:%38%30%30@{}", platform.sip);
    let ok = final_response(&raw, &invite(&raw, &uri, "esc1", "application/sdp", &offer));
    assert_eq!(status_of(&ok), Some(200), "{ok}\n{}", platform.log());
    let to = header(&ok, "To").unwrap_or_default();
    assert!(to.starts_with(&format!("<{uri}>;tag=")), "To rewritten: {to}");
    raw.socket
        .send_to(
            in_dialog(&raw, &ok, "ACK", 1, "esc1", None).as_bytes(),
            platform.sip,
        )
        .expect("ack");
    hang_up(&raw, &ok, "esc1");

    // tel: routes by number, with a phone-context.
    let tel = "tel:800;phone-context=callcenter.local";
    let ok = final_response(&raw, &invite(&raw, tel, "tel1", "application/sdp", &offer));
    assert_eq!(status_of(&ok), Some(200), "{ok}\n{}", platform.log());
    raw.socket
        .send_to(
            in_dialog(&raw, &ok, "ACK", 1, "tel1", None).as_bytes(),
            platform.sip,
        )
        .expect("ack");
    hang_up(&raw, &ok, "tel1");

    // A scheme we do not route: 416.
    let im = format!("im:800@{}", platform.sip);
    let refused = final_response(&raw, &invite(&raw, &im, "im1", "application/sdp", &offer));
    assert_eq!(status_of(&refused), Some(416), "{refused}");
}

#[test]
fn late_offer_gets_our_offer_in_the_2xx_and_the_answer_in_the_ack_is_applied() {
    require_command("sipp");
    let flows = test_flows();
    let platform = ivr_platform(&flows);
    let raw = RawSip::new(platform.sip);
    let audio = rtp_socket();
    let uri = format!("sip:800@{}", platform.sip);
    let ok = final_response(&raw, &invite(&raw, &uri, "late1", "", ""));
    assert_eq!(status_of(&ok), Some(200), "{ok}\n{}", platform.log());
    let our_offer = body(&ok);
    assert!(
        our_offer.contains("m=audio ") && our_offer.contains(" RTP/AVP 0"),
        "{ok}"
    );
    // Our answer, in the ACK: the IVR's audio must come to the address it names.
    let answer = sdp(
        port(&audio),
        "m=audio RTP_PORT RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    raw.socket
        .send_to(
            in_dialog(&raw, &ok, "ACK", 1, "late1", Some(&answer)).as_bytes(),
            platform.sip,
        )
        .expect("ack");
    let packet = first_packet(&audio).expect("RTP after the ACK's answer");
    assert_eq!(packet[1] & 0x7f, 0, "PCMU");
    hang_up(&raw, &ok, "late1");

    // An ACK without an answer ends the call cleanly: the gateway sends BYE.
    let ok = final_response(&raw, &invite(&raw, &uri, "late2", "", ""));
    assert_eq!(status_of(&ok), Some(200), "{ok}");
    raw.socket
        .send_to(
            in_dialog(&raw, &ok, "ACK", 1, "late2", None).as_bytes(),
            platform.sip,
        )
        .expect("ack");
    let mut bye = raw.receive().expect("a BYE");
    while bye.starts_with("SIP/2.0 ") {
        bye = raw.receive().expect("a BYE");
    }
    assert!(bye.starts_with("BYE "), "{bye}");
    assert_eq!(header(&bye, "Call-ID"), Some("late2"));
}

#[test]
fn sdes_srtp_offer_is_answered_with_savp_and_the_audio_decrypts_with_the_answers_key() {
    require_command("sipp");
    let flows = test_flows();
    let platform = ivr_platform(&flows);
    let raw = RawSip::new(platform.sip);
    let audio = rtp_socket();
    let ours = offer_crypto();
    let offer = sdp(
        port(&audio),
        &format!(
            "m=audio RTP_PORT RTP/SAVP 0\r\na={}\r\na={}\r\n",
            crypto_attribute_format(&ours[0]),
            crypto_attribute_format(&ours[1])
        ),
    );
    let uri = format!("sip:800@{}", platform.sip);
    let ok = final_response(&raw, &invite(&raw, &uri, "srtp1", "application/sdp", &offer));
    assert_eq!(status_of(&ok), Some(200), "{ok}\n{}", platform.log());
    let answer = body(&ok);
    assert_eq!(m_lines(answer), ["m=audio PORT RTP/SAVP 0"], "{ok}");
    let crypto = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .expect("a=crypto in the answer");
    let theirs = crypto_attribute_parse(crypto).expect("a=crypto parses");
    let keys: SrtpKeys = media::sdes::keys_from_answer(&ours, &theirs).expect("keys agree");
    raw.socket
        .send_to(
            in_dialog(&raw, &ok, "ACK", 1, "srtp1", None).as_bytes(),
            platform.sip,
        )
        .expect("ack");
    let mut packet = first_packet(&audio).expect("SRTP from the IVR");
    // We receive with the key the gateway wrote in its answer.
    let (_, mut receiver) = keys.contexts();
    let len = receiver
        .unprotect_rtp(&mut packet)
        .expect("decrypts with the answer's key");
    assert!(len > 12, "an RTP packet with audio");
    hang_up(&raw, &ok, "srtp1");
}

#[test]
fn whitespace_around_tag_parameter_is_a_tag_rfc4475_wsinv() {
    require_command("sipp");
    let platform = Platform::start(limits());
    let raw = RawSip::new(platform.sip);
    let l = raw.local();
    let t = platform.sip;
    let options = format!(
        "OPTIONS sip:ping@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKws1\r\nMax-Forwards: 70\r\n\
From: \"J Rosenberg \\\\\\\"\" <sip:jdrosen@example.com>\r\n    ;\r\n    tag = 98asjd8\r\n\
To: <sip:ping@{t}>;tag=existing\r\nCall-ID: ws1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let response = raw.exchange(options.as_bytes()).unwrap_or_default();
    assert_eq!(status_of(&response), Some(200), "{response}\n{}", platform.log());
    // A To that already has a tag keeps it and gets no second one.
    let to = header(&response, "To").unwrap_or_default();
    assert_eq!(to.matches("tag").count(), 1, "{to}");
}

/// An agent configured for late offer, in queue `sales`; route 801 queues there.
fn late_offer_agent() -> String {
    format!(
        "{}[[sip.user]]\nname = \"1001\"\npassword = \"agent1001\"\nlate_offer = true\n\n[[acd.queues]]\nid = \"sales\"\noffer_timeout_secs = 10\n\n[[acd.agents]]\nid = \"1001\"\nqueues = [{{ queue = \"sales\", rank = 1 }}]\n[[route]]\nnumber = \"801\"\nqueue = \"sales\"\n",
        limits()
    )
}

#[test]
fn a_forwarded_late_offer_gets_the_callees_offer_and_the_callers_answer_rides_in_our_ack() {
    require_command("sipp");
    // The callee checks the INVITE has no body, offers PCMA first, checks the ACK answers PCMA, hangs up.
    let callee = SippServer::start("uas_late_offer.xml", 1);
    let platform = Platform::start(&format!(
        "{}[[route]]\nnumber = \"900\"\nforward = \"sip:uas@127.0.0.1:{}\"\n",
        limits(),
        callee.port
    ));
    // The caller sends no offer, checks the 200 offers PCMA and answers it in its ACK.
    let run = uac(&platform, "uac_late_offer_wait_bye.xml", "900", 1, &[]);
    run.assert_succeeded(1, &platform);
    assert_eq!(
        callee.wait(),
        Some(0),
        "the callee got an INVITE without SDP and, in the ACK, the answer the caller gave\n{}",
        platform.log()
    );
}

#[test]
fn an_agents_phone_set_to_late_offer_is_rung_without_sdp_and_our_answer_rides_in_the_ack() {
    require_command("sipp");
    // The phone checks the INVITE has no body, offers PCMA first, checks the ACK answers PCMA, hangs up.
    let agent_phone = SippServer::start("uas_late_offer.xml", 1);
    let platform = Platform::start(&late_offer_agent());
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let run = uac(&platform, "uac_wait_bye.xml", "801", 1, &[]);
    run.assert_succeeded(1, &platform);
    assert_eq!(
        agent_phone.wait(),
        Some(0),
        "the phone got an INVITE without SDP and an ACK with the answer\n{}",
        platform.log()
    );
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    assert!(i.kinds().iter().any(|k| k == "answered"), "{:?}", i.kinds());
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
    assert_eq!(i.row.ended_by.as_deref(), Some("agent"), "{:?}", i.row);
}

#[test]
fn a_trunk_set_to_late_offer_gets_an_invite_without_sdp_from_an_ivr_transfer_and_the_answer_in_the_ack() {
    require_command("sipp");
    let flows = test_flows();
    let carrier = SippServer::start("uas_late_offer.xml", 1);
    let platform = Platform::start_with_flows(
        &format!(
            "{}[[route]]\nnumber = \"800\"\nivr = \"main\"\n[desk]\noutbound_trunk = \"carrier\"\n[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{}\"\nlate_offer = true\n",
            limits(),
            carrier.port
        ),
        flows.path(),
    );
    // The caller presses 2 (transfer to an outside number) and waits for the carrier's BYE.
    let run = uac(&platform, "uac_dtmf_2_wait_bye.xml", "800", 1, &[]);
    run.assert_succeeded(1, &platform);
    assert_eq!(
        carrier.wait(),
        Some(0),
        "the carrier got an INVITE without SDP and an ACK with the answer\n{}",
        platform.log()
    );
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    assert!(i.kinds().iter().any(|k| k == "transferred"), "{:?}", i.kinds());
    assert_eq!(
        i.row.end_reason.as_deref(),
        Some("the transferred-to party hung up")
    );
}

#[test]
fn a_late_offer_phone_whose_200_offers_nothing_usable_gets_an_ack_and_then_a_bye() {
    require_command("sipp");
    // The phone offers only G.729: it must see the ACK of its 200 and then our BYE.
    let agent_phone = SippServer::start("uas_late_offer_unusable.xml", 1);
    let platform = Platform::start(&late_offer_agent());
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let run = uac(&platform, "uac", "801", 1, &["-d", "4000"]);
    assert_eq!(
        agent_phone.wait(),
        Some(0),
        "ACK then BYE for an unusable late offer\n{}\n{}",
        run.output,
        platform.log()
    );
    // The caller, still queued, hangs up after 4 s; the agent never answered it.
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    assert!(!i.kinds().iter().any(|k| k == "answered"), "{:?}", i.kinds());
}
