//! The router's timers: scheduling them, firing those due in order, and what each one does (offer
//! timeouts, routing steps, maximum wait, wrap-up end).

use super::*;

impl Acd {
    pub(super) fn schedule(&mut self, at: Timestamp, timer: Timer) -> TimerKey {
        let key = (at.as_millis(), self.state.next_timer);
        self.state.next_timer = self.state.next_timer.wrapping_add(1);
        self.state.timers.insert(key, timer);
        key
    }

    /// Schedules a timer belonging to a call, remembered so it can be dropped when the call leaves.
    pub(super) fn schedule_for_call(&mut self, call_id: &CallId, at: Timestamp, timer: Timer) {
        let key = self.schedule(at, timer);
        if let Some(call) = self.state.calls.get_mut(call_id) {
            call.timers.push(key);
        }
    }

    /// Drops the pending timers of a call that left its queue (answered, abandoned, overflowed).
    pub(super) fn clear_call_timers(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        for key in call.timers.drain(..) {
            self.state.timers.remove(&key);
        }
    }

    /// Removes an offer and its timeout.
    pub(super) fn drop_offer(&mut self, offer: OfferId) -> Option<OfferRt> {
        let o = self.state.offers.remove(&offer)?;
        self.state.timers.remove(&o.timer);
        Some(o)
    }

    /// See [`Input::Resumed`]: each ringing offer's timeout moves on by the time no router ran
    /// (from the last time this one saw to `now`), to no sooner than `now` plus the grace.
    pub(super) fn resume(&mut self, now: Timestamp) {
        let idle = now.since(self.state.now);
        let floor = now + crate::RESUME_ANSWER_GRACE;
        let ringing: Vec<OfferId> = self.state.offers.keys().copied().collect();
        for id in ringing {
            let Some(offer) = self.state.offers.get(&id) else {
                continue;
            };
            let expires_at = (offer.expires_at + idle).max(floor);
            let old = offer.timer;
            self.state.timers.remove(&old);
            let timer = self.schedule(expires_at, Timer::OfferTimeout { offer: id });
            if let Some(offer) = self.state.offers.get_mut(&id) {
                offer.expires_at = expires_at;
                offer.timer = timer;
                offer.resumed = true;
            }
        }
        self.state.now = now;
    }

    pub(super) fn fire_timers(&mut self, now: Timestamp) {
        while let Some(entry) = self.state.timers.first_entry() {
            let at = entry.key().0;
            if at > now.as_millis() {
                break;
            }
            let key = *entry.key();
            let timer = entry.remove();
            if let Timer::Step { call, .. }
            | Timer::MaxWait { call, .. }
            | Timer::PreferredExpired { call, .. }
            | Timer::Announce { call, .. } = &timer
                && let Some(c) = self.state.calls.get_mut(call)
            {
                c.timers.retain(|k| *k != key);
            }
            let at = Timestamp::from_millis(at).max(self.state.now);
            self.state.now = at;
            self.on_timer(at, timer);
        }
    }

    pub(super) fn live_call(&self, call: &CallId, epoch: u32) -> Option<&CallRt> {
        self.state.calls.get(call).filter(|c| c.epoch == epoch)
    }

    pub(super) fn on_timer(&mut self, at: Timestamp, timer: Timer) {
        match timer {
            Timer::Step { call, epoch } => {
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.schedule_next_step(at, &call);
                    self.route_call(at, &call, Trigger::StepReached);
                }
            }
            Timer::PreferredExpired { call, epoch } => {
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.route_call(at, &call, Trigger::PreferredExpired);
                }
            }
            Timer::MaxWait { call, epoch } => {
                // A ringing call is checked again when it comes back.
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.overflow(at, &call, OverflowReason::MaxWait);
                }
            }
            Timer::Announce { call, epoch } => {
                let Some(c) = self.live_call(&call, epoch) else {
                    return;
                };
                let q = c.queue;
                if let Some(position) = self.call_position(&call) {
                    let estimated_wait_secs =
                        self.queue_ewt_ms(q, u64::from(position - 1)).map(|ms| ms / 1000);
                    if let Some(queue) = self.state.queues.get(q) {
                        let queue = queue.config.id.clone();
                        self.state.outputs.push_back(Output::Announce {
                            call: call.clone(),
                            queue,
                            position,
                            estimated_wait_secs,
                        });
                    }
                }
                if let Some(every) = self
                    .state
                    .queues
                    .get(q)
                    .and_then(|x| x.config.announce_every_secs)
                {
                    self.schedule_for_call(&call.clone(), at + secs(every), Timer::Announce { call, epoch });
                }
            }
            Timer::DeclineExpired { call, epoch } => {
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.route_call(at, &call, Trigger::PauseOver);
                }
            }
            Timer::OfferTimeout { offer } => {
                if let Some(o) = self.state.offers.remove(&offer) {
                    for &a in &o.agents {
                        // The call tries someone else first either way.
                        self.decline(at, &o.call, a);
                        if o.resumed {
                            self.cancel_for_agent(at, offer, &o.call, a, CancelReason::Withdrawn);
                        } else {
                            self.cancel_offer_with(at, offer, &o.call, a, CancelReason::NoAnswer);
                        }
                    }
                    self.return_call(at, &o.call);
                    if o.resumed {
                        for a in o.agents {
                            self.route_agent(at, a, Trigger::AgentAvailable);
                        }
                    }
                }
            }
            Timer::WrapUpEnd { agent, until } => {
                let due = self
                    .state
                    .agents
                    .get(agent)
                    .is_some_and(|a| a.state == AgentState::WrapUp { until });
                if due {
                    let _ = self.after_wrap_up(at, agent);
                }
            }
        }
    }

    pub(super) fn schedule_next_step(&mut self, now: Timestamp, call_id: &CallId) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let Some(queue) = self.state.queues.get(call.queue) else {
            return;
        };
        let waited = now.since(call.queue_entered_at);
        let next = queue
            .config
            .effective_steps()
            .iter()
            .find(|s| secs(s.after_secs) > waited);
        if let Some(step) = next {
            let at = call.queue_entered_at + secs(step.after_secs);
            let timer = Timer::Step {
                call: call_id.clone(),
                epoch: call.epoch,
            };
            self.schedule_for_call(call_id, at, timer);
        }
    }
}
