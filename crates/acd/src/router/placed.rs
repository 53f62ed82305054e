//! Calls agents place themselves (click-to-dial, a preview campaign's lead). No queue holds them,
//! but the agent is on them as on any call: the router offers the agent nothing meanwhile, the
//! agent's call (in the KPIs) names this one, talk and after-call work count in the agent's
//! figures (not in any queue's), and the agent goes back afterwards to ready or to the not-ready
//! reason they dialled from. Both inputs are idempotent, since a cluster may deliver one twice.

use super::*;

impl Acd {
    pub(super) fn place_call(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        call: CallId,
        wrap_up_secs: u32,
        then_not_ready: Option<ReasonCode>,
    ) -> Result<(), AcdError> {
        let a = self.agent_ix(agent)?;
        let again = self
            .state
            .agents
            .get(a)
            .and_then(|x| x.placed.as_ref())
            .is_some_and(|p| p.call == call);
        if again {
            // Redelivered, whether the call still goes on or has ended.
            return Ok(());
        }
        let elsewhere = self.index.placed.contains_key(&call);
        if elsewhere || self.state.calls.contains_key(&call) {
            return Err(AcdError::DuplicateCall(call));
        }
        self.transition(now, a, AgentEvent::Placed)?;
        self.index.placed.insert(call.clone(), a);
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.call = Some(call.clone());
            ag.placed = Some(PlacedCall {
                call,
                wrap_up_secs,
                then_not_ready,
            });
        }
        Ok(())
    }

    /// The end of a placed call: after-call work, or at once back where the agent dialled from.
    /// A call no agent is on (ended already, or never placed) is unknown.
    pub(super) fn end_placed(&mut self, now: Timestamp, call_id: &CallId) -> Result<(), AcdError> {
        let Some(&a) = self.index.placed.get(call_id) else {
            return Err(AcdError::UnknownCall(call_id.clone()));
        };
        let Some((wrap, then, since)) = self.state.agents.get(a).and_then(|x| {
            let p = x.placed.as_ref()?;
            Some((p.wrap_up_secs, p.then_not_ready.clone(), x.since))
        }) else {
            return Err(AcdError::Internal("placed call without its agent"));
        };
        let wrap_up_until = (wrap > 0).then(|| now + secs(wrap));
        let event = AgentEvent::CallEnded { wrap_up_until };
        self.check_transition(a, &event)?;
        let talk = ms(now.since(since));
        self.index.placed.remove(call_id);
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.call = None;
            ag.wrap_call = wrap_up_until.map(|_| call_id.clone());
            // No queue: its handle time is not this call's.
            ag.wrap_queue = None;
            ag.lifetime_handled = ag.lifetime_handled.saturating_add(1);
            ag.lifetime_talk_ms = ag.lifetime_talk_ms.saturating_add(talk);
            ag.counters.handled = ag.counters.handled.saturating_add(1);
            ag.counters.talk_ms = ag.counters.talk_ms.saturating_add(talk);
        }
        if wrap_up_until.is_some() {
            return self.transition(now, a, event);
        }
        match then {
            // Straight back to not ready: never available in between, so never offered a call.
            Some(reason) => {
                self.transition(now, a, event)?;
                self.transition(now, a, AgentEvent::NotReady(reason))
            }
            None => {
                self.transition(now, a, event)?;
                self.route_agent(now, a, Trigger::AgentAvailable);
                Ok(())
            }
        }
    }

    /// The end of an agent's after-call work (by timer or by the agent): ready and offered the next
    /// call, or, after a call they placed while not ready, not ready again with their reason.
    pub(super) fn after_wrap_up(&mut self, now: Timestamp, a: usize) -> Result<(), AcdError> {
        let then = self.state.agents.get(a).and_then(|x| {
            let p = x.placed.as_ref()?;
            if x.wrap_call.as_ref() == Some(&p.call) {
                p.then_not_ready.clone()
            } else {
                None
            }
        });
        match then {
            Some(reason) => self.transition(now, a, AgentEvent::NotReady(reason)),
            None => {
                self.transition(now, a, AgentEvent::Ready)?;
                self.route_agent(now, a, Trigger::AgentAvailable);
                Ok(())
            }
        }
    }

    /// Whether the agent is on a call they placed.
    pub(super) fn on_placed_call(&self, ag: &AgentRt) -> bool {
        ag.state == AgentState::OnCall
            && ag
                .placed
                .as_ref()
                .is_some_and(|p| ag.call.as_ref() == Some(&p.call))
    }
}

impl Acd {
    /// Every call an agent placed and is on now, with the agent, in configuration order. A
    /// restarted owner ends those it no longer has (their driver went with the process).
    pub fn placed_calls(&self) -> Vec<(AgentId, CallId)> {
        self.state
            .agents
            .iter()
            .filter(|x| self.on_placed_call(x))
            .filter_map(|x| Some((x.config.id.clone(), x.call.clone()?)))
            .collect()
    }
}

impl Acd {
    /// The agent on `call` if it is a call they placed and still go on with.
    pub fn placed_call_agent(&self, call: &CallId) -> Option<AgentId> {
        let a = *self.index.placed.get(call)?;
        Some(self.state.agents.get(a)?.config.id.clone())
    }
}
