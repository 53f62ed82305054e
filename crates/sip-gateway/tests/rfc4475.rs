//! RFC 4475 (SIP torture test messages) against the gateway's guard, one test per message: every
//! valid message of §3.1.1 is passed to the stack in a form it parses, every invalid one of §3.1.2 is
//! answered or dropped as the RFC says. The messages are written here from the RFC's descriptions (line
//! breaks are CRLF; `Content-Length` is computed so that only the property under test is broken).

use sip_gateway::guard::{RejectReason, ScreenLimits, Screened, screen};

/// Turns `\n` into CRLF and fills `CONTENT_LENGTH` with the body's length.
fn message(text: &str) -> Vec<u8> {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let head = head.replace("CONTENT_LENGTH", &body.len().to_string());
    format!("{head}\r\n\r\n{body}").into_bytes()
}

fn screened(text: &str) -> Screened {
    screen(
        &message(text),
        ScreenLimits {
            max_message_bytes: 65_000,
            max_headers: 100,
        },
        "gw",
    )
}

/// Valid: handed to the stack as it is or unfolded, and the stack's parser takes it.
fn accepted(text: &str) {
    match screened(text) {
        Screened::Pass => {
            assert!(rsipstack::sip::SipMessage::try_from(message(text).as_slice()).is_ok());
        }
        Screened::Rewrite(bytes) => {
            assert!(
                rsipstack::sip::SipMessage::try_from(bytes.as_slice()).is_ok(),
                "rewritten but unparseable:\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        other => panic!("valid message refused: {other:?}"),
    }
}

/// Invalid request: answered with `code`.
fn answered(text: &str, code: u16) {
    match screened(text) {
        Screened::Respond { response, .. } => {
            let status = std::str::from_utf8(&response[8..11]).unwrap_or_default();
            assert_eq!(status, code.to_string(), "{}", String::from_utf8_lossy(&response));
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// Invalid response (or nothing to answer to): dropped.
fn dropped(text: &str) {
    assert!(
        matches!(screened(text), Screened::Drop(_)),
        "{:?}",
        screened(text)
    );
}

const SDP: &str = "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\nt=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n";

// ------------------------------------------------------------------ §3.1.1 valid messages

#[test]
fn wsinv_short_tortuous_invite() {
    accepted(&format!(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : CONTENT_LENGTH
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{SDP}"
    ));
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    // Well-formed; the method is unknown here, so the answer is 501 with the lines copied.
    answered(
        "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{505c}\u{96fb}
Content-Length: 0

",
        501,
    );
}

#[test]
fn esc01_escaped_characters_in_uris() {
    accepted(&format!(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: CONTENT_LENGTH

{SDP}"
    ));
}

#[test]
fn escnull_escaped_nulls_in_uris() {
    accepted(
        "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
    );
}

#[test]
fn esc02_use_of_percent_when_it_is_not_an_escape() {
    // RE%47IST%45R is not REGISTER (methods are not unescaped): 501, as the RFC says.
    answered(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

",
        501,
    );
}

#[test]
fn lwsdisp_no_lws_between_display_name_and_laquot() {
    accepted(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
    );
}

#[test]
fn longreq_long_values_in_header_fields() {
    let long = "longvalue".repeat(100);
    let vias: String = (0..34)
        .map(|i| format!("Via: SIP/2.0/TCP sip{i}.example.com;branch=z9hG4bK{i}{long}\n"))
        .collect();
    accepted(&format!(
        "INVITE sip:user@example.com SIP/2.0
To: \"I have a user name of {long}\" <sip:user@example.com>
From: sip:amazinglylongcallername{long}@example.net;tag=12982424{long};unknownheaderparam{long}=unknowheaderparamvalue{long}
Call-ID: longreq.one{long}
Max-Forwards: 70
CSeq: 3882340 INVITE
Unknown-{long}-{long}: unknown-{long}
{vias}Contact: <sip:amazinglylongcallername{long}@host5.example.net>
Content-Type: application/sdp
l: CONTENT_LENGTH

{SDP}"
    ));
}

#[test]
fn dblreq_extra_trailing_octets_in_a_udp_datagram() {
    let register = "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0

";
    let invite = "INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 0

";
    // The second request is surplus bytes of the first datagram: ignored (RFC 3261 §18.3).
    let bytes = [message(register), message(invite)].concat();
    match screen(&bytes, ScreenLimits::default(), "gw") {
        Screened::Rewrite(out) => {
            assert_eq!(out, message(register));
        }
        other => panic!("expected the REGISTER alone, got {other:?}"),
    }
}

#[test]
fn semiuri_semicolon_separated_parameters_in_uri_user_part() {
    accepted(
        "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
    );
}

#[test]
fn transports_variety_of_transport_types() {
    accepted(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

",
    );
}

#[test]
fn mpart01_multipart_message() {
    accepted(
        "MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=
Contact: <sip:fluffy@127.0.0.1:5070>
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: CONTENT_LENGTH

--7a9cbec02ceef655
Content-Type: text/plain
Content-Transfer-Encoding: binary

Hello
--7a9cbec02ceef655
Content-Type: application/octet-stream
Content-Transfer-Encoding: binary

0R\u{1}\u{2}abc
--7a9cbec02ceef655--
",
    );
}

#[test]
fn unreason_unusual_reason_phrase() {
    accepted(
        "SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: CONTENT_LENGTH
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.198
s=-
c=IN IP4 192.0.2.198
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
",
    );
}

#[test]
fn noreason_empty_reason_phrase() {
    accepted(
        "SIP/2.0 100 
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
}

// ------------------------------------------------------------------ §3.1.2 invalid messages

const INVITE_TAIL: &str = "Max-Forwards: 70
Call-ID: CALLID
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: CONTENT_LENGTH

";

fn invite_with(start: &str, from_to: &str, call_id: &str) -> String {
    format!(
        "{start}\n{from_to}{}{SDP}",
        INVITE_TAIL.replace("CALLID", call_id)
    )
}

const FROM_TO: &str = "To: sip:user@example.com\nFrom: sip:caller@example.net;tag=134161461246\n";

#[test]
fn badinv01_extraneous_header_field_separators() {
    answered(
        &invite_with(
            "INVITE sip:user@example.com SIP/2.0",
            "To: sip:j.user@example.com\nFrom: sip:caller@example.net;tag=134161461246\nContact: \"Joe\" <sip:joe@example.org>;;;;\n",
            "badinv01.0ha0isndaksdjasdf3234nas",
        ),
        400,
    );
}

#[test]
fn clerr_content_length_larger_than_message() {
    let text = invite_with(
        "INVITE sip:user@example.com SIP/2.0",
        FROM_TO,
        "clerr.0ha0isndaksdjweiafasdk3",
    )
    .replace("Content-Length: CONTENT_LENGTH", "Content-Length: 9999");
    answered(&text, 400);
}

#[test]
fn ncl_negative_content_length() {
    let text = invite_with(
        "INVITE sip:user@example.com SIP/2.0",
        FROM_TO,
        "ncl.0ha0isndaksdj2193423r542w35",
    )
    .replace("Content-Length: CONTENT_LENGTH", "Content-Length: -999");
    answered(&text, 400);
}

#[test]
fn scalar02_request_scalar_fields_with_overlarge_values() {
    answered(
        "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

",
        400,
    );
}

#[test]
fn scalarlg_response_scalar_fields_with_overlarge_values() {
    dropped(
        "SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

",
    );
}

#[test]
fn quotbal_unterminated_quoted_string_in_display_name() {
    answered(
        &invite_with(
            "INVITE sip:user@example.com SIP/2.0",
            "To: \"Mr. J. User <sip:j.user@example.com>\nFrom: sip:caller@example.net;tag=93334\n",
            "quotbal.aksdj",
        ),
        400,
    );
}

#[test]
fn ltgtruri_request_uri_enclosed_in_angle_brackets() {
    answered(
        &invite_with(
            "INVITE <sip:user@example.com> SIP/2.0",
            FROM_TO,
            "ltgtruri.1@192.0.2.5",
        ),
        400,
    );
}

#[test]
fn lwsruri_request_uri_with_embedded_whitespace() {
    answered(
        &invite_with(
            "INVITE sip:user@example.com; lr SIP/2.0",
            FROM_TO,
            "lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423",
        ),
        400,
    );
}

#[test]
fn lwsstart_multiple_spaces_in_request_line() {
    answered(
        &invite_with(
            "INVITE  sip:user@example.com  SIP/2.0",
            FROM_TO,
            "lwsstart.dfknq234oi243099adsdfnawe3@example.com",
        ),
        400,
    );
}

#[test]
fn trws_space_at_end_of_request_line() {
    answered(
        &invite_with(
            "OPTIONS sip:remote-target@example.com SIP/2.0  ",
            FROM_TO,
            "trws.oij4q3j4q3j4q3",
        )
        .replace("1 INVITE", "1 OPTIONS"),
        400,
    );
}

#[test]
fn escruri_escaped_headers_in_request_uri() {
    answered(
        &invite_with(
            "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
            FROM_TO,
            "escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5",
        ),
        400,
    );
}

#[test]
fn baddate_invalid_time_zone_in_date() {
    // The Date is not needed to process the request: RFC 4475 lets it through or answers 400.
    let text = invite_with(
        "INVITE sip:user@example.com SIP/2.0",
        FROM_TO,
        "baddate.239423mnsadf3j23lj42--sedfnm234",
    )
    .replace(
        "Max-Forwards: 70",
        "Max-Forwards: 70\nDate: Fri, 01 Jan 2010 16:00:00 EST",
    );
    accepted(&text);
}

#[test]
fn regbadct_name_addr_uri_with_parameters_not_enclosed() {
    // A URI with headers ('?') must be enclosed in <> (RFC 3261 §20.10): 400.
    answered(
        "REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

",
        400,
    );
}

#[test]
fn badaspec_spaces_within_addr_spec() {
    answered(
        &invite_with(
            "OPTIONS sip:user@example.org SIP/2.0",
            "To: sip:user@example.org\nFrom: <sip: caller@example.org:5060>;tag=38923n\n",
            "badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3",
        )
        .replace("1 INVITE", "3923239 OPTIONS"),
        400,
    );
}

#[test]
fn baddn_non_token_characters_in_display_name() {
    answered(
        &invite_with(
            "OPTIONS sip:t.watson@example.org SIP/2.0",
            "To: sip:t.watson@example.org\nFrom: Bell, Alexander <sip:a.g.bell@example.com>;tag=43\n",
            "baddn.31415@c.example.com",
        )
        .replace("1 INVITE", "3923239 OPTIONS"),
        400,
    );
}

#[test]
fn badvers_unknown_protocol_version() {
    answered(
        &invite_with(
            "OPTIONS sip:t.watson@example.org SIP/7.0",
            FROM_TO,
            "badvers.31415@c.example.com",
        )
        .replace("1 INVITE", "1 OPTIONS"),
        505,
    );
}

#[test]
fn mismatch01_start_line_and_cseq_method_mismatch() {
    answered(
        &invite_with(
            "OPTIONS sip:user@example.com SIP/2.0",
            FROM_TO,
            "mismatch01.dj0234sxdfl3",
        ),
        400,
    );
}

#[test]
fn mismatch02_unknown_method_with_cseq_method_mismatch() {
    let text = invite_with(
        "NEWMETHOD sip:user@example.com SIP/2.0",
        FROM_TO,
        "mismatch02.dj0234sxdfl3",
    );
    // RFC 4475 §3.1.2.18: 501 (method not supported) or 400 (mismatch) are both right.
    match screened(&text) {
        Screened::Respond { response, .. } => {
            let status = std::str::from_utf8(&response[8..11]).unwrap_or_default();
            assert!(status == "501" || status == "400", "{status}");
        }
        other => panic!("expected 400 or 501, got {other:?}"),
    }
}

#[test]
fn bigcode_overlarge_response_code() {
    dropped(
        "SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
}

#[test]
fn no_message_makes_the_guard_panic_when_cut_anywhere() {
    let text = message(&invite_with(
        "INVITE sip:user@example.com SIP/2.0",
        FROM_TO,
        "cut",
    ));
    for cut in 0..text.len() {
        let _ = screen(&text[..cut], ScreenLimits::default(), "gw");
    }
    let _ = RejectReason::Unparseable.label();
}
