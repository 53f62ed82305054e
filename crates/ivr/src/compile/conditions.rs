//! The compiler of `branch` nodes and their conditions: time, schedules, variables and queue
//! state, nested up to a depth limit.

use super::*;

impl NodeCtx<'_, '_> {
    pub(super) fn branch(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let mut cases = Vec::new();
        let mut ok = true;
        for case in r.cases.iter().flatten() {
            let line = self.line(&case.when);
            let when = self.condition(case.when.get_ref(), line, 0);
            let next = self.target_spanned("next", &case.next, &[]);
            match (when, next) {
                (Some(when), Some(next)) => cases.push(BranchCase { when, next }),
                _ => ok = false,
            }
        }
        if r.cases.as_ref().is_none_or(Vec::is_empty) {
            self.missing("cases");
        }
        let default = self.target("default", r.default.as_ref(), &[]);
        if !ok {
            return None;
        }
        Some(NodeKind::Branch(BranchNode {
            cases,
            default: default?,
        }))
    }

    fn condition(&mut self, raw: &RawCondition, line: u32, depth: u32) -> Option<Condition> {
        if depth > 8 {
            self.error(line, "conditions are nested too deeply");
            return None;
        }
        let selectors = [
            raw.open.is_some(),
            raw.holiday.is_some(),
            raw.weekday.is_some(),
            raw.time_between.is_some(),
            raw.var.is_some(),
            raw.queue.is_some(),
            raw.all.is_some(),
            raw.any.is_some(),
            raw.not.is_some(),
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            self.error(
                line,
                "a condition needs exactly one of open, holiday, weekday, time_between, var, queue, all, any, not",
            );
            return None;
        }
        let schedule = |ctx: &mut Self, name: &String| {
            if ctx.schedules.contains_key(name) {
                Some(name.clone())
            } else {
                ctx.error(line, format!("unknown schedule {name:?}"));
                None
            }
        };
        if let Some(name) = &raw.open {
            return schedule(self, name).map(Condition::Open);
        }
        if let Some(name) = &raw.holiday {
            return schedule(self, name).map(Condition::Holiday);
        }
        if let Some(days) = &raw.weekday {
            let parsed: Result<Vec<_>, String> = days.iter().map(|d| parse_weekday(d)).collect();
            return match parsed {
                Ok(days) => Some(Condition::Weekday(days)),
                Err(e) => {
                    self.error(line, e);
                    None
                }
            };
        }
        if let Some(range) = &raw.time_between {
            let [from, to] = range.as_slice() else {
                self.error(line, "time_between needs two times, e.g. [\"08:00\", \"12:00\"]");
                return None;
            };
            return match (parse_time_of_day(from), parse_time_of_day(to)) {
                (Ok(a), Ok(b)) if a < b => Some(Condition::TimeBetween(a, b)),
                (Ok(_), Ok(_)) => {
                    self.error(line, "time_between must start before it ends");
                    None
                }
                (Err(e), _) | (_, Err(e)) => {
                    self.error(line, e);
                    None
                }
            };
        }
        if let Some(name) = &raw.var {
            return self.var_condition(raw, name, line);
        }
        if let Some(queue) = &raw.queue {
            return self.queue_condition(raw, queue, line);
        }
        let list = |ctx: &mut Self, items: &Vec<RawCondition>| -> Option<Vec<Condition>> {
            if items.is_empty() {
                ctx.error(line, "all/any needs at least one condition");
                return None;
            }
            let out: Vec<Option<Condition>> =
                items.iter().map(|c| ctx.condition(c, line, depth + 1)).collect();
            out.into_iter().collect()
        };
        if let Some(items) = &raw.all {
            return list(self, items).map(Condition::All);
        }
        if let Some(items) = &raw.any {
            return list(self, items).map(Condition::Any);
        }
        let inner = raw.not.as_ref()?;
        self.condition(inner, line, depth + 1)
            .map(|c| Condition::Not(Box::new(c)))
    }

    fn var_condition(&mut self, raw: &RawCondition, name: &str, line: u32) -> Option<Condition> {
        let tests = [
            raw.equals.is_some(),
            raw.not_equals.is_some(),
            raw.one_of.is_some(),
            raw.starts_with.is_some(),
            raw.matches.is_some(),
            raw.less_than.is_some(),
            raw.greater_than.is_some(),
            raw.set.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            self.error(
                line,
                "a var condition needs exactly one of equals, not_equals, one_of, starts_with, matches, less_than, greater_than, set",
            );
            return None;
        }
        let literal = |ctx: &mut Self, value: &toml::Value| -> Option<String> {
            match value {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::Boolean(b) => Some(b.to_string()),
                _ => {
                    ctx.error(line, "compare with a string, an integer or a boolean");
                    None
                }
            }
        };
        let test = if let Some(v) = &raw.equals {
            VarTest::Equals(literal(self, v)?)
        } else if let Some(v) = &raw.not_equals {
            VarTest::NotEquals(literal(self, v)?)
        } else if let Some(list) = &raw.one_of {
            let values: Vec<Option<String>> = list.iter().map(|v| literal(self, v)).collect();
            VarTest::OneOf(values.into_iter().collect::<Option<Vec<_>>>()?)
        } else if let Some(prefix) = &raw.starts_with {
            VarTest::StartsWith(prefix.clone())
        } else if let Some(source) = &raw.matches {
            match DigitPattern::new(source) {
                Ok(p) => VarTest::Matches(p),
                Err(message) => {
                    self.error(line, format!("pattern {source:?}: {message}"));
                    return None;
                }
            }
        } else if let Some(n) = raw.less_than {
            VarTest::LessThan(n)
        } else if let Some(n) = raw.greater_than {
            VarTest::GreaterThan(n)
        } else {
            VarTest::IsSet(raw.set.unwrap_or(true))
        };
        if matches!(test, VarTest::IsSet(_)) {
            if let Err(message) = check_name(name) {
                self.error(line, format!("variable name: {message}"));
                return None;
            }
        } else {
            self.use_var(name, line);
        }
        Some(Condition::Var {
            name: name.to_string(),
            test,
        })
    }

    fn queue_condition(&mut self, raw: &RawCondition, queue: &str, line: u32) -> Option<Condition> {
        let queue = match QueueId::new(queue) {
            Ok(q) => q,
            Err(e) => {
                self.error(line, format!("queue: {e}"));
                return None;
            }
        };
        let count = |ctx: &mut Self, n: i64| match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                ctx.error(line, "must be 0 or more");
                None
            }
        };
        match (
            raw.agents_available_at_least,
            &raw.wait_below,
            raw.waiting_at_most,
        ) {
            (Some(n), None, None) => Some(Condition::AgentsAvailable {
                queue,
                at_least: count(self, n)?,
            }),
            (None, Some(d), None) => match parse_duration(d) {
                Ok(below) => Some(Condition::WaitBelow { queue, below }),
                Err(e) => {
                    self.error(line, e.to_string());
                    None
                }
            },
            (None, None, Some(n)) => Some(Condition::QueueLengthAtMost {
                queue,
                at_most: count(self, n)?,
            }),
            _ => {
                self.error(
                    line,
                    "a queue condition needs exactly one of agents_available_at_least, wait_below, waiting_at_most",
                );
                None
            }
        }
    }
}
