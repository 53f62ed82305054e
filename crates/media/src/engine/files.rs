//! The engine's file thread: recordings are written here, in the order they were handed in, never on a
//! packet worker. A write into the page cache usually takes microseconds, but on ext4 it may wait tens
//! of milliseconds for the journal, and every call on that worker would wait with it. One thread, not
//! the runtime's blocking pool: a pool grew by a thread per recording writing at once (27 threads and
//! 110 MB more resident memory at 1000 recorded calls) for work one thread does in a few per cent of
//! its time.

use std::sync::mpsc;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The sending side; the thread ends when the engine and every recorder have let it go.
#[derive(Clone)]
pub(crate) struct FileThread {
    jobs: mpsc::Sender<Job>,
}

/// Name of the thread, to find it in `top` and in profiles.
const THREAD_NAME: &str = "media-files";

impl FileThread {
    pub(crate) fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `work` on the file thread after everything handed in before it, and returns its result;
    /// `None` if the thread is gone. The queue holds at most one batch per recording (each recorder
    /// waits for its last one), so it needs no bound of its own.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = reply.send(work());
            }))
            .ok()?;
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_off_the_caller_in_the_order_it_was_handed_in() {
        let files = FileThread::start().unwrap();
        let caller = std::thread::current().id();
        let (first, second) = tokio::join!(
            files.run(move || (
                std::thread::current().name().map(str::to_owned),
                std::thread::current().id()
            )),
            files.run(|| 2),
        );
        let (name, thread) = first.unwrap();
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert_ne!(thread, caller);
        assert_eq!(second, Some(2));
        let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let runs: Vec<_> = (0..20)
            .map(|k| {
                let log = log.clone();
                files.run(move || log.lock().push(k))
            })
            .collect();
        for run in runs {
            run.await.unwrap();
        }
        assert_eq!(*log.lock(), (0..20).collect::<Vec<_>>());
    }
}
