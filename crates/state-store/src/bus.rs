//! Subscriptions of the event bus: live, best-effort fan-out of events (CTI, wallboard). A subscriber
//! sees what is published after it subscribed; nothing is stored for it. Durable delivery is the job
//! of the streams (`stream_*` on the store).

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSubStream;
use tokio::sync::broadcast;

/// A live subscription to one topic. Dropping it unsubscribes.
pub struct Subscription {
    topic: String,
    source: Source,
    missed: u64,
}

enum Source {
    Memory(broadcast::Receiver<Bytes>),
    Redis(PubSubStream),
}

impl Subscription {
    pub(crate) fn memory(topic: &str, rx: broadcast::Receiver<Bytes>) -> Self {
        Self {
            topic: topic.to_string(),
            source: Source::Memory(rx),
            missed: 0,
        }
    }

    pub(crate) fn redis(topic: &str, stream: PubSubStream) -> Self {
        Self {
            topic: topic.to_string(),
            source: Source::Redis(stream),
            missed: 0,
        }
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Messages this subscriber was too slow to receive (memory backend; Redis drops a client that
    /// falls too far behind instead, which ends the subscription).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The next message, or `None` once the subscription has ended (connection to Redis lost, or the
    /// store dropped): subscribe again to go on.
    pub async fn recv(&mut self) -> Option<Bytes> {
        match &mut self.source {
            Source::Memory(rx) => loop {
                match rx.recv().await {
                    Ok(payload) => return Some(payload),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.missed += n;
                        tracing::warn!(topic = %self.topic, missed = n, "event bus subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            Source::Redis(stream) => stream
                .next()
                .await
                .map(|msg| Bytes::copy_from_slice(msg.get_payload_bytes())),
        }
    }

    /// The subscription as a `Stream` of messages.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Bytes> + Send {
        futures_util::stream::unfold(self, |mut sub| async move { sub.recv().await.map(|m| (m, sub)) })
    }
}
