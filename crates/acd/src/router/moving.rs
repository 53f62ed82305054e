//! Moving calls: admitting a call to its queue, overflowing it, returning it, and keeping the
//! per-queue list of waiting calls in step.

use super::*;

impl Acd {
    /// Puts a call (new, or arriving by overflow) in its queue, or overflows it further.
    pub(super) fn admit(&mut self, now: Timestamp, call_id: &CallId, trigger: Trigger) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let q = call.queue;
        let epoch = call.epoch;
        let preferred_timeout = call.preferred.as_ref().map(|p| p.timeout_secs);
        let Some(queue) = self.state.queues.get_mut(q) else {
            return;
        };
        queue.counters.queued = queue.counters.queued.saturating_add(1);
        let max_wait = queue.config.overflow.as_ref().and_then(|o| o.max_wait_secs);
        let announce = queue.config.announce_every_secs;
        let queue_id = queue.config.id.clone();
        if let Some(of) = self.overflow_config(q) {
            let (when_full, when_no_agents) = (of.when_full, of.when_no_agents);
            if when_full && self.is_full(q) && self.overflow(now, call_id, OverflowReason::QueueFull) {
                return;
            }
            let nobody = self.index.queues.get(q).is_some_and(|qi| qi.logged_in == 0);
            if when_no_agents && nobody && self.overflow(now, call_id, OverflowReason::NoAgents) {
                return;
            }
        }
        self.list_waiting(call_id);
        if let Some(w) = max_wait {
            self.schedule_for_call(
                call_id,
                now + secs(w),
                Timer::MaxWait {
                    call: call_id.clone(),
                    epoch,
                },
            );
        }
        if let Some(t) = preferred_timeout {
            self.schedule_for_call(
                call_id,
                now + secs(t),
                Timer::PreferredExpired {
                    call: call_id.clone(),
                    epoch,
                },
            );
        }
        if let Some(every) = announce {
            self.schedule_for_call(
                call_id,
                now + secs(every),
                Timer::Announce {
                    call: call_id.clone(),
                    epoch,
                },
            );
        }
        self.schedule_next_step(now, call_id);
        self.state.outputs.push_back(Output::Queued {
            call: call_id.clone(),
            queue: queue_id,
        });
        self.route_call(now, call_id, trigger);
    }

    /// Sends a call to its queue's overflow target. False (and nothing changed) when the queue has no
    /// overflow or the target would loop back to a queue the call already left.
    pub(super) fn overflow(&mut self, now: Timestamp, call_id: &CallId, reason: OverflowReason) -> bool {
        let Some(call) = self.state.calls.get(call_id) else {
            return false;
        };
        let from = call.queue;
        let Some(of) = self.overflow_config(from) else {
            return false;
        };
        let target = of.target.clone();
        let to_queue = match &target {
            OverflowTarget::Queue { queue } => match self.index.queue_by_id.get(queue) {
                Some(&t) if t != from && !call.visited.contains(&t) => Some(t),
                _ => return false,
            },
            _ => None,
        };
        let waited = now.since(call.queue_entered_at);
        self.unlist_waiting(call_id);
        self.clear_call_timers(call_id);
        let Some(queue) = self.state.queues.get_mut(from) else {
            return false;
        };
        queue.counters.overflowed = queue.counters.overflowed.saturating_add(1);
        queue.counters.removed_within = queue
            .counters
            .removed_within
            .saturating_add(u64::from(waited <= secs(queue.config.service_level.within_secs)));
        self.state.outputs.push_back(Output::Overflowed {
            call: call_id.clone(),
            from: queue.config.id.clone(),
            target,
            reason,
            waited_ms: ms(waited),
        });
        match to_queue {
            Some(t) => {
                if let Some(call) = self.state.calls.get_mut(call_id) {
                    call.visited.push(from);
                    call.queue = t;
                    call.epoch = call.epoch.wrapping_add(1);
                    call.queue_entered_at = now;
                    call.declined.clear();
                    call.status = CallStatus::Waiting;
                }
                self.admit(now, call_id, Trigger::CallArrived);
            }
            None => {
                self.state.calls.remove(call_id);
            }
        }
        true
    }

    /// A call whose offer failed goes back to its original place (or overflows if it waited too long).
    pub(super) fn return_call(&mut self, now: Timestamp, call_id: &CallId) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        call.status = CallStatus::Waiting;
        let waited = now.since(call.queue_entered_at);
        let q = call.queue;
        let max_wait = self.overflow_config(q).and_then(|o| o.max_wait_secs);
        if max_wait.is_some_and(|w| waited >= secs(w)) && self.overflow(now, call_id, OverflowReason::MaxWait)
        {
            return;
        }
        self.list_waiting(call_id);
        self.schedule_next_step(now, call_id);
        self.route_call(now, call_id, Trigger::OfferReturned);
    }

    pub(super) fn list_waiting(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let key = self.wait_key(call);
        let preferred = call
            .preferred
            .as_ref()
            .and_then(|p| self.index.agent_by_id.get(&p.agent).copied());
        if let Some(qi) = self.index.queues.get_mut(call.queue) {
            qi.waiting.insert(key, call_id.clone());
        }
        if let Some(p) = preferred {
            self.index
                .preferred_waiting
                .entry(p)
                .or_default()
                .push(call_id.clone());
        }
    }

    pub(super) fn unlist_waiting(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let key = self.wait_key(call);
        let preferred = call
            .preferred
            .as_ref()
            .and_then(|p| self.index.agent_by_id.get(&p.agent).copied());
        if let Some(qi) = self.index.queues.get_mut(call.queue) {
            qi.waiting.remove(&key);
        }
        if let Some(p) = preferred
            && let Some(list) = self.index.preferred_waiting.get_mut(&p)
        {
            list.retain(|c| c != call_id);
            if list.is_empty() {
                self.index.preferred_waiting.remove(&p);
            }
        }
    }
}
