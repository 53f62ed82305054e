//! More time for after-call work: an agent in wrap-up asks for it, the queue's `wrap_up_max_secs`
//! caps the whole wrap-up (counted from the call's end). The state stays wrap-up, its time in state
//! and counters run on; only the end moves, and a changed state tells every desktop the new end.

use super::*;

impl Acd {
    pub(super) fn extend_wrap_up(&mut self, agent: &AgentId, extra_secs: u32) -> Result<(), AcdError> {
        let a = self.agent_ix(agent)?;
        let refuse = |from: &AgentState, why: &'static str| AcdError::IllegalTransition {
            agent: agent.clone(),
            source: IllegalTransition {
                from: from.kind(),
                event: "extend_wrap_up",
                why,
            },
        };
        let Some(ag) = self.state.agents.get(a) else {
            return Err(AcdError::UnknownAgent(agent.clone()));
        };
        let AgentState::WrapUp { until } = ag.state else {
            return Err(refuse(&ag.state, "the agent is not in wrap-up"));
        };
        let max = ag
            .wrap_queue
            .and_then(|q| self.state.queues.get(q))
            .map_or(0, |q| q.config.wrap_up_max_secs);
        let limit = ag.since + secs(max);
        let extended = (until + secs(extra_secs)).min(limit);
        if extended <= until {
            return Err(refuse(&ag.state, "the wrap-up is at its longest"));
        }
        let agent_id = ag.config.id.clone();
        let wrap_up_since = ag.since;
        let old_timer = self.state.agents.get_mut(a).and_then(|x| {
            x.state = AgentState::WrapUp { until: extended };
            x.wrap_timer.take()
        });
        if let Some(key) = old_timer {
            self.state.timers.remove(&key);
        }
        let key = self.schedule(
            extended,
            Timer::WrapUpEnd {
                agent: a,
                until: extended,
            },
        );
        if let Some(x) = self.state.agents.get_mut(a) {
            x.wrap_timer = Some(key);
        }
        self.state.outputs.push_back(Output::AgentStateChanged {
            agent: agent_id,
            from: AgentState::WrapUp { until },
            to: AgentState::WrapUp { until: extended },
            // The same wrap-up goes on: it is dated from its start, so time in state and the state
            // history run on as one span.
            at: wrap_up_since,
        });
        Ok(())
    }
}
