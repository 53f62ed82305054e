//! The router's inputs: calls arriving, abandoned, accepted, rejected, withdrawn and ended; agents
//! logging out; queues and agents reconfigured; KPIs reset. [`Acd::handle`] dispatches to them.

use super::*;

impl Acd {
    pub(super) fn enqueue(&mut self, now: Timestamp, req: CallRequest) -> Result<(), AcdError> {
        if self.state.calls.contains_key(&req.call) {
            return Err(AcdError::DuplicateCall(req.call));
        }
        let q = *self
            .index
            .queue_by_id
            .get(&req.queue)
            .ok_or_else(|| AcdError::UnknownQueue(req.queue.clone()))?;
        if self.is_full(q) && !self.overflow_config(q).is_some_and(|o| o.when_full) {
            return Err(AcdError::QueueFull(req.queue));
        }
        let seq = self.state.next_call_seq;
        self.state.next_call_seq = self.state.next_call_seq.wrapping_add(1);
        let call = CallRt {
            id: req.call.clone(),
            queue: q,
            priority: req.priority,
            requirement: req.requirement,
            preferred: req.preferred,
            enqueued_at: req.original_enqueued_at.map_or(now, |t| sane(t).min(now)),
            queue_entered_at: now,
            seq,
            epoch: 0,
            status: CallStatus::Waiting,
            declined: Vec::new(),
            visited: Vec::new(),
            timers: Vec::new(),
            compiled: Derived::default(),
        };
        self.state.calls.insert(req.call.clone(), call);
        self.compile_requirement(&req.call);
        self.admit(now, &req.call, Trigger::CallArrived);
        Ok(())
    }

