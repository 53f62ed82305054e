//! The caller in a queue: enqueueing with the node's priority and skills, what they hear while they
//! wait (position, wait, the callback offer), the exit key, and what follows the agent's call.

use super::*;

impl<'a> Run<'a> {
    pub(super) fn enqueue(&mut self, n: &EnqueueNode) {
        let rejoining = self.state.queue.as_ref().is_some_and(|c| c.queue == n.queue);
        if !rejoining {
            let priority = match &n.priority {
                PriorityExpr::Fixed(p) => *p,
                PriorityExpr::Var(var) => self
                    .text(var)
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .map_or(0, |p| u8::try_from(p.clamp(0, 255)).unwrap_or(0)),
            };
            let preferred_agent = n.preferred_agent.as_ref().and_then(|expr| {
                let text = match expr {
                    ValueExpr::Literal(t) => Some(t.clone()),
                    ValueExpr::Var(v) => self.text(v),
                };
                text.and_then(|t| AgentId::new(t).ok())
            });
            self.emit(IvrCommand::Enqueue {
                queue: n.queue.clone(),
                priority,
                skills: n.skills.clone(),
                preferred_agent,
            });
            self.state.queue = Some(QueueContext {
                queue: n.queue.clone(),
                flow: self.state.flow.clone(),
                node: self.state.node.clone(),
                since: self.now,
                position: None,
                estimated_wait: None,
                offered: false,
            });
        }
        self.state.phase = Phase::Queued;
        if (n.announce_position || n.announce_wait)
            && let Some(every) = n.announce_every
        {
            self.start_timer(TimerPurpose::Announce, every);
        }
        if let (Some(after), Some(ctx)) = (n.offer_after, &self.state.queue)
            && !ctx.offered
        {
            let waited = self.now.since(ctx.since);
            self.start_timer(
                TimerPurpose::Offer,
                after.saturating_sub(waited).max(Duration::from_millis(1)),
            );
        }
    }

    pub(super) fn announcement(&self, n: &EnqueueNode) -> Vec<String> {
        let mut names = Vec::new();
        let Some(ctx) = &self.state.queue else {
            return names;
        };
        if n.announce_position
            && let Some(position) = ctx.position
        {
            names.push("queue-position".to_string());
            names.extend(say_number_in(
                u64::from(position),
                &self.state.language,
                NumberUse::Ordinal,
            ));
            if is_chinese(&self.state.language) {
                names.push("queue-position-end".to_string());
            }
        }
        if n.announce_wait
            && let Some(wait) = ctx.estimated_wait
        {
            names.push("queue-wait".to_string());
            names.extend(say_number_in(
                wait.as_secs().div_ceil(60).max(1),
                &self.state.language,
                NumberUse::Count,
            ));
            names.push("minutes".to_string());
        }
        names
    }

    pub(super) fn queued_key(&mut self, key: char) {
        let Some((_, node)) = self.current() else { return };
        let NodeKind::Enqueue(n) = &node.kind else { return };
        if n.exit_key == Some(key)
            && let Some(on_exit) = &n.on_exit
        {
            self.enter(self.local(on_exit), Some(key));
        }
    }

    /// The enqueue node that put the call in its queue.
    pub(super) fn enqueue_node(&self) -> Option<(Target, &'a EnqueueNode)> {
        let ctx = self.state.queue.as_ref()?;
        let node = self.flows.flow(&ctx.flow)?.nodes.get(&ctx.node)?;
        match &node.kind {
            NodeKind::Enqueue(n) => Some((
                Target {
                    flow: ctx.flow.clone(),
                    node: ctx.node.clone(),
                },
                n,
            )),
            _ => None,
        }
    }

    pub(super) fn queue_event(&mut self, event: QueueEvent) {
        if self.state.queue.is_none() || matches!(self.state.phase, Phase::Connected { .. }) {
            return;
        }
        match event {
            QueueEvent::Position {
                position,
                estimated_wait,
            } => {
                if let Some(ctx) = &mut self.state.queue {
                    ctx.position = Some(position);
                    ctx.estimated_wait = Some(estimated_wait);
                }
            }
            QueueEvent::AgentAnswered { agent } => {
                self.leave_node();
                self.state.phase = Phase::Connected { agent };
            }
            QueueEvent::Rejected => {
                let Some((at, n)) = self.enqueue_node() else {
                    return self.fail("queue context lost");
                };
                self.state.queue = None;
                self.enter(
                    Target {
                        flow: at.flow,
                        node: n.on_failed.clone(),
                    },
                    None,
                );
            }
        }
    }

    pub(super) fn agent_hung_up(&mut self) {
        if !matches!(self.state.phase, Phase::Connected { .. }) {
            return;
        }
        let after = self
            .enqueue_node()
            .and_then(|(at, n)| n.after_call.clone().map(|node| Target { flow: at.flow, node }));
        self.state.queue = None;
        match after {
            Some(target) => self.enter(target, None),
            None => {
                self.finish(Outcome::HungUp {
                    reason: "agent_hung_up".to_string(),
                });
                self.emit(IvrCommand::Hangup {
                    reason: "agent_hung_up".to_string(),
                });
            }
        }
    }
}
