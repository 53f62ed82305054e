//! The live KPI snapshot, computed from the router's counters and current state.

use super::*;

impl Acd {
    /// The live KPIs at `now` (no state changes; time in the current agent states is included).
    pub fn kpis(&self, now: Timestamp) -> KpiSnapshot {
        let now = sane(now).max(self.state.now);
        let mut offering = vec![0u32; self.state.queues.len()];
        for o in self.state.offers.values() {
            if let Some(n) = self
                .state
                .calls
                .get(&o.call)
                .and_then(|c| offering.get_mut(c.queue))
            {
                *n += 1;
            }
        }
        let queues = self
            .state
            .queues
            .iter()
            .enumerate()
            .map(|(q, queue)| {
                let qi = self.index.queues.get(q);
                let waiting_calls = qi.map(|qi| qi.waiting.values().filter_map(|c| self.state.calls.get(c)));
                let oldest_wait_ms = waiting_calls
                    .into_iter()
                    .flatten()
                    .map(|c| ms(now.since(c.queue_entered_at)))
                    .max();
                let waiting = qi.map_or(0, |qi| qi.waiting.len() as u64);
                let mut agents_by_state = BTreeMap::new();
                for &a in qi.map(|qi| qi.members.as_slice()).unwrap_or_default() {
                    if let Some(ag) = self.state.agents.get(a) {
                        *agents_by_state.entry(ag.state.kind()).or_insert(0) += 1;
                    }
                }
                let c = &queue.counters;
                QueueKpi {
                    queue: queue.config.id.clone(),
                    waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
                    offering: offering.get(q).copied().unwrap_or(0),
                    oldest_wait_ms,
                    estimated_wait_ms: self.queue_ewt_ms(q, waiting),
                    service_level: c.service_level(queue.config.service_level_formula),
                    service_level_target: queue.config.service_level,
                    service_level_formula: queue.config.service_level_formula,
                    asa_ms: c.asa_ms(),
                    abandon_rate: c.abandon_rate(),
                    abandon_rate_excluding_short: c.abandon_rate_excluding_short(),
                    aht_ms: c.aht_ms(),
                    agents_by_state,
                    counters: c.clone(),
                }
            })
            .collect();
        // One pass over the calls finds every agent's held-back calls.
        let mut held_back = vec![Vec::new(); self.state.agents.len()];
        for call in self.state.calls.values() {
            if matches!(call.status, CallStatus::Connected { .. }) {
                continue;
            }
            for &(a, until) in &call.declined {
                if now < until
                    && let Some(list) = held_back.get_mut(a)
                {
                    list.push(HeldBack {
                        call: call.id.clone(),
                        until,
                    });
                }
            }
        }
        let agents = self
            .state
            .agents
            .iter()
            .zip(held_back)
            .map(|(ag, mut held_back)| {
                held_back.sort_by(|x, y| (x.until, &x.call).cmp(&(y.until, &y.call)));
                let mut counters = ag.counters.clone();
                let spent = ms(now.since(ag.since.max(self.state.interval_start)));
                counters.times.add(&ag.state, spent);
                if matches!(ag.state, AgentState::WrapUp { .. }) {
                    counters.wrap_ms = counters.wrap_ms.saturating_add(spent);
                }
                AgentKpi {
                    agent: ag.config.id.clone(),
                    state: ag.state.clone(),
                    since: ag.since,
                    call: ag.call.clone().or_else(|| {
                        ag.offer
                            .and_then(|o| self.state.offers.get(&o))
                            .map(|o| o.call.clone())
                    }),
                    placed: self.on_placed_call(ag),
                    wrap_up_call: ag.wrap_call.clone(),
                    occupancy: counters.times.occupancy(),
                    counters,
                    held_back,
                }
            })
            .collect();
        KpiSnapshot {
            at: now,
            interval_start: self.state.interval_start,
            queues,
            agents,
        }
    }
}