    pub(super) fn abandon(&mut self, now: Timestamp, call_id: &CallId) -> Result<(), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let mut freed = Vec::new();
        let position = match call.status.clone() {
            CallStatus::Connected { .. } => return Err(AcdError::CallConnected(call_id.clone())),
            CallStatus::Waiting => {
                let position = self.call_position(call_id).unwrap_or(1);
                self.unlist_waiting(call_id);
                position
            }
            CallStatus::Offered { offer } => {
                // Position 0: the call was ringing an agent.
                if let Some(o) = self.drop_offer(offer) {
                    for a in o.agents {
                        self.cancel_for_agent(now, offer, call_id, a, CancelReason::CallerAbandoned);
                        freed.push(a);
                    }
                }
                0
            }
        };
        self.clear_call_timers(call_id);
        let Some(call) = self.state.calls.remove(call_id) else {
            return Ok(());
        };
        let waited = now.since(call.queue_entered_at);
        if let Some(q) = self.state.queues.get_mut(call.queue) {
            let within = waited <= secs(q.config.service_level.within_secs);
            let c = &mut q.counters;
            c.abandoned = c.abandoned.saturating_add(1);
            c.abandoned_within = c.abandoned_within.saturating_add(u64::from(within));
            c.removed_within = c.removed_within.saturating_add(u64::from(within));
            c.abandoned_short = c
                .abandoned_short
                .saturating_add(u64::from(waited <= secs(q.config.short_abandon_secs)));
            self.state.outputs.push_back(Output::Abandoned {
                call: call.id.clone(),
                queue: q.config.id.clone(),
                position,
                waited_ms: ms(waited),
            });
        }
        for a in freed {
            self.route_agent(now, a, Trigger::AgentAvailable);
        }
        Ok(())
    }

    pub(super) fn logout(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), AcdError> {
        let a = self.agent_ix(agent)?;
        self.check_transition(a, &AgentEvent::Logout)?;
        let mut returned = None;
        if let Some(offer) = self.state.agents.get(a).and_then(|x| x.offer)
            && let Some(o) = self.state.offers.get_mut(&offer)
        {
            o.agents.retain(|x| *x != a);
            let call = o.call.clone();
            let empty = o.agents.is_empty();
            self.cancel_for_agent(now, offer, &call, a, CancelReason::AgentLoggedOut);
            if empty {
                self.drop_offer(offer);
                returned = Some(call);
            }
        }
        self.transition(now, a, AgentEvent::Logout)?;
        if let Some(call) = returned {
            self.return_call(now, &call);
        }
        // Calls that were waiting for this agent in particular go to the team now.
        let preferring = self.index.preferred_waiting.get(&a).cloned().unwrap_or_default();
        for call in preferring {
            self.route_call(now, &call, Trigger::PreferredUnavailable);
        }
        let memberships = self
            .index
            .agents
            .get(a)
            .map(|x| x.memberships.clone())
            .unwrap_or_default();
        for (q, _) in memberships {
            let nobody = self.index.queues.get(q).is_some_and(|qi| qi.logged_in == 0);
            if nobody && self.overflow_config(q).is_some_and(|o| o.when_no_agents) {
                let waiting: Vec<CallId> = self
                    .index
                    .queues
                    .get(q)
                    .map(|qi| qi.waiting.values().cloned().collect())
                    .unwrap_or_default();
                for call in waiting {
                    self.overflow(now, &call, OverflowReason::NoAgents);
                }
            }
        }
        Ok(())
    }

    pub(super) fn offered_to(&self, call_id: &CallId, agent: &AgentId) -> Result<(OfferId, usize), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let a = self.agent_ix(agent)?;
        let not_offered = || AcdError::NotOffered {
            call: call_id.clone(),
            agent: agent.clone(),
        };
        let CallStatus::Offered { offer } = call.status else {
            return Err(not_offered());
        };
        let o = self.state.offers.get(&offer).ok_or_else(not_offered)?;
        if o.agents.contains(&a) {
            Ok((offer, a))
        } else {
            Err(not_offered())
        }
    }

    pub(super) fn accept(
        &mut self,
        now: Timestamp,
        call_id: &CallId,
        agent: &AgentId,
    ) -> Result<(), AcdError> {
        let (offer, a) = self.offered_to(call_id, agent)?;
        self.transition(now, a, AgentEvent::Accept)?;
        let others: Vec<usize> = self
            .drop_offer(offer)
            .map(|o| o.agents.into_iter().filter(|x| *x != a).collect())
            .unwrap_or_default();
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.offer = None;
            ag.call = Some(call_id.clone());
        }
        for &o in &others {
            self.cancel_for_agent(now, offer, call_id, o, CancelReason::AnsweredElsewhere);
        }
        self.clear_call_timers(call_id);
        if let Some(call) = self.state.calls.get_mut(call_id) {
            call.status = CallStatus::Connected {
                agent: a,
                answered_at: now,
            };
            let waited = now.since(call.queue_entered_at);
            if let Some(q) = self.state.queues.get_mut(call.queue) {
                let within = waited <= secs(q.config.service_level.within_secs);
                let c = &mut q.counters;
                c.answered = c.answered.saturating_add(1);
                c.answered_within = c.answered_within.saturating_add(u64::from(within));
                c.removed_within = c.removed_within.saturating_add(u64::from(within));
                c.answer_wait_ms = c.answer_wait_ms.saturating_add(ms(waited));
                self.state.outputs.push_back(Output::Answered {
                    call: call_id.clone(),
                    queue: q.config.id.clone(),
                    agent: agent.clone(),
                    waited_ms: ms(waited),
                });
            }
        }
        for o in others {
            self.route_agent(now, o, Trigger::AgentAvailable);
        }
        Ok(())
    }

    pub(super) fn reject(
        &mut self,
        now: Timestamp,
        call_id: &CallId,
        agent: &AgentId,
    ) -> Result<(), AcdError> {
        let (offer, a) = self.offered_to(call_id, agent)?;
        let not_ready = self
            .state
            .calls
            .get(call_id)
            .and_then(|c| self.state.queues.get(c.queue))
            .is_some_and(|q| q.config.reject_sets_not_ready);
        let event = if not_ready {
            AgentEvent::OfferFailed(ReasonCode::rejected())
        } else {
            AgentEvent::OfferWithdrawn
        };
        self.check_transition(a, &event)?;
        let mut empty = false;
        if let Some(o) = self.state.offers.get_mut(&offer) {
            o.agents.retain(|x| *x != a);
            empty = o.agents.is_empty();
        }
        self.decline(now, call_id, a);
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.offer = None;
        }
        self.state.outputs.push_back(Output::OfferCancelled {
            offer,
            call: call_id.clone(),
            agent: agent.clone(),
            reason: CancelReason::Rejected,
        });
        self.transition(now, a, event)?;
        if empty {
            self.drop_offer(offer);
            self.return_call(now, call_id);
        }
        self.route_agent(now, a, Trigger::AgentAvailable);
        Ok(())
    }

    pub(super) fn withdraw(&mut self, now: Timestamp, call_id: &CallId) -> Result<(), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let CallStatus::Offered { offer } = call.status else {
            return Err(AcdError::NotRinging(call_id.clone()));
        };
        let agents = self.drop_offer(offer).map(|o| o.agents).unwrap_or_default();
        for &a in &agents {
            self.cancel_for_agent(now, offer, call_id, a, CancelReason::Withdrawn);
        }
        self.return_call(now, call_id);
        for a in agents {
            self.route_agent(now, a, Trigger::AgentAvailable);
        }
        Ok(())
    }

    pub(super) fn end_call(&mut self, now: Timestamp, call_id: &CallId) -> Result<(), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let CallStatus::Connected {
            agent: a,
            answered_at,
        } = call.status
        else {
            return Err(AcdError::NotConnected(call_id.clone()));
        };
        let q = call.queue;
        let wrap = self.state.queues.get(q).map_or(0, |x| x.config.wrap_up_secs);
        let wrap_up_until = (wrap > 0).then(|| now + secs(wrap));
        let event = AgentEvent::CallEnded { wrap_up_until };
        self.check_transition(a, &event)?;
        self.state.calls.remove(call_id);
        let talk = ms(now.since(answered_at));
        // Update the lifetime figures first: indexing on the way back to Available reads them.
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.call = None;
            ag.wrap_call = wrap_up_until.map(|_| call_id.clone());
            ag.wrap_queue = Some(q);
            ag.lifetime_handled = ag.lifetime_handled.saturating_add(1);
            ag.lifetime_talk_ms = ag.lifetime_talk_ms.saturating_add(talk);
            ag.counters.handled = ag.counters.handled.saturating_add(1);
            ag.counters.talk_ms = ag.counters.talk_ms.saturating_add(talk);
        }
        if let Some(queue) = self.state.queues.get_mut(q) {
            queue.counters.handled = queue.counters.handled.saturating_add(1);
            queue.counters.talk_ms = queue.counters.talk_ms.saturating_add(talk);
        }
        self.transition(now, a, event)?;
        self.route_agent(now, a, Trigger::AgentAvailable);
        Ok(())
    }

    pub(super) fn upsert_queue(&mut self, now: Timestamp, config: QueueConfig) -> Result<(), AcdError> {
        config.check()?;
        if let Some(OverflowTarget::Queue { queue }) = config.overflow.as_ref().map(|o| &o.target)
            && !self.index.queue_by_id.contains_key(queue)
        {
            return Err(ConfigError::UnknownQueue {
                queue: queue.clone(),
                referenced_by: config.id.to_string(),
            }
            .into());
        }
        let Some(&q) = self.index.queue_by_id.get(&config.id) else {
            self.state.queues.push(QueueRt {
                config,
                counters: QueueCounters::default(),
            });
            self.rebuild_index();
            return Ok(());
        };
        if let Some(rt) = self.state.queues.get_mut(q) {
            rt.config = config;
        }
        // Aging period and strategy may have changed: rebuild this queue's orderings.
        let members = self
            .index
            .queues
            .get(q)
            .map(|qi| qi.members.clone())
            .unwrap_or_default();
        for a in members {
            if self
                .state
                .agents
                .get(a)
                .is_some_and(|x| x.state == AgentState::Available)
            {
                self.unindex_agent(a);
                self.index_agent(a);
            }
        }
        let period = self
            .state
            .queues
            .get(q)
            .map_or(NO_AGING_PERIOD_MS, |rt| aging_period(&rt.config));
        let waiting: Vec<CallId> = match self.index.queues.get_mut(q) {
            Some(qi) => {
                qi.period_ms = period;
                let ids: Vec<CallId> = qi.waiting.values().cloned().collect();
                qi.waiting.clear();
                ids
            }
            None => Vec::new(),
        };
        for id in &waiting {
            if let Some(call) = self.state.calls.get(id) {
                let key = self.wait_key(call);
                if let Some(qi) = self.index.queues.get_mut(q) {
                    qi.waiting.insert(key, id.clone());
                }
            }
        }
        for id in &waiting {
            self.schedule_next_step(now, id);
            self.route_call(now, id, Trigger::Reconfigured);
        }
        Ok(())
    }

    pub(super) fn upsert_agent(&mut self, now: Timestamp, config: AgentConfig) -> Result<(), AcdError> {
        config.check(|q| self.index.queue_by_id.contains_key(q))?;
        let Some(&a) = self.index.agent_by_id.get(&config.id) else {
            self.state.agents.push(new_agent(config));
            self.rebuild_index();
            return Ok(());
        };
        let (available, logged_in) = match self.state.agents.get(a) {
            Some(x) => (x.state == AgentState::Available, x.state.is_logged_in()),
            None => return Ok(()),
        };
        if available {
            self.unindex_agent(a);
        }
        let old = self
            .index
            .agents
            .get(a)
            .map(|x| x.memberships.clone())
            .unwrap_or_default();
        for (q, _) in old {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.members.retain(|m| *m != a);
                if logged_in {
                    qi.logged_in = qi.logged_in.saturating_sub(1);
                }
            }
        }
        if let Some(x) = self.state.agents.get_mut(a) {
            x.config = config;
        }
        self.link_agent(a);
        if logged_in {
            self.count_logged_in(a, true);
        }
        if available {
            self.index_agent(a);
            self.route_agent(now, a, Trigger::Reconfigured);
        }
        Ok(())
    }

    pub(super) fn reset_kpis(&mut self, now: Timestamp) {
        // Close the running state periods so time before the reset is not counted after it.
        for ag in &mut self.state.agents {
            ag.counters = AgentCounters::default();
        }
        for q in &mut self.state.queues {
            q.counters = QueueCounters::default();
        }
        self.state.interval_start = now;
    }
}
