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

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::transaction::key::{TransactionKey, TransactionRole};
    use rsipstack::transaction::transaction::TransactionEvent;

    /// An INVITE client transaction on an endpoint with no transport: nothing is sent, and the test
    /// ends it by hand (`Terminate`, what its timers or its last response would do).
    fn transaction(
        endpoint: &rsipstack::transaction::Endpoint,
        branch: &str,
    ) -> (Transaction, TransactionKey) {
        let text = format!(
            "INVITE sip:agent@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
             From: <sip:caller@127.0.0.1>;tag=a1\r\nTo: <sip:agent@127.0.0.1>\r\nCall-ID: {branch}@test\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let Ok(SipMessage::Request(invite)) = SipMessage::try_from(text.as_bytes()) else {
            panic!("the test INVITE does not parse");
        };
        let key = TransactionKey::from_request(&invite, TransactionRole::Client).expect("key");
        let tx = Transaction::new_client(key.clone(), invite, endpoint.inner.clone(), None);
        (tx, key)
    }

    fn end(sender: &TransactionEventSender, key: &TransactionKey) {
        sender
            .send(TransactionEvent::Terminate(key.clone()))
            .expect("the transaction is still owned");
    }

    /// An owned transaction's sender and key: what ends it ([`end`]).
    type Owned = (TransactionEventSender, TransactionKey);

    /// A call's inputs owning two running transactions: "first" as 1 and "second" as 2.
    fn owning_two(
        endpoint: &rsipstack::transaction::Endpoint,
    ) -> (mpsc::UnboundedSender<CallInput>, CallInputs, Owned, Owned) {
        let (channel, mut inputs) = CallInputs::new();
        let (first, first_key) = transaction(endpoint, "first");
        let (second, second_key) = transaction(endpoint, "second");
        let first = (inputs.own(first, 1), first_key);
        let second = (inputs.own(second, 2), second_key);
        (channel, inputs, first, second)
    }

    fn ended_id(input: Option<CallInput>) -> TxId {
        match input {
            Some(CallInput::Tx { id, msg: None }) => id,
            Some(CallInput::Tx { id, msg: Some(_) }) => panic!("transaction {id} gave a message"),
            Some(CallInput::InDialog { .. }) => panic!("an in-dialog request"),
            None => panic!("the channel closed"),
        }
    }

    #[tokio::test]
    async fn an_ended_transaction_is_reported_once_and_the_channel_is_still_read() {
        let endpoint = rsipstack::EndpointBuilder::new().build();
        let (channel, mut inputs, _first, (second_sender, second_key)) = owning_two(&endpoint);

        end(&second_sender, &second_key);
        assert_eq!(ended_id(inputs.recv().await), 2);
        assert_eq!(inputs.transactions.len(), 1, "the ended transaction is dropped");

        // The first transaction still runs; what the channel brings comes through beside it.
        channel
            .send(CallInput::Tx { id: 9, msg: None })
            .expect("receiver alive");
        assert_eq!(ended_id(inputs.recv().await), 9);
    }

    #[tokio::test]
    async fn what_the_transactions_give_while_driving_waits_in_order() {
        let endpoint = rsipstack::EndpointBuilder::new().build();
        let (_channel, mut inputs, (first_sender, first_key), (second_sender, second_key)) =
            owning_two(&endpoint);

        let out = inputs
            .drive(async {
                end(&second_sender, &second_key);
                tokio::task::yield_now().await;
                end(&first_sender, &first_key);
                tokio::task::yield_now().await;
                "answered"
            })
            .await;
        assert_eq!(out, "answered");
        assert!(inputs.transactions.is_empty(), "both ended while driving");
        assert_eq!(ended_id(inputs.recv().await), 2);
        assert_eq!(ended_id(inputs.recv().await), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_stops_when_the_transactions_end_and_at_most_after_linger() {
        let endpoint = rsipstack::EndpointBuilder::new().build();

        let (_channel, mut inputs) = CallInputs::new();
        let (done, done_key) = transaction(&endpoint, "done");
        let sender = inputs.own(done, 1);
        end(&sender, &done_key);
        let started = tokio::time::Instant::now();
        inputs.linger().await;
        assert!(started.elapsed() < LINGER, "ended transactions need no lingering");

        let (_channel, mut inputs) = CallInputs::new();
        let (running, _) = transaction(&endpoint, "running");
        inputs.own(running, 1);
        let started = tokio::time::Instant::now();
        inputs.linger().await;
        assert!(
            started.elapsed() >= LINGER,
            "a running transaction is kept its full time"
        );
    }
}
