//! Who may send media to a leg, and how much a leg may send before its dialog is confirmed.
//!
//! Two attacks shape these rules (both seen against a node, not hypothetical):
//! - **RTP hijack**: a leg that latches onto the first packet from *anyone* hands the call's audio to a
//!   stranger who sprays the port range right after a call is answered. [`SourceGate`] accepts media only from
//!   the address the remote SDP names or, for a phone behind NAT, from the IP its SIP signalling came from
//!   ([`LatchPolicy::signalling_ip`], any port: NAT rewrites it). The first valid packet from such a source
//!   latches the leg for this offer/answer; nobody can take the latch over later. A re-offer keeps the latch
//!   unless its SDP names a different address. RTCP follows the same rules with its own latch.
//! - **Reflection**: an INVITE carrying a victim's address in its SDP and never acknowledged would make the
//!   node stream audio at the victim. [`SendBudget`] lets a leg whose dialog is not yet confirmed send at most a
//!   configured number of packets within a configured time ([`UnconfirmedSendLimit`]); then nothing more
//!   until [`SendBudget::confirm`].
//!
//! Both are pure: addresses and times (milliseconds on the owner's clock) come in as arguments.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where media may come from besides the address in the remote SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LatchPolicy {
    /// The source IP of the dialog's SIP signalling: a phone behind NAT sends its media from that IP, from a
    /// port NAT chose. `None`: only the SDP's exact address is accepted.
    pub signalling_ip: Option<IpAddr>,
}

impl LatchPolicy {
    /// Media only from the exact address (IP and port) the SDP names.
    pub fn sdp_only() -> Self {
        Self::default()
    }

    /// Media from the SDP's address, and from any port of the signalling source's IP when it is known.
    pub fn for_signalling_source(source: Option<SocketAddr>) -> Self {
        match source {
            Some(source) => Self::with_signalling_ip(source.ip()),
            None => Self::sdp_only(),
        }
    }

    /// Media from the SDP's address, or from any port of `ip` (the signalling source, for NAT).
    pub fn with_signalling_ip(ip: IpAddr) -> Self {
        Self {
            signalling_ip: Some(ip),
        }
    }
}

/// What [`SourceGate`] says of one datagram's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// From the latched peer.
    Latched,
    /// From an allowed source while nothing is latched: latch it with [`SourceGate::latch_rtp`] once the
    /// packet proves valid.
    Candidate,
    /// From anyone else: count and drop.
    Foreign,
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Whether two socket addresses are the same, an IPv4-mapped IPv6 address equal to its IPv4 form.
pub(crate) fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && same_ip(a.ip(), b.ip())
}

/// The RTP and RTCP source rules of one leg for the current offer/answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceGate {
    /// The RTP address of the remote SDP (the last one that named an address).
    sdp: Option<SocketAddr>,
    policy: LatchPolicy,
    rtp: Option<SocketAddr>,
    rtcp: Option<SocketAddr>,
}

impl SourceGate {
    /// A gate that admits nobody until [`SourceGate::renegotiate`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an offer/answer: `sdp` is the remote RTP address it names (`None` for a null address, as in
    /// hold). A different address clears both latches (the peer moved); the same address or none keeps them.
    /// Returns whether the latches were cleared.
    pub fn renegotiate(&mut self, sdp: Option<SocketAddr>, policy: LatchPolicy) -> bool {
        self.policy = policy;
        let Some(sdp) = sdp else { return false };
        if self.sdp.is_some_and(|known| same_addr(known, sdp)) {
            return false;
        }
        self.sdp = Some(sdp);
        let had_latch = self.rtp.is_some() || self.rtcp.is_some();
        self.rtp = None;
        self.rtcp = None;
        had_latch
    }

    fn allowed_before_latch(&self, from: SocketAddr) -> bool {
        self.sdp.is_some_and(|sdp| same_addr(sdp, from))
            || self.policy.signalling_ip.is_some_and(|ip| same_ip(ip, from.ip()))
    }

    /// Judges an RTP datagram's source (the hot path: one comparison once latched).
    pub fn admit_rtp(&self, from: SocketAddr) -> Admission {
        match self.rtp {
            Some(peer) if peer == from || same_addr(peer, from) => Admission::Latched,
            Some(_) => Admission::Foreign,
            None if self.allowed_before_latch(from) => Admission::Candidate,
            None => Admission::Foreign,
        }
    }

    /// Latches RTP onto `from` if nothing is latched and `from` is allowed; true if it latched now.
    pub fn latch_rtp(&mut self, from: SocketAddr) -> bool {
        if self.rtp.is_some() || !self.allowed_before_latch(from) {
            return false;
        }
        self.rtp = Some(from);
        true
    }

