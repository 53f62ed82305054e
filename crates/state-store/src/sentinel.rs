//! Connections that follow the Redis primary through Redis Sentinel. The redis crate finds the
//! primary (asking each sentinel and checking the answer's `ROLE`); this module keeps one multiplexed
//! connection to it and looks again whenever that connection fails or the server says it is no
//! longer the primary (`READONLY` after a failover demoted it), or a write was not confirmed by the
//! replicas in time. The failed command's error is returned as it is: the caller retries, and the
//! next command goes to whichever server the sentinels name by then.
//!
//! [`Conn`] puts this beside the plain self-reconnecting connection behind one `ConnectionLike`, and
//! [`Conn::pin`] hands out one fixed link for a write and its `WAIT` (the confirmation counts the
//! writes of the link it is sent on).

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::Arc;

/// The primary as the sentinels name it, and one connection to it.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    inner: Arc<SentinelInner>,
}

struct SentinelInner {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<Current>>,
    /// Generations handed out so far: never reused, so a stale link's failure cannot invalidate a
    /// newer connection that happens to have the same number.
    generations: std::sync::atomic::AtomicU64,
    config: AsyncConnectionConfig,
    db: i64,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    client: Client,
    conn: MultiplexedConnection,
}

impl SentinelConn {
    /// Connects to the primary the sentinels name now (failing fast if none can be reached).
    pub(crate) async fn connect(
        sentinel: SentinelClient,
        config: AsyncConnectionConfig,
        db: i64,
    ) -> RedisResult<Self> {
        let conn = Self {
            inner: Arc::new(SentinelInner {
                sentinel: tokio::sync::Mutex::new(sentinel),
                current: Mutex::new(None),
                generations: std::sync::atomic::AtomicU64::new(0),
                config,
                db,
            }),
        };
        conn.current().await?;
        Ok(conn)
    }

    /// The current connection, made first if there is none. Boxed: the sentinel lookup is a deep
    /// future, and every caller's future would otherwise carry its whole type.
    fn current(&self) -> BoxFuture<'_, RedisResult<Current>> {
        async move {
            if let Some(c) = self.inner.current.lock().clone() {
                return Ok(c);
            }
            let mut sentinel = self.inner.sentinel.lock().await;
            // Someone else may have connected while this task waited for the sentinels.
            if let Some(c) = self.inner.current.lock().clone() {
                return Ok(c);
            }
            let client = sentinel.async_get_client().await?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&self.inner.config)
                .await?;
            let mut current = self.inner.current.lock();
            let generation = self
                .inner
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            let fresh = Current {
                generation,
                client,
                conn,
            };
            *current = Some(fresh.clone());
            tracing::debug!(
                generation,
                primary = %fresh.client.get_connection_info().addr(),
                "connected to the Redis primary named by the sentinels"
            );
            Ok(fresh)
        }
        .boxed()
    }

    /// Forgets the connection of `generation` (if still current), so the next command asks the
    /// sentinels again.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut current = self.inner.current.lock();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            *current = None;
        }
    }

    /// A client for the current primary (for subscriptions and blocking reads on links of their own),
    /// and the generation of the connection it belongs to.
    pub(crate) async fn client(&self) -> RedisResult<(Client, u64)> {
        let c = self.current().await?;
        Ok((c.client, c.generation))
    }

    /// The generation of the current connection (0 before the first).
    pub(crate) fn generation(&self) -> u64 {
        self.inner.current.lock().as_ref().map_or(0, |c| c.generation)
    }

    async fn pinned(&self) -> RedisResult<PinnedConn> {
        let c = self.current().await?;
        Ok(PinnedConn {
            conn: c.conn,
            owner: self.clone(),
            generation: c.generation,
        })
    }
}

/// Errors after which the link is not trusted to reach the primary any more.
pub(crate) fn needs_new_primary(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("READONLY" | "MASTERDOWN" | "LOADING" | "UNBLOCKED")
        )
}

/// One fixed link to the primary of the moment.
#[derive(Clone)]
pub(crate) struct PinnedConn {
    conn: MultiplexedConnection,
    owner: SentinelConn,
    generation: u64,
}

impl PinnedConn {
    fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && needs_new_primary(e)
        {
            self.owner.invalidate(self.generation);
        }
        result
    }
}

/// A connection to Redis as the store uses it.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A fixed address, reconnected by the redis crate's manager.
    Direct(ConnectionManager),
    /// The primary named by the sentinels, followed across failovers.
    Sentinel(SentinelConn),
    /// One link for a write and its confirmation.
    Pinned(PinnedConn),
    /// The manager's link, for a write and its confirmation on a fixed address.
    PinnedDirect(ConnectionManager),
}

impl Conn {
    /// A link that stays the same for the next commands (a write and its `WAIT`).
    pub(crate) async fn pin(&self) -> RedisResult<Conn> {
        match self {
            Conn::Direct(m) | Conn::PinnedDirect(m) => Ok(Conn::PinnedDirect(m.clone())),
            Conn::Sentinel(s) => Ok(Conn::Pinned(s.pinned().await?)),
            Conn::Pinned(p) => Ok(Conn::Pinned(p.clone())),
        }
    }

    /// After a write was not confirmed in time: with sentinels, look for the primary again (this
    /// server may have been demoted, or cut off from its replicas).
    pub(crate) fn distrust(&self) {
        match self {
            Conn::Pinned(p) => p.owner.invalidate(p.generation),
            Conn::Sentinel(_) | Conn::Direct(_) | Conn::PinnedDirect(_) => {}
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Direct(m) | Conn::PinnedDirect(m) => m.req_packed_command(cmd),
            Conn::Pinned(p) => async move {
                let result = p.conn.req_packed_command(cmd).await;
                p.check(result)
            }
            .boxed(),
            Conn::Sentinel(s) => {
                let s = s.clone();
                async move {
                    let mut p = s.pinned().await?;
                    let result = p.conn.req_packed_command(cmd).await;
                    p.check(result)
                }
                .boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Direct(m) | Conn::PinnedDirect(m) => m.req_packed_commands(pipeline, offset, count),
            Conn::Pinned(p) => async move {
                let result = p.conn.req_packed_commands(pipeline, offset, count).await;
                p.check(result)
            }
            .boxed(),
            Conn::Sentinel(s) => {
                let s = s.clone();
                async move {
                    let mut p = s.pinned().await?;
                    let result = p.conn.req_packed_commands(pipeline, offset, count).await;
                    p.check(result)
                }
                .boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Direct(m) | Conn::PinnedDirect(m) => m.get_db(),
            Conn::Pinned(p) => p.owner.inner.db,
            Conn::Sentinel(s) => s.inner.db,
        }
    }
}
