//! Consistency checks: the invariants a running router keeps, and the references a stored snapshot must
//! satisfy before it is restored.

use super::*;

impl Acd {
    /// Checks the internal invariants: each agent holds at most one call or offer, each call is in at
    /// most one offer, the indexes match the state, and no available agent is left idle while a waiting
    /// call qualifies for them. Quadratic in the size of the state: for tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let s = &self.state;
        for (a, ag) in s.agents.iter().enumerate() {
            let id = &ag.config.id;
            match &ag.state {
                AgentState::Reserved => {
                    let offer = ag.offer.ok_or(format!("{id} reserved without an offer"))?;
                    let o = s
                        .offers
                        .get(&offer)
                        .ok_or(format!("{id} reserved for a missing offer"))?;
                    if !o.agents.contains(&a) {
                        return Err(format!("{id} reserved for an offer not listing them"));
                    }
                    if ag.call.is_some() {
                        return Err(format!("{id} reserved while holding a call"));
                    }
                }
                AgentState::OnCall => {
                    let call = ag.call.as_ref().ok_or(format!("{id} on a call without one"))?;
                    if ag.placed.as_ref().is_some_and(|p| &p.call == call) {
                        if s.calls.contains_key(call) {
                            return Err(format!("{id} placed call {call}, which a queue holds too"));
                        }
                    } else {
                        let c = s.calls.get(call).ok_or(format!("{id} on a missing call"))?;
                        if !matches!(c.status, CallStatus::Connected { agent, .. } if agent == a) {
                            return Err(format!("{id} on call {call} connected elsewhere"));
                        }
                    }
                    if ag.offer.is_some() {
                        return Err(format!("{id} on a call with an offer pending"));
                    }
                }
                _ if ag.offer.is_some() || ag.call.is_some() => {
                    return Err(format!("{id} holds a call or offer while {}", ag.state));
                }
                _ if ag.wrap_call.is_some() && !matches!(ag.state, AgentState::WrapUp { .. }) => {
                    return Err(format!("{id} wraps a call up while {}", ag.state));
                }
                _ => {}
            }
            let on_placed = self.on_placed_call(ag);
            let placed_indexed = ag
                .call
                .as_ref()
                .is_some_and(|c| self.index.placed.get(c) == Some(&a));
            if on_placed != placed_indexed {
                return Err(format!("{id} placed-call index out of step"));
            }
            let indexed = self.index.agents.get(a).is_some_and(|x| !x.indexed.is_empty());
            let has_queues = self
                .index
                .agents
                .get(a)
                .is_some_and(|x| !x.memberships.is_empty());
            if has_queues && indexed != (ag.state == AgentState::Available) {
                return Err(format!("{id} available index out of step"));
            }
        }
        for (id, o) in &s.offers {
            let c = s
                .calls
                .get(&o.call)
                .ok_or(format!("offer {id} for a missing call"))?;
            if c.status != (CallStatus::Offered { offer: *id }) {
                return Err(format!("offer {id}: call {} is {:?}", o.call, c.status));
            }
            let mut agents = o.agents.clone();
            agents.sort_unstable();
            agents.dedup();
            if agents.len() != o.agents.len() || agents.is_empty() {
                return Err(format!("offer {id} lists an agent twice or none"));
            }
            for a in &o.agents {
                if s.agents.get(*a).and_then(|x| x.offer) != Some(*id) {
                    return Err(format!("offer {id} lists an agent not reserved for it"));
                }
            }
        }
        let waiting = s
            .calls
            .values()
            .filter(|c| c.status == CallStatus::Waiting)
            .count();
        let listed: usize = self.index.queues.iter().map(|qi| qi.waiting.len()).sum();
        if waiting != listed {
            return Err(format!("{waiting} calls waiting but {listed} listed"));
        }
        for c in s.calls.values() {
            if let CallStatus::Connected { agent, .. } = c.status
                && s.agents.get(agent).and_then(|a| a.call.as_ref()) != Some(&c.id)
            {
                return Err(format!("call {} connected to an agent not holding it", c.id));
            }
            if let CallStatus::Offered { offer } = c.status
                && s.offers.get(&offer).map(|o| &o.call) != Some(&c.id)
            {
                return Err(format!("call {} offered by a missing offer", c.id));
            }
        }
        self.check_work_conserving()
    }

    /// No available agent qualifies for a waiting call that the rules would let them take now: every
    /// chance to match was taken. Quadratic; for tests.
    fn check_work_conserving(&self) -> Result<(), String> {
        let at = self.state.now;
        for (a, ag) in self.state.agents.iter().enumerate() {
            if ag.state != AgentState::Available {
                continue;
            }
            let memberships = self
                .index
                .agents
                .get(a)
                .map(|x| x.memberships.as_slice())
                .unwrap_or_default();
            for call in self
                .state
                .calls
                .values()
                .filter(|c| c.status == CallStatus::Waiting)
            {
                let takes = match self.preferred_target(call, at) {
                    Some(p) => p == a,
                    None => memberships.iter().any(|&(q, rank)| {
                        q == call.queue
                            && self.state.queues.get(q).is_some_and(|queue| {
                                let (_, step) = self.current_step(call, &queue.config, at);
                                self.qualifies(a, call, step, rank, at)
                            })
                    }),
                };
                if takes {
                    return Err(format!(
                        "agent {} is idle while call {} waits for them",
                        ag.config.id, call.id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Rejects a snapshot whose internal references do not hold, so the router never indexes out of range.
pub(super) fn check_snapshot(s: &State) -> Result<(), RestoreError> {
    let err = |m: &str| Err(RestoreError(m.to_string()));
    let (nq, na) = (s.queues.len(), s.agents.len());
    let config = AcdConfig {
        queues: s.queues.iter().map(|q| q.config.clone()).collect(),
        agents: s.agents.iter().map(|a| a.config.clone()).collect(),
        random_seed: 0,
    };
    config.check().map_err(|e| RestoreError(e.to_string()))?;
    for (id, c) in &s.calls {
        if *id != c.id
            || c.queue >= nq
            || c.declined.iter().any(|&(a, _)| a >= na)
            || c.visited.iter().any(|&q| q >= nq)
        {
            return err("a call refers to a missing queue or agent");
        }
        match c.status {
            CallStatus::Connected { agent, .. } if agent >= na => {
                return err("a call is connected to a missing agent");
            }
            CallStatus::Offered { offer } if !s.offers.contains_key(&offer) => {
                return err("a call is offered by a missing offer");
            }
            _ => {}
        }
    }
    for o in s.offers.values() {
        if o.agents.iter().any(|&a| a >= na) || !s.calls.contains_key(&o.call) {
            return err("an offer refers to a missing agent or call");
        }
    }
    for t in s.timers.values() {
        if matches!(t, Timer::WrapUpEnd { agent, .. } if *agent >= na) {
            return err("a timer refers to a missing agent");
        }
    }
    for a in &s.agents {
        if a.wrap_queue.is_some_and(|q| q >= nq) {
            return err("an agent refers to a missing queue");
        }
    }
    let in_range = |t: &Timestamp| sane(*t) == *t;
    let times = [s.now, s.interval_start]
        .into_iter()
        .chain(s.agents.iter().map(|a| a.since))
        .chain(s.calls.values().flat_map(|c| [c.enqueued_at, c.queue_entered_at]))
        .chain(s.calls.values().filter_map(|c| match c.status {
            CallStatus::Connected { answered_at, .. } => Some(answered_at),
            _ => None,
        }))
        .chain(s.offers.values().map(|o| o.expires_at))
        .chain(s.timers.keys().map(|&(at, _)| Timestamp::from_millis(at)));
    for t in times {
        if !in_range(&t) {
            return err("a time is out of range");
        }
    }
    Ok(())
}