    /// Judges an RTCP datagram's source, latching RTCP on the first allowed one: the SDP's RTCP address
    /// (RTP port + 1), any port of the signalling IP, or any port of the latched RTP peer's IP (NAT maps the
    /// RTCP port apart from the RTP port). True if the datagram may be used.
    pub fn admit_rtcp(&mut self, from: SocketAddr) -> bool {
        if let Some(peer) = self.rtcp {
            return same_addr(peer, from);
        }
        let sdp_rtcp = self
            .sdp
            .and_then(|a| Some(SocketAddr::new(a.ip(), a.port().checked_add(1)?)));
        let allowed = sdp_rtcp.is_some_and(|a| same_addr(a, from))
            || self.policy.signalling_ip.is_some_and(|ip| same_ip(ip, from.ip()))
            || self.rtp.is_some_and(|peer| same_ip(peer.ip(), from.ip()));
        if allowed {
            self.rtcp = Some(from);
        }
        allowed
    }

    /// The latched RTP peer.
    pub fn rtp_peer(&self) -> Option<SocketAddr> {
        self.rtp
    }

    /// Where our RTCP goes: the latched RTCP peer, else port + 1 of the latched RTP peer or of the SDP address.
    pub fn rtcp_target(&self) -> Option<SocketAddr> {
        self.rtcp.or_else(|| {
            let rtp = self.rtp.or(self.sdp)?;
            Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?))
        })
    }

    /// The remote SDP's RTP address.
    pub fn sdp_address(&self) -> Option<SocketAddr> {
        self.sdp
    }
}

/// How much a leg may send towards its peer before the dialog is confirmed (the ACK of the INVITE arrived):
/// enough for a greeting to start while the ACK is on its way, too little to make the node a useful reflector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnconfirmedSendLimit {
    /// At most this many datagrams (RTP and RTCP).
    pub packets: u32,
    /// And only within this long after the first of them.
    pub duration: Duration,
}

impl Default for UnconfirmedSendLimit {
    /// 2 s of 20 ms audio: the ACK normally follows the 200 within one round trip, and within 1.5 s plus a
    /// round trip even when the first two 200s are lost (RFC 3261 T1 = 500 ms retransmissions).
    fn default() -> Self {
        Self {
            packets: 100,
            duration: Duration::from_secs(2),
        }
    }
}

/// Counts what a leg sends while its dialog is unconfirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendBudget {
    limit: UnconfirmedSendLimit,
    confirmed: bool,
    spent: u32,
    first_send_ms: Option<i64>,
}

impl SendBudget {
    /// A leg whose dialog is not confirmed yet.
    pub fn unconfirmed(limit: UnconfirmedSendLimit) -> Self {
        Self {
            limit,
            confirmed: false,
            spent: 0,
            first_send_ms: None,
        }
    }

    /// The dialog is confirmed: sending is unlimited from now on.
    pub fn confirm(&mut self) {
        self.confirmed = true;
    }

    /// Whether [`SendBudget::confirm`] was called.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Whether one more datagram may be sent at `now_ms`; counts it if so.
    pub fn try_spend(&mut self, now_ms: i64) -> bool {
        if self.confirmed {
            return true;
        }
        let first = *self.first_send_ms.get_or_insert(now_ms);
        let window_ms = i64::try_from(self.limit.duration.as_millis()).unwrap_or(i64::MAX);
        if self.spent >= self.limit.packets || now_ms.saturating_sub(first) > window_ms {
            return false;
        }
        self.spent += 1;
        true
    }

