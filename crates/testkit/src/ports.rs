//! Free ports for test peers, chosen where nothing else on the machine takes them by itself.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above a platform's default RTP range (20000-20999).
const LOW: u32 = 21_000;
/// Ports handed out span 21000-32763, below the kernel's ephemeral range (32768-60999 by default).
const SPAN: u32 = 11_764;

/// A port that was free a moment ago on both UDP and TCP on 127.0.0.1.
///
/// Not from the kernel's ephemeral range: every outgoing connection of any process takes a port
/// from there at any moment, and could take this one between the check and its user's bind (a
/// node's SIP port was lost that way). Each pick moves on by four from a random start per process,
/// so one pick's neighbours (a SIPp media port's RTCP and video ports) are never another pick's.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    loop {
        let offset = NEXT.fetch_add(4, Ordering::Relaxed) % SPAN / 4 * 4;
        let Ok(port) = u16::try_from(LOW + offset) else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_even_outside_the_ephemeral_range_and_differ() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((21_000..32_768).contains(&p), "{p}");
            assert_eq!(p % 2, 0, "{p}");
        }
    }
}
