//! The compiler of each kind of node but `branch`: its fields checked, its targets and variables
//! recorded, into the node's model (see [`super::NodeCtx`]).

use super::*;

impl NodeCtx<'_, '_> {
    pub(super) fn play(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let next = self.target("next", r.next.as_ref(), &[]);
        Some(NodeKind::Play(PlayNode {
            prompts,
            barge_in: r.barge_in.unwrap_or(false),
            next: next?,
        }))
    }

    pub(super) fn menu(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let mut choices = BTreeMap::new();
        match &r.choices {
            None => self.missing("choices"),
            Some(map) if map.is_empty() => self.missing("choices"),
            Some(map) => {
                for (key, target) in map {
                    let mut chars = key.chars();
                    let line = self.line(target);
                    match (chars.next(), chars.next()) {
                        (Some(c), None) if is_dtmf(c) => {
                            if let Some(t) = self.target_spanned(&format!("choices.{key}"), target, &[]) {
                                choices.insert(c, t);
                            }
                        }
                        _ => self.error(
                            line,
                            format!("choice {key:?} is not a key; use one of 0-9, *, #, A-D"),
                        ),
                    }
                }
            }
        }
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let retries = self.count(r.retries.as_ref(), 2, 10);
        let invalid_prompts = self.prompt_list(r.invalid_prompts.as_ref());
        let timeout_prompts = self.prompt_list(r.timeout_prompts.as_ref());
        let invalid = self.optional_target("invalid", r.invalid.as_ref());
        let exhausted = self.target("exhausted", r.exhausted.as_ref(), &[]);
        Some(NodeKind::Menu(MenuNode {
            prompts,
            barge_in: r.barge_in.unwrap_or(true),
            choices,
            timeout,
            retries,
            invalid_prompts,
            timeout_prompts,
            invalid: invalid?,
            exhausted: exhausted?,
        }))
    }

