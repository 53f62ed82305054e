//! What one call task listens to: its channel (in-dialog requests handed over by the dispatcher) and
//! the SIP transactions it owns, which the task polls itself.
//!
//! A transaction only advances (retransmits, fires its timers, sends a response queued with
//! [`crate::b2bua::respond`]) while someone polls its `receive()`. A pump task per transaction did
//! that before: a spawn per transaction and a task switch per message on the way to the call. Here
//! the call task polls its few transactions directly, and once the call is over keeps polling them
//! ([`CallInputs::linger`]) until they end, so late retransmissions are still absorbed.

use crate::b2bua::{CallInput, TxId};
use futures_util::Stream;
use rsipstack::sip::SipMessage;
use rsipstack::transaction::transaction::{Transaction, TransactionEventSender};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a finished call keeps its transactions: 64 × T1, the longest any of them lives after
/// its final response (RFC 3261 Timer H / RFC 6026 Timer L).
pub(crate) const LINGER: Duration = Duration::from_secs(32);

/// One owned transaction as a stream of what it receives; its last item is `None` (it ended).
type Messages = Pin<Box<dyn Stream<Item = Option<SipMessage>> + Send>>;

/// A call task's inputs: see the module documentation.
pub(crate) struct CallInputs {
    channel: mpsc::UnboundedReceiver<CallInput>,
    transactions: Vec<(TxId, Messages)>,
    /// Messages the transactions gave while the task waited on something else ([`CallInputs::drive`]).
    backlog: VecDeque<CallInput>,
}

impl CallInputs {
    pub(crate) fn new() -> (mpsc::UnboundedSender<CallInput>, Self) {
        let (sender, channel) = mpsc::unbounded_channel();
        let inputs = Self {
            channel,
            transactions: Vec::new(),
            backlog: VecDeque::new(),
        };
        (sender, inputs)
    }

    /// Takes `tx` into the call: what it receives comes out of [`CallInputs::recv`] as
    /// [`CallInput::Tx`] with `id`, ending with `msg: None`. The returned sender queues responses.
    pub(crate) fn own(&mut self, tx: Transaction, id: TxId) -> TransactionEventSender {
        let sender = tx.tu_sender.clone();
        let messages = futures_util::stream::unfold(Some(tx), |state| async move {
            let mut tx = state?;
            let msg = tx.receive().await;
            let more = msg.is_some().then_some(tx);
            Some((msg, more))
        });
        self.transactions.push((id, Box::pin(messages)));
        sender
    }

    /// The next input, from an owned transaction or the channel; `None` once the channel closed.
    /// Cancel-safe: nothing is taken before it is returned.
    pub(crate) async fn recv(&mut self) -> Option<CallInput> {
        if let Some(input) = self.backlog.pop_front() {
            return Some(input);
        }
        std::future::poll_fn(|cx| {
            if let Poll::Ready(input) = self.poll_transactions(cx) {
                return Poll::Ready(Some(input));
            }
            self.channel.poll_recv(cx)
        })
        .await
    }

    /// Runs `work` while the owned transactions keep advancing; what they receive meanwhile waits
    /// in order for the next [`CallInputs::recv`]. For waits that may last (a relayed re-INVITE).
    pub(crate) async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            while let Poll::Ready(input) = self.poll_transactions(cx) {
                self.backlog.push_back(input);
            }
            Poll::Pending
        })
        .await
    }

    /// The call is over: keeps the owned transactions running until they end, [`LINGER`] at most.
    pub(crate) async fn linger(mut self) {
        self.channel.close();
        let _ = tokio::time::timeout(
            LINGER,
            std::future::poll_fn(|cx| {
                while self.poll_transactions(cx).is_ready() {}
                if self.transactions.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }),
        )
        .await;
    }

    /// Polls every owned transaction once, from the first, until one gives something. An ended one
    /// is dropped after its `None` is returned.
    fn poll_transactions(&mut self, cx: &mut Context<'_>) -> Poll<CallInput> {
        for i in 0..self.transactions.len() {
            let (id, messages) = &mut self.transactions[i];
            let id = *id;
            match messages.as_mut().poll_next(cx) {
                Poll::Ready(Some(Some(msg))) => {
                    return Poll::Ready(CallInput::Tx { id, msg: Some(msg) });
                }
                Poll::Ready(Some(None)) | Poll::Ready(None) => {
                    drop(self.transactions.swap_remove(i));
                    return Poll::Ready(CallInput::Tx { id, msg: None });
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}
