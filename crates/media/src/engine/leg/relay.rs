//! What a leg sends that is not its own playback: a partner's packet relayed out of this leg's socket
//! (the hot path: no allocation, no await), and a locally made frame (a monitored call's mix).

use super::{LOCAL_PACKET_MAX, LegShared, MAX_DATAGRAM, PartnerLink};
use crate::g711::G711;
use crate::mixer::{Frame, encode_frame};
use crate::rtp::rewrite_header;
use crate::stream::{Millis, SourceHeader};

/// Relays one received packet out of the partner's socket (the hot path: no allocation, no await).
#[allow(clippy::too_many_arguments)]
pub(super) fn relay(
    partner: &PartnerLink,
    buf: &mut [u8; MAX_DATAGRAM],
    len: usize,
    payload_offset: usize,
    payload_len: usize,
    header: SourceHeader,
    is_event: bool,
    from_law: G711,
    now: Millis,
) -> bool {
    if !partner.state().relays(partner.me, partner.partner) {
        return false; // on hold, muted, or the partner hears a mix
    }
    let target = &partner.leg;
    let mut out = target.out.lock();
    let payload_type = if is_event {
        match out.telephone_event {
            Some(pt) => pt,
            None => return false,
        }
    } else {
        out.payload_type
    };
    let Some(remote) = out.relay_target(now, &target.engine.metrics) else {
        return false;
    };
    let samples = if is_event { 0 } else { payload_len as u32 };
    let stamp = out.stream.stamp_relayed(now, header, samples, payload_len);
    let ssrc = out.stream.ssrc();
    let to_law = out.law;
    let Some(datagram) = buf.get_mut(..len) else {
        return false;
    };
    if rewrite_header(datagram, payload_type, stamp.sequence, stamp.timestamp, ssrc).is_err() {
        return false;
    }
    if stamp.marker {
        datagram[1] |= 0x80; // the header is at least 12 bytes: rewrite_header checked
    }
    if !is_event
        && from_law != to_law
        && let Some(payload) = datagram.get_mut(payload_offset..payload_offset + payload_len)
    {
        from_law.transcode_in_place(to_law, payload);
    }
    let Some(len) = out.protect_rtp(buf, len) else {
        return false;
    };
    drop(out);
    target
        .rtp()
        .try_send_to(buf.get(..len).unwrap_or(&[]), remote)
        .is_ok()
}

/// Sends one locally made 20 ms frame (a monitored call's mix) to `leg`'s peer in the leg's law, continuing its
/// outgoing stream. Nothing is sent while the leg plays a prompt or music, or does not send; false then.
pub(crate) fn send_local_frame(leg: &LegShared, frame: &Frame, now: Millis) -> bool {
    let mut out = leg.out.lock();
    let Some(remote) = out.relay_target(now, &leg.engine.metrics) else {
        return false;
    };
    let payload = encode_frame(out.law, frame);
    let mut packet = [0u8; LOCAL_PACKET_MAX];
    let written = out.write_local_frame(now, &payload, &mut packet);
    drop(out);
    match written {
        Some(len) => leg
            .rtp()
            .try_send_to(packet.get(..len).unwrap_or(&[]), remote)
            .is_ok(),
        None => false,
    }
}