    pub(super) fn collect(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let into = match &r.into {
            None => {
                self.missing("into");
                None
            }
            Some(s) => match check_name(s.get_ref()) {
                Ok(()) if BUILTIN_VARIABLES.contains(&s.get_ref().as_str()) => {
                    let line = self.line(s);
                    self.error(
                        line,
                        format!("`into` cannot overwrite the built-in variable {:?}", s.get_ref()),
                    );
                    None
                }
                Ok(()) => Some(s.get_ref().clone()),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("variable name: {message}"));
                    None
                }
            },
        };
        let min_digits = self.count(r.min_digits.as_ref(), 1, 64) as usize;
        let max_digits = self.count(r.max_digits.as_ref(), 16, 64) as usize;
        if max_digits == 0 || min_digits > max_digits {
            let line = r.max_digits.as_ref().map(|s| self.line(s)).unwrap_or(self.line);
            self.error(
                line,
                format!(
                    "max_digits ({max_digits}) must be at least 1 and at least min_digits ({min_digits})"
                ),
            );
        }
        let terminator = match &r.terminator {
            None => Some('#'),
            Some(s) if s.get_ref().is_empty() => None,
            Some(s) => self.key(Some(s)),
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let inter_digit_timeout = self.duration(r.inter_digit_timeout.as_ref(), Duration::from_secs(3));
        let pattern = match &r.pattern {
            None => None,
            Some(s) => match DigitPattern::new(s.get_ref()) {
                Ok(p) => Some(p),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("pattern {:?}: {message}", s.get_ref()));
                    None
                }
            },
        };
        let retries = self.count(r.retries.as_ref(), 2, 10);
        let invalid_prompts = self.prompt_list(r.invalid_prompts.as_ref());
        let into = into?;
        let next = self.target("next", r.next.as_ref(), std::slice::from_ref(&into));
        let exhausted = self.target("exhausted", r.exhausted.as_ref(), &[]);
        Some(NodeKind::Collect(CollectNode {
            prompts,
            barge_in: r.barge_in.unwrap_or(true),
            into,
            min_digits,
            max_digits,
            terminator,
            timeout,
            inter_digit_timeout,
            pattern,
            retries,
            invalid_prompts,
            sensitive: r.sensitive.unwrap_or(false),
            next: next?,
            exhausted: exhausted?,
        }))
    }

    pub(super) fn lookup(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let by = match &r.by {
            None => LookupBy::CallerNumber,
            Some(s) if s.get_ref() == "caller" => LookupBy::CallerNumber,
            Some(s) => match variable_ref(s.get_ref()) {
                Some(var) => {
                    let line = self.line(s);
                    self.use_var(var, line);
                    LookupBy::Account(var.to_string())
                }
                None => {
                    let line = self.line(s);
                    self.error(
                        line,
                        format!("`by` is {:?}; write \"caller\" or \"${{variable}}\"", s.get_ref()),
                    );
                    return None;
                }
            },
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_REQUEST_TIMEOUT);
        let found: Vec<String> = CUSTOMER_VARIABLES.iter().map(|s| s.to_string()).collect();
        let next = self.target("next", r.next.as_ref(), &found);
        let not_found = self.target("not_found", r.not_found.as_ref(), &[]);
        let error = self.target("error", r.error.as_ref(), &[]);
        Some(NodeKind::Lookup(LookupNode {
            by,
            timeout,
            next: next?,
            not_found: not_found?,
            error: error?,
        }))
    }

    pub(super) fn webhook(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let url = match &r.url {
            None => {
                self.missing("url");
                None
            }
            Some(s) if is_webhook_url(s.get_ref()) => Some(s.get_ref().clone()),
            Some(s) => {
                let line = self.line(s);
                self.error(
                    line,
                    format!(
                        "url {:?} must start with http:// or https://, or be a path on this node such as /demo/balance",
                        s.get_ref()
                    ),
                );
                None
            }
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_REQUEST_TIMEOUT);
        let send = r.send.as_ref().map(|list| {
            let line = self.line(list);
            for var in list.get_ref() {
                self.use_var(var, line);
            }
            list.get_ref().clone()
        });
        let mut sets = Vec::new();
        if let Some(list) = &r.sets {
            let line = self.line(list);
            for var in list.get_ref() {
                match check_name(var) {
                    Ok(()) if BUILTIN_VARIABLES.contains(&var.as_str()) => self.error(
                        line,
                        format!("`sets` cannot overwrite the built-in variable {var:?}"),
                    ),
                    Ok(()) => sets.push(var.clone()),
                    Err(message) => self.error(line, format!("variable name: {message}")),
                }
            }
        }
        let next = self.target("next", r.next.as_ref(), &sets);
        let error = self.target("error", r.error.as_ref(), &[]);
        Some(NodeKind::Webhook(WebhookNode {
            url: url?,
            timeout,
            send,
            include_sensitive: r.include_sensitive.unwrap_or(false),
            sets,
            next: next?,
            error: error?,
        }))
    }

    pub(super) fn set(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let mut vars = Vec::new();
        for (name, value) in r.vars.iter().flatten() {
            let line = self.line(value);
            if let Err(message) = check_name(name) {
                self.error(line, format!("variable name: {message}"));
                continue;
            }
            if BUILTIN_VARIABLES.contains(&name.as_str()) {
                self.error(
                    line,
                    format!(
                        "cannot set the built-in variable {name:?}; use `language = ...` for the language"
                    ),
                );
                continue;
            }
            let expr = match value.get_ref() {
                toml::Value::String(s) => self.value_expr(s, line),
                toml::Value::Integer(i) => ValueExpr::Literal(i.to_string()),
                toml::Value::Boolean(b) => ValueExpr::Literal(b.to_string()),
                _ => {
                    self.error(line, format!("{name}: set a string, an integer or a boolean"));
                    continue;
                }
            };
            vars.push((name.clone(), expr));
        }
        let language = match &r.language {
            None => None,
            Some(s) => match check_language(s.get_ref()) {
                Ok(()) => Some(s.get_ref().clone()),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("language: {message}"));
                    None
                }
            },
        };
        if vars.is_empty() && language.is_none() && r.vars.is_none() {
            self.missing("vars");
        }
        let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
        let next = self.target("next", r.next.as_ref(), &names);
        Some(NodeKind::Set(SetNode {
            vars,
            language,
            next: next?,
        }))
    }

    pub(super) fn enqueue(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let queue = self.queue("queue", r.queue.as_ref());
        let priority = match &r.priority {
            None => Some(PriorityExpr::Fixed(0)),
            Some(s) => {
                let line = self.line(s);
                match s.get_ref() {
                    toml::Value::Integer(i) => match u8::try_from(*i) {
                        Ok(p) => Some(PriorityExpr::Fixed(p)),
                        Err(_) => {
                            self.error(line, "priority must be between 0 and 255");
                            None
                        }
                    },
                    toml::Value::String(text) => match variable_ref(text) {
                        Some(var) => {
                            self.use_var(var, line);
                            Some(PriorityExpr::Var(var.to_string()))
                        }
                        None => {
                            self.error(line, "priority is a number or \"${variable}\"");
                            None
                        }
                    },
                    _ => {
                        self.error(line, "priority is a number or \"${variable}\"");
                        None
                    }
                }
            }
        };
        let skills = r.skills.as_ref().map(|s| s.get_ref().clone());
        let preferred_agent = r.preferred_agent.as_ref().map(|s| {
            let line = self.line(s);
            let expr = self.value_expr(s.get_ref(), line);
            if let ValueExpr::Literal(text) = &expr
                && let Err(e) = AgentId::new(text)
            {
                self.error(line, format!("preferred_agent: {e}"));
            }
            expr
        });
        let announce_position = r.announce_position.unwrap_or(false);
        let announce_wait = r.announce_wait.unwrap_or(false);
        let announce_every = r
            .announce_every
            .as_ref()
            .map(|s| self.duration(Some(s), Duration::from_secs(30)));
        if (announce_position || announce_wait) && announce_every.is_none() {
            self.error(self.line, "announcements need `announce_every`, e.g. \"30s\"");
        }
        if announce_position || announce_wait {
            self.file.uses_announcements.set(true);
        }
        let offer_after = r
            .offer_after
            .as_ref()
            .map(|s| self.duration(Some(s), Duration::from_secs(60)));
        let offer_prompts = self.prompt_list(r.offer_prompts.as_ref());
        if offer_after.is_some() && offer_prompts.is_empty() {
            self.error(
                self.line,
                "`offer_after` needs `offer_prompts` that tell the caller which key to press",
            );
        }
        let exit_key = self.key(r.exit_key.as_ref());
        let on_exit = self.optional_target("on_exit", r.on_exit.as_ref());
        if r.exit_key.is_some() != r.on_exit.is_some() {
            self.error(self.line, "`exit_key` and `on_exit` go together");
        }
        let after_call = self.optional_target("after_call", r.after_call.as_ref());
        let on_failed = self.target("on_failed", r.on_failed.as_ref(), &[]);
        Some(NodeKind::Enqueue(EnqueueNode {
            queue: queue?,
            priority: priority?,
            skills,
            preferred_agent,
            announce_position,
            announce_wait,
            announce_every,
            offer_after,
            offer_prompts,
            exit_key,
            on_exit: on_exit?,
            after_call: after_call?,
            on_failed: on_failed?,
        }))
    }

    pub(super) fn callback(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let queue = self.queue("queue", r.queue.as_ref());
        let accept_key = match &r.accept_key {
            None => Some('1'),
            Some(s) => self.key(Some(s)),
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let confirm_prompts = self.prompt_list(r.confirm_prompts.as_ref());
        let decline = self.target("decline", r.decline.as_ref(), &[]);
        Some(NodeKind::Callback(CallbackNode {
            prompts,
            queue: queue?,
            accept_key: accept_key?,
            timeout,
            confirm_prompts,
            decline: decline?,
        }))
    }

    pub(super) fn voicemail(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.prompt_list(r.prompts.as_ref());
        let mailbox = match &r.mailbox {
            None => {
                self.missing("mailbox");
                None
            }
            Some(s) => match check_name(s.get_ref()) {
                Ok(()) => Some(s.get_ref().clone()),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("mailbox: {message}"));
                    None
                }
            },
        };
        let max_length = self.duration(r.max_length.as_ref(), Duration::from_secs(120));
        if max_length > Duration::from_secs(600) {
            let line = r.max_length.as_ref().map(|s| self.line(s)).unwrap_or(self.line);
            self.error(
                line,
                format!("max_length {} is over the 10m limit", format_duration(max_length)),
            );
        }
        Some(NodeKind::Voicemail(VoicemailNode {
            prompts,
            mailbox: mailbox?,
            max_length,
            beep: r.beep.unwrap_or(true),
        }))
    }

    pub(super) fn transfer(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.prompt_list(r.prompts.as_ref());
        let Some(to) = &r.to else {
            self.missing("to");
            return None;
        };
        let text = to.get_ref();
        let target = if text.starts_with("sip:") || text.starts_with("sips:") {
            let valid = text.contains('@') && !text.chars().any(|c| c.is_whitespace() || c.is_control());
            valid.then(|| TransferTarget::SipUri(text.clone()))
        } else {
            let digits = text.strip_prefix('+').unwrap_or(text);
            let valid = (2..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
            valid.then(|| TransferTarget::Number(text.clone()))
        };
        match target {
            Some(to) => Some(NodeKind::Transfer(TransferNode { prompts, to })),
            None => {
                let line = self.line(to);
                self.error(
                    line,
                    format!("`to` {text:?} is neither a number (+ and 2-15 digits) nor a sip: URI"),
                );
                None
            }
        }
    }

    pub(super) fn survey(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let retries = self.count(r.retries.as_ref(), 1, 10);
        let invalid_prompts = self.prompt_list(r.invalid_prompts.as_ref());
        let next = self.target("next", r.next.as_ref(), &[]);
        Some(NodeKind::Survey(SurveyNode {
            prompts,
            timeout,
            retries,
            invalid_prompts,
            next: next?,
        }))
    }

    pub(super) fn goto(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let Some(flow) = &r.flow else {
            self.missing("flow");
            return None;
        };
        let flow_name = flow.get_ref().clone();
        let Some((start, nodes)) = self.file.nodes_of.get(&flow_name) else {
            let line = self.line(flow);
            let message = if self.file.flow_names.contains(&flow_name) {
                format!("flow {flow_name:?} has errors")
            } else {
                format!("`flow` names unknown flow {flow_name:?} (expected {flow_name}.toml)")
            };
            self.error(line, message);
            return None;
        };
        let node = match &r.node {
            None => None,
            Some(n) if nodes.contains(n.get_ref()) => Some(n.get_ref().clone()),
            Some(n) => {
                let line = self.line(n);
                self.error(
                    line,
                    format!(
                        "`node` names unknown node {:?} of flow {flow_name:?}",
                        n.get_ref()
                    ),
                );
                return None;
            }
        };
        let to = node.clone().unwrap_or_else(|| start.clone());
        self.edges.push(Edge {
            to: NodeId::new(&flow_name, &to),
            defines: Vec::new(),
        });
        Some(NodeKind::Goto(GotoNode {
            flow: flow_name,
            node,
        }))
    }

    pub(super) fn hangup(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.prompt_list(r.prompts.as_ref());
        let reason = r
            .reason
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| "completed".to_string());
        Some(NodeKind::Hangup(HangupNode { prompts, reason }))
    }
}
