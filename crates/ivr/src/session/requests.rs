//! The session's requests to its owner and their answers: customer lookups, webhooks and queue
//! state for branches, and the variables they set.

use super::*;

impl<'a> Run<'a> {
    pub(super) fn log_lookup(&mut self, what: &str, outcome: &str) {
        self.emit(IvrCommand::Log(IvrLog::LookupDone {
            what: what.to_string(),
            outcome: outcome.to_string(),
        }));
    }

    pub(super) fn awaiting(&self, request: RequestId) -> bool {
        self.state.phase == Phase::Request { request }
    }

    pub(super) fn lookup_result(&mut self, request: RequestId, result: LookupResult) {
        if !self.awaiting(request) {
            return;
        }
        let Some((_, node)) = self.current() else { return };
        let NodeKind::Lookup(n) = &node.kind else { return };
        self.cancel_timers(Some(TimerPurpose::Request));
        match result {
            LookupResult::Found(record) => {
                let vars = &mut self.state.vars;
                vars.insert("customer.id".into(), Value::Text(record.id.to_string()));
                vars.insert("customer.name".into(), Value::Personal(record.name.clone()));
                vars.insert("customer.tier".into(), Value::Text(record.tier.clone()));
                let manager = record
                    .account_manager
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                vars.insert("customer.account_manager".into(), Value::Text(manager));
                vars.insert(
                    "customer.open_cases".into(),
                    Value::Text(record.open_cases.to_string()),
                );
                self.emit(IvrCommand::Log(IvrLog::CustomerIdentified {
                    customer: record.id,
                    tier: record.tier,
                }));
                self.log_lookup("crm", "found");
                self.enter(self.local(&n.next), None);
            }
            LookupResult::NotFound => {
                self.log_lookup("crm", "not_found");
                self.enter(self.local(&n.not_found), None);
            }
            LookupResult::Failed => {
                self.log_lookup("crm", "error");
                self.enter(self.local(&n.error), None);
            }
        }
    }

