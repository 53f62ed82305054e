//! Agents: transitions of their state, and the per-queue indexes of available agents kept in step
//! with them.

use super::*;

impl Acd {
    pub(super) fn agent_ix(&self, agent: &AgentId) -> Result<usize, AcdError> {
        self.index
            .agent_by_id
            .get(agent)
            .copied()
            .ok_or_else(|| AcdError::UnknownAgent(agent.clone()))
    }

    pub(super) fn check_transition(&self, a: usize, event: &AgentEvent) -> Result<AgentState, AcdError> {
        let ag = self
            .state
            .agents
            .get(a)
            .ok_or(AcdError::Internal("agent index out of range"))?;
        ag.state
            .apply(event)
            .map_err(|source| AcdError::IllegalTransition {
                agent: ag.config.id.clone(),
                source,
            })
    }

    /// Moves an agent to a new state, keeping time accounting and indexes in step.
    pub(super) fn transition(&mut self, at: Timestamp, a: usize, event: AgentEvent) -> Result<(), AcdError> {
        let next = self.check_transition(a, &event)?;
        let interval_start = self.state.interval_start;
        let Some(ag) = self.state.agents.get_mut(a) else {
            return Ok(());
        };
        let prev = std::mem::replace(&mut ag.state, next.clone());
        let spent = ms(at.since(ag.since.max(interval_start)));
        ag.counters.times.add(&prev, spent);
        let mut wrap_queue = None;
        if matches!(prev, AgentState::WrapUp { .. }) {
            ag.counters.wrap_ms = ag.counters.wrap_ms.saturating_add(spent);
            wrap_queue = ag.wrap_queue;
        }
        ag.since = at;
        let agent_id = ag.config.id.clone();
        if let Some(q) = wrap_queue.and_then(|q| self.state.queues.get_mut(q)) {
            q.counters.wrap_ms = q.counters.wrap_ms.saturating_add(spent);
        }
        if prev == AgentState::Available {
            self.unindex_agent(a);
        }
        if next == AgentState::Available {
            self.index_agent(a);
        }
        if prev.is_logged_in() != next.is_logged_in() {
            self.count_logged_in(a, next.is_logged_in());
        }
        if matches!(prev, AgentState::WrapUp { .. })
            && let Some(x) = self.state.agents.get_mut(a)
        {
            x.wrap_call = None;
            if let Some(key) = x.wrap_timer.take() {
                self.state.timers.remove(&key);
            }
        }
        if let AgentState::WrapUp { until } = next {
            let key = self.schedule(until, Timer::WrapUpEnd { agent: a, until });
            if let Some(x) = self.state.agents.get_mut(a) {
                x.wrap_timer = Some(key);
            }
        }
        self.state.outputs.push_back(Output::AgentStateChanged {
            agent: agent_id,
            from: prev,
            to: next,
            at,
        });
        Ok(())
    }

    pub(super) fn strategy_key(&self, strategy: Strategy, a: &AgentRt) -> i64 {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match strategy {
            Strategy::RoundRobin => clamp(a.last_offer_turn),
            Strategy::FewestCalls => clamp(a.lifetime_handled),
            Strategy::LeastTalkTime => clamp(a.lifetime_talk_ms),
            Strategy::LongestIdle | Strategy::MostSkilled | Strategy::RingAll | Strategy::Random => {
                a.since.as_millis()
            }
        }
    }

    pub(super) fn index_agent(&mut self, a: usize) {
        let Some(ag) = self.state.agents.get(a) else {
            return;
        };
        let memberships = self
            .index
            .agents
            .get(a)
            .map(|x| x.memberships.clone())
            .unwrap_or_default();
        let mut indexed = Vec::with_capacity(memberships.len());
        for (q, rank) in memberships {
            let Some(queue) = self.state.queues.get(q) else {
                continue;
            };
            let key = AvailKey {
                rank,
                key: self.strategy_key(queue.config.strategy, ag),
                agent: a,
            };
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.available.insert(key);
                indexed.push((q, key));
            }
        }
        if let Some(ai) = self.index.agents.get_mut(a) {
            ai.indexed = indexed;
        }
    }

    pub(super) fn unindex_agent(&mut self, a: usize) {
        let Some(ai) = self.index.agents.get_mut(a) else {
            return;
        };
        for (q, key) in ai.indexed.drain(..) {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.available.remove(&key);
            }
        }
    }

    pub(super) fn count_logged_in(&mut self, a: usize, logged_in: bool) {
        let Some(ai) = self.index.agents.get(a) else {
            return;
        };
        for &(q, _) in &ai.memberships {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.logged_in = if logged_in {
                    qi.logged_in + 1
                } else {
                    qi.logged_in.saturating_sub(1)
                };
            }
        }
    }

    /// Resolves an agent's queue memberships and adds them to the queues' member lists.
    pub(super) fn link_agent(&mut self, a: usize) {
        let Some(ag) = self.state.agents.get(a) else {
            return;
        };
        let memberships: Vec<(usize, u8)> = ag
            .config
            .queues
            .iter()
            .filter_map(|m| self.index.queue_by_id.get(&m.queue).map(|&q| (q, m.rank)))
            .collect();
        for &(q, _) in &memberships {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.members.push(a);
            }
        }
        let mut levels = Vec::new();
        for (skill, level) in &ag.config.skills {
            let ix = intern(&mut self.index.skills, skill);
            if levels.len() <= ix {
                levels.resize(ix + 1, 0);
            }
            if let Some(slot) = levels.get_mut(ix) {
                *slot = level.get();
            }
        }
        if self.index.agents.len() <= a {
            self.index.agents.resize_with(a + 1, AgentIndex::default);
        }
        if let Some(ai) = self.index.agents.get_mut(a) {
            ai.memberships = memberships;
            ai.levels = levels;
        }
    }

    pub(super) fn rebuild_index(&mut self) {
        let mut index = Index::default();
        for (q, queue) in self.state.queues.iter().enumerate() {
            index.queue_by_id.insert(queue.config.id.clone(), q);
            index.queues.push(QueueIndex {
                period_ms: aging_period(&queue.config),
                ..QueueIndex::default()
            });
        }
        for (a, agent) in self.state.agents.iter().enumerate() {
            index.agent_by_id.insert(agent.config.id.clone(), a);
        }
        index.agents = vec![AgentIndex::default(); self.state.agents.len()];
        self.index = index;
        for a in 0..self.state.agents.len() {
            self.link_agent(a);
            let state = self.state.agents.get(a).map(|x| x.state.clone());
            if state.as_ref().is_some_and(AgentState::is_logged_in) {
                self.count_logged_in(a, true);
            }
            if state == Some(AgentState::Available) {
                self.index_agent(a);
            }
            if let Some(ag) = self.state.agents.get(a)
                && self.on_placed_call(ag)
                && let Some(call) = ag.call.clone()
            {
                self.index.placed.insert(call, a);
            }
        }
        let waiting: Vec<CallId> = self
            .state
            .calls
            .values()
            .filter(|c| c.status == CallStatus::Waiting)
            .map(|c| c.id.clone())
            .collect();
        for id in waiting {
            self.list_waiting(&id);
        }
        let calls: Vec<CallId> = self.state.calls.keys().cloned().collect();
        for id in calls {
            self.compile_requirement(&id);
        }
    }
}
