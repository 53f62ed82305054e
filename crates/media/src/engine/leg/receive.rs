//! A leg's RTP socket read in batches with one `recvmmsg`: a batch smaller than asked means the queue
//! is empty, so the socket's readiness is cleared then and there. Reading one datagram at a time took
//! a second receive per packet only to learn that nothing else was queued (at 50 packets a second a
//! leg almost always finds one).

use super::MAX_DATAGRAM;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use std::cell::RefCell;
use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one read takes at most. More than one is queued only after the leg waited for a core.
pub(super) const RECEIVE_BATCH: usize = 4;

/// Where a batch lands: the datagrams and, for each, its length and sender.
pub(super) struct ReceiveBatch {
    pub(super) datagrams: [[u8; MAX_DATAGRAM]; RECEIVE_BATCH],
    pub(super) received: [(usize, Option<SocketAddr>); RECEIVE_BATCH],
}

impl ReceiveBatch {
    /// An empty batch; kept in the leg's task, beside the rest of its state (a box of its own would
    /// be one more place in memory each packet touches).
    pub(super) fn new() -> Self {
        Self {
            datagrams: [[0; MAX_DATAGRAM]; RECEIVE_BATCH],
            received: [(0, None); RECEIVE_BATCH],
        }
    }
}

thread_local! {
    /// The message headers `recvmmsg` fills, one set per worker thread (they hold raw pointers, so
    /// they cannot live in a task that moves between threads; made per read they cost two
    /// allocations per packet).
    static HEADERS: RefCell<MultiHeaders<SockaddrStorage>> =
        RefCell::new(MultiHeaders::preallocate(RECEIVE_BATCH, None));
}

/// Reads what is queued on `socket`, up to [`RECEIVE_BATCH`] datagrams, into `batch`; how many were
/// read. Zero when nothing was queued. An error other than "nothing queued" is returned as it came.
pub(super) fn receive_batch(socket: &UdpSocket, batch: &mut ReceiveBatch) -> std::io::Result<usize> {
    let mut count = 0;
    let read = socket.try_io(Interest::READABLE, || {
        HEADERS.with_borrow_mut(|headers| {
            let ReceiveBatch { datagrams, received } = &mut *batch;
            let mut slices = datagrams.each_mut().map(|datagram| [IoSliceMut::new(datagram)]);
            let messages = recvmmsg(
                socket.as_raw_fd(),
                headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )?;
            for (slot, message) in received.iter_mut().zip(messages) {
                *slot = (message.bytes, message.address.as_ref().and_then(std_address));
                count += 1;
            }
            // Fewer than asked: the queue is empty, and saying so lets the runtime clear the
            // readiness without another receive.
            if count < RECEIVE_BATCH {
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        })
    });
    match read {
        Ok(()) => Ok(count),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(count),
        Err(error) => Err(error),
    }
}

fn std_address(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_reads_what_is_queued_in_order_with_each_sender_and_then_reports_empty() {
        let leg = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = leg.local_addr().unwrap();
        let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Six datagrams: more than one batch.
        for k in 0..6u8 {
            let from = if k % 2 == 0 { &first } else { &second };
            from.send_to(&[k; 12][..usize::from(k) + 1], target)
                .await
                .unwrap();
        }
        let mut batch = ReceiveBatch::new();
        let mut seen = Vec::new();
        while seen.len() < 6 {
            leg.readable().await.unwrap();
            let count = receive_batch(&leg, &mut batch).unwrap();
            for (datagram, (len, from)) in batch.datagrams.iter().zip(batch.received).take(count) {
                seen.push((datagram[..len].to_vec(), from.unwrap()));
            }
        }
        for (k, (bytes, from)) in seen.iter().enumerate() {
            assert_eq!(bytes, &vec![k as u8; k + 1]);
            let sender = if k % 2 == 0 { &first } else { &second };
            assert_eq!(*from, sender.local_addr().unwrap());
        }
        // Nothing left: no datagram, no error, and the readiness is cleared (the next read waits).
        assert_eq!(receive_batch(&leg, &mut batch).unwrap(), 0);
        second.send_to(b"late", target).await.unwrap();
        leg.readable().await.unwrap();
        assert_eq!(receive_batch(&leg, &mut batch).unwrap(), 1);
        assert_eq!(&batch.datagrams[0][..4], b"late");
    }

    #[tokio::test]
    async fn ipv6_senders_are_named_too() {
        let Ok(leg) = UdpSocket::bind("[::1]:0").await else {
            return; // no IPv6 loopback on this machine
        };
        let from = UdpSocket::bind("[::1]:0").await.unwrap();
        from.send_to(b"v6", leg.local_addr().unwrap()).await.unwrap();
        let mut batch = ReceiveBatch::new();
        leg.readable().await.unwrap();
        assert_eq!(receive_batch(&leg, &mut batch).unwrap(), 1);
        assert_eq!(batch.received[0], (2, Some(from.local_addr().unwrap())));
    }
}
