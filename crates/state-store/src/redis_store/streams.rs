//! The Redis backend's durable streams: appends (plain and capped), consumer groups (read,
//! acknowledge, claim, trim what every group consumed), reads from a position, blocking reads on
//! pooled links of their own, and the fenced stream commit.

use super::*;

impl RedisStore {
    pub(crate) async fn stream_append(&self, stream: &str, payload: &[u8]) -> StateResult<StreamEntryId> {
        let mut conn = self.write_conn().await?;
        let id: String = redis::cmd("XADD")
            .arg(self.key(&["stream", stream]))
            .arg("*")
            .arg("d")
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        self.confirm(&mut conn).await?;
        Ok(StreamEntryId(id))
    }

    pub(crate) async fn stream_append_capped(
        &self,
        stream: &str,
        payload: &[u8],
        max_len: usize,
    ) -> StateResult<StreamEntryId> {
        let mut conn = self.write_conn().await?;
        let id: String = redis::cmd("XADD")
            .arg(self.key(&["stream", stream]))
            .arg("MAXLEN")
            .arg(max_len)
            .arg("*")
            .arg("d")
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        self.confirm(&mut conn).await?;
        Ok(StreamEntryId(id))
    }

    pub(crate) async fn stream_ensure_group(&self, stream: &str, group: &str) -> StateResult<()> {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key(&["stream", stream]))
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub(crate) async fn stream_read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
    ) -> StateResult<Vec<StreamEntry>> {
        match self.read_group_once(stream, group, consumer, count, block).await {
            Err(StateError::Redis(e)) if e.code() == Some("NOGROUP") => {
                self.stream_ensure_group(stream, group).await?;
                self.read_group_once(stream, group, consumer, count, block).await
            }
            other => other,
        }
    }

    async fn read_group_once(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
    ) -> StateResult<Vec<StreamEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        let block_ms = block
            .map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX))
            .filter(|ms| *ms > 0);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(self.key(&["stream", stream])).arg(">");
        let reply: Option<StreamReadReply> = match block {
            Some(wait) if block_ms.is_some() => self.query_blocking(&cmd, wait).await?,
            _ => cmd.query_async(&mut self.conn.clone()).await?,
        };
        let ids = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default();
        ids.into_iter().map(stream_entry).collect()
    }

    /// Runs a blocking command (`BLOCK` up to `wait`) on a connection of its own: on the shared one
    /// it would hold up every other command. The connection is kept for the next blocking command if
    /// this one went well.
    async fn query_blocking<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        wait: Duration,
    ) -> StateResult<T> {
        let current = self.generation();
        let pooled = {
            let mut pool = self.blocking_conns.lock();
            // Links to a primary that has since been replaced are dropped.
            pool.retain(|(generation, _)| *generation == current);
            pool.pop()
        };
        let (generation, mut conn) = match pooled {
            Some(pooled) => pooled,
            None => {
                let (client, generation) = self.client().await?;
                let config = AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT));
                (
                    generation,
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
        };
        conn.set_response_timeout(wait + RESPONSE_TIMEOUT);
        let reply = match cmd.query_async(&mut conn).await {
            Ok(reply) => reply,
            Err(e) => {
                if needs_new_primary(&e)
                    && let Source::Sentinel(s) = &self.source
                {
                    s.invalidate(generation);
                }
                return Err(e.into());
            }
        };
        let mut pool = self.blocking_conns.lock();
        if pool.len() < MAX_IDLE_BLOCKING_CONNECTIONS {
            pool.push((generation, conn));
        }
        Ok(reply)
    }

    pub(crate) async fn stream_read(
        &self,
        stream: &str,
        after: Option<&StreamEntryId>,
        count: usize,
        block: Option<Duration>,
    ) -> StateResult<Vec<StreamEntry>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        let block_ms = block
            .map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX))
            .filter(|ms| *ms > 0);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS")
            .arg(self.key(&["stream", stream]))
            .arg(after.map_or("0-0", |id| id.0.as_str()));
        let reply: Option<StreamReadReply> = match block {
            Some(wait) if block_ms.is_some() => self.query_blocking(&cmd, wait).await?,
            _ => cmd.query_async(&mut self.conn.clone()).await?,
        };
        let ids = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default();
        ids.into_iter().map(stream_entry).collect()
    }

    pub(crate) async fn stream_last(&self, stream: &str) -> StateResult<Option<StreamEntry>> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.key(&["stream", stream]))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await?;
        reply.ids.into_iter().next().map(stream_entry).transpose()
    }

    pub(crate) async fn stream_commit(&self, commit: &StreamCommit) -> StateResult<Vec<StreamEntryId>> {
        let lease = &commit.lease;
        let mut inv = SCRIPTS.stream_commit.prepare_invoke();
        inv.key(self.key(&["lease", &lease.name]))
            .key(self.key(&["fence", &lease.name]))
            .key(self.key(&["version"]))
            .arg(&lease.holder)
            .arg(lease.token.0);
        if let Some((stream, last)) = &commit.expected_last {
            inv.key(self.key(&["stream", stream]))
                .arg("e")
                .arg(last.as_ref().map_or("", |id| id.0.as_str()));
        }
        for a in &commit.appends {
            inv.key(self.key(&["stream", &a.stream]))
                .arg("a")
                .arg(a.max_len.unwrap_or(0))
                .arg(&a.payload);
        }
        for a in &commit.acks {
            inv.key(self.key(&["stream", &a.stream]))
                .arg("k")
                .arg(&a.group)
                .arg(a.ids.len());
            for id in &a.ids {
                inv.arg(&id.0);
            }
        }
        if let Some((ns, key, data)) = &commit.blob {
            inv.key(self.key(&["blob", ns, key])).arg("b").arg(data);
        }
        for (stream, id) in &commit.trims {
            inv.key(self.key(&["stream", stream])).arg("t").arg(&id.0);
        }
        for stream in &commit.deletes {
            inv.key(self.key(&["stream", stream])).arg("d");
        }
        let mut conn = self.write_conn().await?;
        let reply: Vec<Value> = inv.invoke_async(&mut conn).await?;
        if matches!(reply.first(), Some(Value::Int(1))) {
            self.confirm(&mut conn).await?;
        }
        match reply.as_slice() {
            [Value::Int(-1), Value::Int(current)] => Err(stale_fence(Some(&lease.fence()), *current)),
            [Value::Int(-2)] => Err(StateError::Diverged {
                stream: commit
                    .expected_last
                    .as_ref()
                    .map_or_else(String::new, |(stream, _)| stream.clone()),
            }),
            [Value::Int(1), ids @ ..] => ids
                .iter()
                .map(|v| match v {
                    Value::BulkString(b) => std::str::from_utf8(b)
                        .map(|s| StreamEntryId(s.to_string()))
                        .map_err(|_| corrupt("commit reply", "entry id is not text")),
                    Value::SimpleString(s) => Ok(StreamEntryId(s.clone())),
                    _ => Err(corrupt("commit reply", "entry id is not a string")),
                })
                .collect(),
            _ => Err(corrupt("commit reply", "unexpected shape")),
        }
    }

    pub(crate) async fn stream_ack(
        &self,
        stream: &str,
        group: &str,
        ids: &[StreamEntryId],
    ) -> StateResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(self.key(&["stream", stream])).arg(group);
        for id in ids {
            cmd.arg(&id.0);
        }
        match cmd.query_async(&mut self.conn.clone()).await {
            Ok(n) => Ok(n),
            Err(e) if e.code() == Some("NOGROUP") => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn stream_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> StateResult<Vec<StreamEntry>> {
        let key = self.key(&["stream", stream]);
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut cursor = "0-0".to_string();
        let mut out = Vec::new();
        // XAUTOCLAIM walks the pending list in pages; follow the cursor until it wraps or we have enough.
        while out.len() < count {
            let reply: Result<StreamAutoClaimReply, _> = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(group)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count - out.len())
                .query_async(&mut self.conn.clone())
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) if e.code() == Some("NOGROUP") => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            for id in reply.claimed {
                out.push(stream_entry(id)?);
            }
            if reply.next_stream_id == "0-0" {
                break;
            }
            cursor = reply.next_stream_id;
        }
        Ok(out)
    }

    pub(crate) async fn stream_delete(&self, stream: &str) -> StateResult<bool> {
        let removed: usize = redis::cmd("DEL")
            .arg(self.key(&["stream", stream]))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed > 0)
    }

    pub(crate) async fn stream_len(&self, stream: &str) -> StateResult<usize> {
        Ok(redis::cmd("XLEN")
            .arg(self.key(&["stream", stream]))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Trims entries below the oldest one some group still needs. Safe without a transaction: groups
    /// only move forward, so a bound computed a moment ago is at worst too cautious.
    pub(crate) async fn stream_trim_consumed(&self, stream: &str) -> StateResult<usize> {
        let key = self.key(&["stream", stream]);
        let mut conn = self.conn.clone();
        let groups: Result<StreamInfoGroupsReply, _> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut conn)
            .await;
        let groups = match groups {
            Ok(g) => g.groups,
            // No such stream: nothing to trim.
            Err(e) if e.detail().is_some_and(|d| d.contains("no such key")) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut keep_from: Option<(u64, u64)> = None;
        for group in &groups {
            let needed = if group.pending > 0 {
                let summary: Value = redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(&group.name)
                    .query_async(&mut conn)
                    .await?;
                match summary {
                    Value::Array(items) => match items.get(1) {
                        Some(Value::BulkString(id)) => std::str::from_utf8(id).ok().and_then(parse_stream_id),
                        _ => None,
                    },
                    _ => None,
                }
            } else {
                parse_stream_id(&group.last_delivered_id).map(|(ms, seq)| match seq.checked_add(1) {
                    Some(next) => (ms, next),
                    None => (ms.saturating_add(1), 0),
                })
            };
            // A group whose position cannot be read protects the whole stream.
            let Some(needed) = needed else { return Ok(0) };
            keep_from = Some(keep_from.map_or(needed, |k| k.min(needed)));
        }
        let Some((ms, seq)) = keep_from else { return Ok(0) };
        let trimmed: usize = redis::cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(format!("{ms}-{seq}"))
            .query_async(&mut conn)
            .await?;
        Ok(trimmed)
    }

    pub(crate) async fn stream_pending(&self, stream: &str, group: &str) -> StateResult<usize> {
        let reply: Result<Value, _> = redis::cmd("XPENDING")
            .arg(self.key(&["stream", stream]))
            .arg(group)
            .query_async(&mut self.conn.clone())
            .await;
        match reply {
            // The summary form starts with the number of pending entries.
            Ok(Value::Array(items)) => match items.first() {
                Some(Value::Int(n)) => Ok(usize::try_from(*n).unwrap_or(0)),
                _ => Ok(0),
            },
            Ok(_) => Ok(0),
            Err(e) if e.code() == Some("NOGROUP") => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// A stream entry id `ms-seq` as numbers, in the order Redis sorts them.
fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn stream_entry(id: StreamId) -> StateResult<StreamEntry> {
    let payload = match id.map.get("d") {
        Some(Value::BulkString(b)) => b.clone(),
        _ => return Err(corrupt(format!("stream entry {}", id.id), "no payload field")),
    };
    Ok(StreamEntry {
        id: StreamEntryId(id.id),
        payload,
    })
}