    pub(super) fn webhook_body(&self, n: &WebhookNode) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        let names: Vec<String> = match &n.send {
            Some(list) => list.clone(),
            None => BUILTIN_VARIABLES
                .iter()
                .map(|s| s.to_string())
                .chain(self.state.vars.keys().cloned())
                .collect(),
        };
        for name in names {
            let secret = matches!(self.state.vars.get(&name), Some(Value::Secret));
            if secret && !n.include_sensitive {
                continue;
            }
            if let Some(text) = self.text(&name) {
                body.insert(name, serde_json::Value::String(text));
            }
        }
        serde_json::Value::Object(body)
    }

    pub(super) fn webhook_result(&mut self, request: RequestId, result: WebhookResult) {
        if !self.awaiting(request) {
            return;
        }
        let Some((_, node)) = self.current() else { return };
        let NodeKind::Webhook(n) = &node.kind else { return };
        self.cancel_timers(Some(TimerPurpose::Request));
        let reply = match result {
            WebhookResult::Reply(body) => body.into_inner(),
            WebhookResult::Failed => {
                self.log_lookup("webhook", "error");
                return self.enter(self.local(&n.error), None);
            }
        };
        let mut values = Vec::new();
        for name in &n.sets {
            let value = match reply.get(name) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(x)) => x.to_string(),
                Some(serde_json::Value::Bool(b)) => b.to_string(),
                _ => {
                    self.log_lookup("webhook", "bad_reply");
                    return self.enter(self.local(&n.error), None);
                }
            };
            values.push((name.clone(), value));
        }
        for (name, value) in values {
            self.state.secrets.remove(&name);
            self.state.vars.insert(name, Value::Personal(Pii::new(value)));
        }
        self.log_lookup("webhook", "ok");
        self.enter(self.local(&n.next), None);
    }

    // ---- branches ----

    pub(super) fn queue_state(&mut self, request: RequestId, snapshot: QueueSnapshot) {
        let Phase::QueueQuery { pending, answers } = &mut self.state.phase else {
            return;
        };
        let Some(index) = pending.iter().position(|(r, _)| *r == request) else {
            return;
        };
        let (_, queue) = pending.remove(index);
        answers.push((queue, snapshot));
        if !pending.is_empty() {
            return;
        }
        let answers = answers.clone();
        self.cancel_timers(Some(TimerPurpose::QueueQuery));
        let Some((flow, node)) = self.current() else {
            return;
        };
        let NodeKind::Branch(n) = &node.kind else { return };
        let target = self.decide(flow, n, &answers);
        self.enter(target, None);
    }

    pub(super) fn decide(
        &self,
        flow: &Flow,
        branch: &BranchNode,
        queues: &[(QueueId, QueueSnapshot)],
    ) -> Target {
        let local = LocalTime::of(self.now, &flow.time_zone);
        let chosen = branch
            .cases
            .iter()
            .find(|case| self.holds(&case.when, flow, local, queues))
            .map_or(&branch.default, |case| &case.next);
        self.local(chosen)
    }

    pub(super) fn holds(
        &self,
        condition: &Condition,
        flow: &Flow,
        local: LocalTime,
        queues: &[(QueueId, QueueSnapshot)],
    ) -> bool {
        let queue = |q: &QueueId| queues.iter().find(|(name, _)| name == q).map(|(_, s)| *s);
        match condition {
            Condition::Open(name) => flow.schedules.get(name).is_some_and(|s| s.is_open(local)),
            Condition::Holiday(name) => flow.schedules.get(name).is_some_and(|s| s.is_holiday(local)),
            Condition::Weekday(days) => days.contains(&local.weekday),
            Condition::TimeBetween(from, to) => *from <= local.time && local.time < *to,
            Condition::Var { name, test } => {
                let value = self.text(name);
                match (test, value) {
                    (VarTest::IsSet(want), value) => value.is_some() == *want,
                    (_, None) => false,
                    (VarTest::Equals(x), Some(v)) => v == *x,
                    (VarTest::NotEquals(x), Some(v)) => v != *x,
                    (VarTest::OneOf(list), Some(v)) => list.contains(&v),
                    (VarTest::StartsWith(prefix), Some(v)) => v.starts_with(prefix.as_str()),
                    (VarTest::Matches(pattern), Some(v)) => pattern.matches(&v),
                    (VarTest::LessThan(n), Some(v)) => v.trim().parse::<i64>().is_ok_and(|v| v < *n),
                    (VarTest::GreaterThan(n), Some(v)) => v.trim().parse::<i64>().is_ok_and(|v| v > *n),
                }
            }
            Condition::AgentsAvailable { queue: q, at_least } => {
                queue(q).is_some_and(|s| s.agents_available >= *at_least)
            }
            Condition::WaitBelow { queue: q, below } => queue(q).is_some_and(|s| s.estimated_wait < *below),
            Condition::QueueLengthAtMost { queue: q, at_most } => {
                queue(q).is_some_and(|s| s.waiting <= *at_most)
            }
            Condition::All(list) => list.iter().all(|c| self.holds(c, flow, local, queues)),
            Condition::Any(list) => list.iter().any(|c| self.holds(c, flow, local, queues)),
            Condition::Not(inner) => !self.holds(inner, flow, local, queues),
        }
    }

    // ---- variables ----

    /// A variable's value as text, built-ins included. Sensitive values are readable here (for
    /// validation webhooks and comparisons) but never copied into saved state.
    pub(super) fn text(&self, name: &str) -> Option<String> {
        match name {
            "caller" => return Some(self.state.call.caller.expose().clone()),
            "called" => return Some(self.state.call.called.expose().clone()),
            "language" => return Some(self.state.language.clone()),
            "now" => return Some(self.now.as_millis().to_string()),
            _ => {}
        }
        match self.state.vars.get(name)? {
            Value::Text(t) => Some(t.clone()),
            Value::Personal(p) => Some(p.expose().clone()),
            Value::Secret => self.state.secrets.get(name).map(|s| s.expose().clone()),
        }
    }

    pub(super) fn copy_var(&mut self, source: &str, into: &str) {
        let value = match (source, self.state.vars.get(source)) {
            ("caller" | "called", _) => self.text(source).map(|t| Value::Personal(Pii::new(t))),
            ("language" | "now", _) => self.text(source).map(Value::Text),
            (_, Some(Value::Secret)) => {
                if let Some(secret) = self.state.secrets.get(source).cloned() {
                    self.state.secrets.insert(into.to_string(), secret);
                }
                Some(Value::Secret)
            }
            (_, value) => value.cloned(),
        };
        if let Some(value) = value {
            self.state.vars.insert(into.to_string(), value);
        }
    }
}
