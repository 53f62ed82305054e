//! CPU time of processes from `/proc`, the fairest measure on a machine where wall time is shared.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ; 100 on Linux).
const TICKS_PER_SEC: u64 = 100;

/// User + system CPU time of one process in microseconds, if it exists.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    stat_cpu_micros(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU time in microseconds from the text of a `stat` file (a process's or a thread's).
fn stat_cpu_micros(stat: &str) -> Option<u64> {
    // The command name may contain spaces; fields after the closing parenthesis are fixed.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / TICKS_PER_SEC)
}

/// CPU time in microseconds of the threads of process `pid` named `name` (as `/proc/<pid>/task/<tid>/comm`
/// gives it: at most 15 bytes, longer names are cut); None when the process has no such thread.
pub fn thread_cpu_micros(pid: u32, name: &str) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut found = None;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = fs::read_to_string(path.join("stat")).unwrap_or_default();
        if let Some(micros) = stat_cpu_micros(&stat) {
            found = Some(found.unwrap_or(0) + micros);
        }
    }
    found
}

/// Parent pid of a process.
fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// A process and all its descendants (Kamailio forks workers).
pub fn tree(root: u32) -> Vec<u32> {
    let all: Vec<u32> = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().copied().filter(|c| parent(*c) == Some(p)));
        i += 1;
    }
    out
}

/// Total CPU of a process tree in microseconds.
pub fn tree_cpu_micros(root: u32) -> u64 {
    tree(root).into_iter().filter_map(cpu_micros).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_user_plus_system_time() {
        // pid (comm with a space) state ppid ... utime=250 stime=50 (fields 14 and 15).
        let stat = "42 (sip signalling) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        assert_eq!(stat_cpu_micros(stat), Some(3_000_000));
        assert_eq!(stat_cpu_micros("42 (cut"), None);
    }

    #[test]
    fn a_named_thread_of_this_process_is_found_and_no_other() {
        let (started, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let waiter = std::thread::Builder::new()
            .name("bench-named".into())
            .spawn(move || {
                let _ = started.send(());
                let _ = stopped.recv();
            })
            .expect("thread");
        ready.recv().expect("the thread ran");
        let pid = std::process::id();
        let found = thread_cpu_micros(pid, "bench-named");
        let _ = stop.send(());
        waiter.join().expect("joined");
        assert!(found.is_some(), "the named thread was not found");
        assert_eq!(thread_cpu_micros(pid, "no-such-thread-name"), None);
    }
}