    /// Datagrams sent while unconfirmed.
    pub fn spent(&self) -> u32 {
        self.spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_sdp_address_is_admitted_without_a_signalling_ip() {
        let mut gate = SourceGate::new();
        assert_eq!(
            gate.admit_rtp(addr("10.0.0.1:4000")),
            Admission::Foreign,
            "nothing before SDP"
        );
        gate.renegotiate(Some(addr("10.0.0.1:4000")), LatchPolicy::sdp_only());
        assert_eq!(gate.admit_rtp(addr("10.0.0.1:4000")), Admission::Candidate);
        assert_eq!(gate.admit_rtp(addr("10.0.0.1:4002")), Admission::Foreign);
        assert_eq!(gate.admit_rtp(addr("10.0.0.9:4000")), Admission::Foreign);
        assert!(!gate.latch_rtp(addr("10.0.0.9:4000")), "a stranger never latches");
        assert!(gate.latch_rtp(addr("10.0.0.1:4000")));
        assert_eq!(gate.admit_rtp(addr("10.0.0.1:4000")), Admission::Latched);
    }

    #[test]
    fn behind_nat_any_port_of_the_signalling_ip_may_latch_once() {
        let mut gate = SourceGate::new();
        let policy = LatchPolicy::with_signalling_ip("203.0.113.5".parse().unwrap());
        gate.renegotiate(Some(addr("192.168.1.20:4000")), policy);
        assert_eq!(gate.admit_rtp(addr("203.0.113.5:61000")), Admission::Candidate);
        assert!(gate.latch_rtp(addr("203.0.113.5:61000")));
        // Another port of the same IP (or the private address) cannot take the latch over.
        assert_eq!(gate.admit_rtp(addr("203.0.113.5:61002")), Admission::Foreign);
        assert!(!gate.latch_rtp(addr("203.0.113.5:61002")));
        assert_eq!(gate.rtp_peer(), Some(addr("203.0.113.5:61000")));
    }

    #[test]
    fn a_reoffer_keeps_the_latch_unless_the_address_changes() {
        let mut gate = SourceGate::new();
        let policy = LatchPolicy::sdp_only();
        gate.renegotiate(Some(addr("10.0.0.1:4000")), policy);
        assert!(gate.latch_rtp(addr("10.0.0.1:4000")));
        assert!(
            !gate.renegotiate(Some(addr("10.0.0.1:4000")), policy),
            "same address"
        );
        assert!(!gate.renegotiate(None, policy), "hold with a null address");
        assert_eq!(gate.rtp_peer(), Some(addr("10.0.0.1:4000")));
        assert!(
            gate.renegotiate(Some(addr("10.0.0.2:5000")), policy),
            "the peer moved"
        );
        assert_eq!(gate.admit_rtp(addr("10.0.0.1:4000")), Admission::Foreign);
        assert_eq!(gate.admit_rtp(addr("10.0.0.2:5000")), Admission::Candidate);
    }

    #[test]
    fn rtcp_latches_on_its_own_from_an_allowed_source() {
        let mut gate = SourceGate::new();
        gate.renegotiate(Some(addr("10.0.0.1:4000")), LatchPolicy::sdp_only());
        assert!(!gate.admit_rtcp(addr("10.0.0.9:4001")));
        assert!(
            !gate.admit_rtcp(addr("10.0.0.1:7777")),
            "not the SDP's RTCP port, no RTP latched"
        );
        assert_eq!(gate.rtcp_target(), Some(addr("10.0.0.1:4001")));
        assert!(gate.latch_rtp(addr("10.0.0.1:4000")));
        assert!(gate.admit_rtcp(addr("10.0.0.1:7777")), "the latched peer's IP");
        assert!(!gate.admit_rtcp(addr("10.0.0.1:4001")), "latched on 7777");
        assert_eq!(gate.rtcp_target(), Some(addr("10.0.0.1:7777")));
    }

    #[test]
    fn ipv4_mapped_sources_match_ipv4_sdp_addresses() {
        let mut gate = SourceGate::new();
        gate.renegotiate(Some(addr("10.0.0.1:4000")), LatchPolicy::sdp_only());
        assert_eq!(
            gate.admit_rtp(addr("[::ffff:10.0.0.1]:4000")),
            Admission::Candidate
        );
    }

    #[test]
    fn the_budget_stops_at_its_packet_count_or_its_time_until_confirmed() {
        let limit = UnconfirmedSendLimit {
            packets: 3,
            duration: Duration::from_millis(100),
        };
        let mut budget = SendBudget::unconfirmed(limit);
        assert!(budget.try_spend(1000) && budget.try_spend(1020) && budget.try_spend(1040));
        assert!(!budget.try_spend(1060), "packets spent");
        let mut budget = SendBudget::unconfirmed(limit);
        assert!(budget.try_spend(1000));
        assert!(!budget.try_spend(1101), "time spent");
        budget.confirm();
        assert!((0..1000).all(|i| budget.try_spend(2000 + i)));
        assert_eq!(budget.spent(), 1);
    }

    proptest! {
        #[test]
        fn once_latched_no_other_source_is_ever_admitted(
            sources in proptest::collection::vec((0u8..4, 4000u16..4004), 1..40),
            signalling in proptest::option::of(0u8..4),
        ) {
            let policy = match signalling {
                Some(last) => LatchPolicy::with_signalling_ip(IpAddr::from([10, 0, 0, last])),
                None => LatchPolicy::sdp_only(),
            };
            let mut gate = SourceGate::new();
            gate.renegotiate(Some(addr("10.0.0.1:4000")), policy);
            let mut latched: Option<SocketAddr> = None;
            for (last, port) in sources {
                let from = SocketAddr::from(([10, 0, 0, last], port));
                let admission = gate.admit_rtp(from);
                if gate.latch_rtp(from) {
                    prop_assert!(latched.is_none());
                    prop_assert_eq!(admission, Admission::Candidate);
                    latched = Some(from);
                }
                if let Some(peer) = latched {
                    prop_assert_eq!(gate.admit_rtp(from) == Admission::Latched, from == peer);
                }
            }
        }

        #[test]
        fn an_unconfirmed_leg_never_sends_more_than_its_limit(
            steps in proptest::collection::vec(0i64..50, 0..500),
            packets in 0u32..200,
        ) {
            let mut budget = SendBudget::unconfirmed(UnconfirmedSendLimit {
                packets,
                duration: Duration::from_millis(1000),
            });
            let mut now = 0;
            let mut sent = 0u32;
            for step in steps {
                now += step;
                if budget.try_spend(now) {
                    sent += 1;
                    prop_assert!(now <= 1000 + steps_first(&budget));
                }
            }
            prop_assert!(sent <= packets);
        }
    }

    fn steps_first(budget: &SendBudget) -> i64 {
        budget.first_send_ms.unwrap_or(0)
    }
}
