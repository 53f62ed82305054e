//! Matching calls and agents: which agents qualify for a call at its current step, how they are
//! scored, the event-local routing of a new call or a newly available agent, and offers made and
//! cancelled.

use super::*;

impl Acd {
    pub(super) fn current_step<'a>(
        &self,
        call: &CallRt,
        config: &'a QueueConfig,
        at: Timestamp,
    ) -> (u32, &'a RoutingStep) {
        let waited = at.since(call.queue_entered_at);
        let steps = config.effective_steps();
        let ix = steps
            .iter()
            .rposition(|s| secs(s.after_secs) <= waited)
            .unwrap_or(0);
        (
            u32::try_from(ix).unwrap_or(0),
            steps.get(ix).unwrap_or(&RoutingStep::INITIAL),
        )
    }

    /// The call's preferred agent while their window is open and they are logged in.
    pub(super) fn preferred_target(&self, call: &CallRt, at: Timestamp) -> Option<usize> {
        let p = call.preferred.as_ref()?;
        if at >= call.queue_entered_at + secs(p.timeout_secs) {
            return None;
        }
        let a = *self.index.agent_by_id.get(&p.agent)?;
        let logged_in = self.state.agents.get(a)?.state.is_logged_in();
        (logged_in && !declined(call, a, at)).then_some(a)
    }

    pub(super) fn qualifies(
        &self,
        agent: usize,
        call: &CallRt,
        step: &RoutingStep,
        rank: u8,
        at: Timestamp,
    ) -> bool {
        if declined(call, agent, at) || step.max_rank.is_some_and(|m| rank > m) {
            return false;
        }
        let Some(req) = &call.requirement else { return true };
        match (&call.compiled.0, self.index.agents.get(agent)) {
            (Some(compiled), Some(ai)) => compiled.matches(&ai.levels, step.relaxation()),
            // Not compiled (never expected): match on names.
            _ => self.state.agents.get(agent).is_some_and(|ag| {
                req.matches(
                    &|s| ag.config.skills.get(s).map_or(0, |p| p.get()),
                    step.relaxation(),
                )
            }),
        }
    }

    /// Keeps an agent who let the call ring out or rejected it from being offered it again for the
    /// queue's pause, and schedules a new look for an agent when the pause ends.
    pub(super) fn decline(&mut self, now: Timestamp, call_id: &CallId, agent: usize) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        let pause = self
            .state
            .queues
            .get(call.queue)
            .map_or(0, |q| q.config.decline_pause_secs);
        let until = now + secs(pause);
        call.declined.retain(|&(a, t)| a != agent && t > now);
        call.declined.push((agent, until));
        let epoch = call.epoch;
        self.schedule_for_call(
            call_id,
            until,
            Timer::DeclineExpired {
                call: call_id.clone(),
                epoch,
            },
        );
    }

    pub(super) fn compile_requirement(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        let skills = &mut self.index.skills;
        call.compiled = Derived(
            call.requirement
                .as_ref()
                .map(|r| CompiledExpr::compile(r.expr(), &mut |s| intern(skills, s))),
        );
    }

    pub(super) fn skill_sum(&self, agent: usize, call: &CallRt) -> u32 {
        let Some(ag) = self.state.agents.get(agent) else {
            return 0;
        };
        match &call.requirement {
            Some(req) => {
                let mut named: Vec<_> = req.expr().skills();
                named.sort();
                named.dedup();
                named
                    .iter()
                    .map(|s| ag.config.skills.get(*s).map_or(0, |p| u32::from(p.get())))
                    .sum()
            }
            None => ag.config.skills.values().map(|p| u32::from(p.get())).sum(),
        }
    }

    pub(super) fn score(
        &self,
        strategy: Strategy,
        agent: usize,
        call: &CallRt,
        at: Timestamp,
        eligible: u32,
    ) -> Score {
        let Some(ag) = self.state.agents.get(agent) else {
            return Score::Preferred;
        };
        match strategy {
            Strategy::LongestIdle => Score::IdleMs(ms(at.since(ag.since))),
            Strategy::MostSkilled => Score::SkillSum(self.skill_sum(agent, call)),
            Strategy::RoundRobin => Score::LastOfferTurn(ag.last_offer_turn),
            Strategy::FewestCalls => Score::HandledCalls(ag.lifetime_handled),
            Strategy::LeastTalkTime => Score::TalkMs(ag.lifetime_talk_ms),
            Strategy::RingAll => Score::RingAll(eligible),
            Strategy::Random => Score::RandomAmong(eligible),
        }
    }

    pub(super) fn effective_priority(&self, call: &CallRt, at: Timestamp) -> f64 {
        let period = self
            .index
            .queues
            .get(call.queue)
            .map_or(NO_AGING_PERIOD_MS, |qi| qi.period_ms);
        if period == NO_AGING_PERIOD_MS {
            return f64::from(call.priority.get());
        }
        let aged = i128::from(call.priority.get()) * period
            + (i128::from(at.as_millis()) - i128::from(call.enqueued_at.as_millis()));
        aged as f64 / period as f64
    }

    /// Finds the best available agent(s) for a waiting call and offers it.
    pub(super) fn route_call(&mut self, at: Timestamp, call_id: &CallId, trigger: Trigger) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        if call.status != CallStatus::Waiting {
            return;
        }
        let Some(queue) = self.state.queues.get(call.queue) else {
            return;
        };
        let Some(qi) = self.index.queues.get(call.queue) else {
            return;
        };
        let config = &queue.config;
        let (step_ix, step) = self.current_step(call, config, at);
        let available = u32::try_from(qi.available.len()).unwrap_or(u32::MAX);
        let explain = |rule, considered, eligible, chosen: &[usize], score| Explanation {
            call: call.id.clone(),
            queue: config.id.clone(),
            trigger,
            rule,
            step: step_ix,
            step_rule: step.describe(),
            priority: call.priority.get(),
            effective_priority: self.effective_priority(call, at),
            waited_ms: ms(at.since(call.queue_entered_at)),
            calls_considered: 0,
            agents_available: available,
            agents_considered: considered,
            agents_eligible: eligible,
            chosen: chosen
                .iter()
                .filter_map(|a| self.state.agents.get(*a).map(|x| x.config.id.clone()))
                .collect(),
            score,
        };

        if let Some(p) = self.preferred_target(call, at) {
            if self
                .state
                .agents
                .get(p)
                .is_some_and(|a| a.state == AgentState::Available)
            {
                let explanation = explain(Rule::PreferredAgent, 1, 1, &[p], Score::Preferred);
                let call_id = call_id.clone();
                self.offer(at, &call_id, vec![p], explanation);
            }
            return;
        }

        let strategy = config.strategy;
        let first_wins = matches!(
            strategy,
            Strategy::LongestIdle | Strategy::RoundRobin | Strategy::FewestCalls | Strategy::LeastTalkTime
        );
        let mut considered = 0u32;
        let mut eligible: Vec<usize> = Vec::new();
        let mut tier = None;
        for key in &qi.available {
            if tier.is_some_and(|r| key.rank > r) || step.max_rank.is_some_and(|m| key.rank > m) {
                break;
            }
            considered += 1;
            if !self.qualifies(key.agent, call, step, key.rank, at) {
                continue;
            }
            tier = Some(key.rank);
            eligible.push(key.agent);
            if first_wins {
                break;
            }
        }
        if eligible.is_empty() {
            return;
        }
        let count = u32::try_from(eligible.len()).unwrap_or(u32::MAX);
        let chosen: Vec<usize> = match strategy {
            Strategy::RingAll => eligible,
            Strategy::MostSkilled => {
                // Highest skill sum; ties go to the earlier (longer idle) agent.
                let mut best = None::<(u32, usize)>;
                for a in eligible {
                    let s = self.skill_sum(a, call);
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, a));
                    }
                }
                best.map(|(_, a)| vec![a]).unwrap_or_default()
            }
            Strategy::Random => {
                let pick = usize::try_from(self.state.rng.clone().below(u64::from(count))).unwrap_or(0);
                eligible.get(pick).map(|a| vec![*a]).unwrap_or_default()
            }
            _ => eligible.into_iter().take(1).collect(),
        };
        let Some(&first) = chosen.first() else { return };
        let score = self.score(strategy, first, call, at, count);
        let explanation = explain(Rule::Strategy(strategy), considered, count, &chosen, score);
        if strategy == Strategy::Random {
            // Advance the generator only when the draw is used, so the sequence is reproducible.
            self.state.rng.below(u64::from(count));
        }
        let call_id = call_id.clone();
        self.offer(at, &call_id, chosen, explanation);
    }

    /// Finds the best waiting call for an agent who became available, across every queue they serve.
    pub(super) fn route_agent(&mut self, at: Timestamp, agent: usize, trigger: Trigger) {
        if !self
            .state
            .agents
            .get(agent)
            .is_some_and(|a| a.state == AgentState::Available)
        {
            return;
        }
        let Some(ai) = self.index.agents.get(agent) else {
            return;
        };
        let mut best: Option<Candidate> = None;
        let mut considered = 0u32;
        let mut consider = |cand: Candidate| {
            if best.as_ref().is_none_or(|b| cand.beats(b)) {
                best = Some(cand);
            }
        };
        for &(q, rank) in &ai.memberships {
            let (Some(qi), Some(queue)) = (self.index.queues.get(q), self.state.queues.get(q)) else {
                continue;
            };
            for (key, call_id) in &qi.waiting {
                considered += 1;
                let Some(call) = self.state.calls.get(call_id) else {
                    continue;
                };
                let preferred = match self.preferred_target(call, at) {
                    Some(p) if p == agent => true,
                    Some(_) => continue,
                    None => {
                        let (_, step) = self.current_step(call, &queue.config, at);
                        if !self.qualifies(agent, call, step, rank, at) {
                            continue;
                        }
                        false
                    }
                };
                consider(Candidate {
                    call: call_id.clone(),
                    queue: q,
                    aged_priority: -key.neg_aged_priority + i128::from(at.as_millis()),
                    period: qi.period_ms,
                    enqueued_at: key.enqueued_at,
                    seq: key.seq,
                    preferred,
                });
                break;
            }
        }
        // Calls waiting for this agent in particular, possibly in queues they do not serve.
        for call_id in self.index.preferred_waiting.get(&agent).into_iter().flatten() {
            let Some(call) = self.state.calls.get(call_id) else {
                continue;
            };
            if call.status != CallStatus::Waiting || self.preferred_target(call, at) != Some(agent) {
                continue;
            }
            considered += 1;
            let Some(qi) = self.index.queues.get(call.queue) else {
                continue;
            };
            let key = self.wait_key(call);
            consider(Candidate {
                call: call_id.clone(),
                queue: call.queue,
                aged_priority: -key.neg_aged_priority + i128::from(at.as_millis()),
                period: qi.period_ms,
                enqueued_at: key.enqueued_at,
                seq: key.seq,
                preferred: true,
            });
        }
        let Some(best) = best else { return };
        let (Some(call), Some(queue), Some(qi)) = (
            self.state.calls.get(&best.call),
            self.state.queues.get(best.queue),
            self.index.queues.get(best.queue),
        ) else {
            return;
        };
        let (step_ix, step) = self.current_step(call, &queue.config, at);
        let (rule, score) = if best.preferred {
            (Rule::PreferredAgent, Score::Preferred)
        } else {
            let strategy = queue.config.strategy;
            (Rule::Strategy(strategy), self.score(strategy, agent, call, at, 1))
        };
        let explanation = Explanation {
            call: call.id.clone(),
            queue: queue.config.id.clone(),
            trigger,
            rule,
            step: step_ix,
            step_rule: step.describe(),
            priority: call.priority.get(),
            effective_priority: self.effective_priority(call, at),
            waited_ms: ms(at.since(call.queue_entered_at)),
            calls_considered: considered,
            agents_available: u32::try_from(qi.available.len()).unwrap_or(u32::MAX),
            agents_considered: 1,
            agents_eligible: 1,
            chosen: self
                .state
                .agents
                .get(agent)
                .map(|a| a.config.id.clone())
                .into_iter()
                .collect(),
            score,
        };
        self.offer(at, &best.call, vec![agent], explanation);
    }

    pub(super) fn offer(
        &mut self,
        at: Timestamp,
        call_id: &CallId,
        agents: Vec<usize>,
        explanation: Explanation,
    ) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let Some(queue) = self.state.queues.get(call.queue) else {
            return;
        };
        let expires_at = at + secs(queue.config.offer_timeout_secs);
        let queue_id = queue.config.id.clone();
        let id = self.state.next_offer;
        self.state.next_offer = self.state.next_offer.wrapping_add(1);
        self.unlist_waiting(call_id);
        if let Some(call) = self.state.calls.get_mut(call_id) {
            call.status = CallStatus::Offered { offer: id };
        }
        self.state.outputs.push_back(Output::Offer(Offer {
            offer: id,
            call: call_id.clone(),
            queue: queue_id,
            agents: explanation.chosen.clone(),
            expires_at,
            explanation,
        }));
        for &a in &agents {
            // The agents were chosen from the available index, so the transition is legal.
            if self.transition(at, a, AgentEvent::Offer).is_ok() {
                self.state.offer_turn = self.state.offer_turn.wrapping_add(1);
                let turn = self.state.offer_turn;
                if let Some(ag) = self.state.agents.get_mut(a) {
                    ag.offer = Some(id);
                    ag.last_offer_turn = turn;
                }
            }
        }
        let timer = self.schedule(expires_at, Timer::OfferTimeout { offer: id });
        self.state.offers.insert(
            id,
            OfferRt {
                call: call_id.clone(),
                agents,
                expires_at,
                timer,
                resumed: false,
            },
        );
    }

    /// Tells an agent their ringing stopped through no fault of theirs; they become available.
    pub(super) fn cancel_for_agent(
        &mut self,
        at: Timestamp,
        offer: OfferId,
        call: &CallId,
        agent: usize,
        why: CancelReason,
    ) {
        let event = if why == CancelReason::AgentLoggedOut {
            None
        } else {
            Some(AgentEvent::OfferWithdrawn)
        };
        self.cancel_with_event(at, offer, call, agent, why, event);
    }

    /// Tells an agent their offer rang out; they become NotReady("no-answer").
    pub(super) fn cancel_offer_with(
        &mut self,
        at: Timestamp,
        offer: OfferId,
        call: &CallId,
        agent: usize,
        why: CancelReason,
    ) {
        self.cancel_with_event(
            at,
            offer,
            call,
            agent,
            why,
            Some(AgentEvent::OfferFailed(ReasonCode::no_answer())),
        );
    }

    pub(super) fn cancel_with_event(
        &mut self,
        at: Timestamp,
        offer: OfferId,
        call: &CallId,
        agent: usize,
        why: CancelReason,
        event: Option<AgentEvent>,
    ) {
        let Some(ag) = self.state.agents.get_mut(agent) else {
            return;
        };
        ag.offer = None;
        let agent_id = ag.config.id.clone();
        self.state.outputs.push_back(Output::OfferCancelled {
            offer,
            call: call.clone(),
            agent: agent_id,
            reason: why,
        });
        if let Some(event) = event {
            // The agent is Reserved (offer invariant), so these transitions are legal.
            let _ = self.transition(at, agent, event);
        }
    }
}
