//! Password checks with bounded cost: a fixed set of threads (one per core by default) does every
//! argon2 verification, each reusing one memory area, behind a bounded queue. A login that finds the
//! queue full is answered at once ([`HashBusy`], a 503 with Retry-After) instead of waiting.
//!
//! Why: an argon2id check with the default parameters fills 19 MiB. Run on the runtime's blocking
//! pool, 64 parallel logins took 64 threads and 64 areas that the allocator never gave back (267 MB
//! to 3.1 GB resident). Here resident memory is at most `workers × 19 MiB` whatever the load, and a
//! login waits at most `queue / workers` checks.

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Memory kept by a worker between checks: enough for the default parameters (19 MiB). A stored
/// hash with larger parameters is still checked, with memory of its own that is freed afterwards.
const KEPT_BLOCKS: usize = 19 * 1024;

/// The queue was full: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many logins at once; try again in a moment")]
pub struct HashBusy;

struct Job {
    hash: String,
    password: String,
    reply: oneshot::Sender<bool>,
    /// Held until the check is done: the pool's places are the semaphore's permits.
    _slot: HashSlot,
}

/// A place in the pool (a thread or the queue), reserved before a login costs anything else.
pub struct HashSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Counters of the pool, for metrics.
#[derive(Debug, Default)]
pub struct HashCounters {
    /// Checks done.
    pub checked: AtomicU64,
    /// Checks refused because the queue was full.
    pub refused: AtomicU64,
}

/// The verification threads and their queue. Cheap to clone; the threads end when every clone is
/// dropped.
#[derive(Clone)]
pub struct HashPool {
    jobs: SyncSender<Job>,
    slots: Arc<Semaphore>,
    counters: Arc<HashCounters>,
    workers: usize,
    queue: usize,
}

impl HashPool {
    /// Starts `workers` threads (0: one per core) behind a queue of `queue` waiting checks.
    pub fn start(workers: usize, queue: usize) -> Self {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            workers
        };
        Self::with_threads(workers, queue)
    }

    fn with_threads(workers: usize, queue: usize) -> Self {
        // Every reserved slot fits in the channel, so a send never finds it full.
        let (jobs, rx) = sync_channel::<Job>(queue + workers);
        let slots = Arc::new(Semaphore::new(queue + workers));
        let rx = Arc::new(Mutex::new(rx));
        let counters = Arc::new(HashCounters::default());
        for i in 0..workers {
            let rx = rx.clone();
            let counters = counters.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx, &counters));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "password check thread not started");
            }
        }
        Self {
            jobs,
            slots,
            counters,
            workers,
            queue,
        }
    }

    /// Threads and queue length.
    pub fn size(&self) -> (usize, usize) {
        (self.workers, self.queue)
    }

    pub fn counters(&self) -> &HashCounters {
        &self.counters
    }

    /// Reserves a place for one check, or [`HashBusy`] when every thread and queue place is taken.
    pub fn reserve(&self) -> Result<HashSlot, HashBusy> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(HashSlot(permit)),
            Err(_) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(HashBusy)
            }
        }
    }

    /// Whether `password` matches the PHC `hash`, checked in the reserved place. A malformed hash
    /// never matches.
    pub async fn verify(&self, slot: HashSlot, hash: String, password: String) -> Result<bool, HashBusy> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            hash,
            password,
            reply,
            _slot: slot,
        };
        match self.jobs.try_send(job) {
            Ok(()) => answer.await.map_err(|_| HashBusy),
            // Full cannot happen (slots ≤ capacity); Disconnected: no thread is left.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(HashBusy),
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>, counters: &HashCounters) {
    let mut memory = vec![Block::new(); KEPT_BLOCKS];
    loop {
        // Only the wait for a job holds the lock; checks run in parallel.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let ok = verify_with(&job.hash, job.password.as_bytes(), &mut memory);
        counters.checked.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(ok);
    }
}

/// Verifies a PHC argon2 hash in `memory` (grown only for the duration of a larger hash).
pub fn verify_with(hash: &str, password: &[u8], memory: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    let computed = if blocks <= memory.len() {
        argon.hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
    } else {
        let mut larger = vec![Block::new(); blocks];
        argon.hash_password_into_with_memory(password, salt, &mut out, &mut larger[..])
    };
    // Output compares in constant time.
    computed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_password;

    #[test]
    fn a_kept_memory_area_checks_like_the_library() {
        let hash = hash_password("s3cret").expect("hash");
        let mut memory = vec![Block::new(); KEPT_BLOCKS];
        assert!(verify_with(&hash, b"s3cret", &mut memory));
        assert!(!verify_with(&hash, b"S3cret", &mut memory));
        assert!(verify_with(&hash, b"s3cret", &mut memory), "the area is reused");
        assert!(!verify_with("not a hash", b"s3cret", &mut memory));
        assert!(!verify_with(
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$",
            b"x",
            &mut memory
        ));
        // A hash with more memory than kept still verifies.
        let mut small = vec![Block::new(); 8];
        assert!(verify_with(&hash, b"s3cret", &mut small));
    }

    #[tokio::test]
    async fn a_full_pool_refuses_at_once() {
        let pool = HashPool::start(1, 2);
        let hash = hash_password("pw").expect("hash");
        let held: Vec<HashSlot> = (0..3).map(|_| pool.reserve().expect("a place")).collect();
        assert!(
            pool.reserve().is_err(),
            "one thread and two queue places are taken"
        );
        assert_eq!(pool.counters().refused.load(Ordering::Relaxed), 1);
        drop(held);
        let slot = pool.reserve().expect("places are given back");
        assert_eq!(pool.verify(slot, hash.clone(), "pw".into()).await, Ok(true));
        let slot = pool.reserve().expect("place");
        assert_eq!(pool.verify(slot, hash, "nope".into()).await, Ok(false));
        assert_eq!(pool.counters().checked.load(Ordering::Relaxed), 2);
    }
}
