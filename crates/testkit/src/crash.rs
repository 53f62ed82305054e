//! kill -9 tests: a test re-runs its own executable as a child (told by an environment variable to
//! play the child), the child prints one `ACK <interaction> <seq>` line per acknowledged event, and
//! the parent SIGKILLs it once enough have come, then checks that every one was kept.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The line a child prints for an acknowledged event.
pub fn ack_line(interaction: &str, seq: u32) -> String {
    format!("ACK {interaction} {seq}")
}

/// Runs test `test_name` of the current executable as a child with `envs`, waits until it has
/// acknowledged at least `kill_after` events, SIGKILLs it, and returns every acknowledgement it
/// printed (those still in the pipe included).
///
/// # Panics
/// When the child cannot be started or stops acknowledging for a minute: the test fails.
pub fn run_and_kill<K, V>(
    test_name: &str,
    envs: impl IntoIterator<Item = (K, V)>,
    kill_after: usize,
) -> HashSet<(String, i64)>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let exe = std::env::current_exe().expect("the test's own executable");
    let mut child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = HashSet::new();
    while acked.len() < kill_after {
        match lines_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => record(&mut acked, &line),
            Err(e) => panic!("child stopped acknowledging after {} events: {e}", acked.len()),
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("the child is reaped");
    reader.join().expect("the reader thread ends with the pipe");
    for line in lines_rx.try_iter() {
        record(&mut acked, &line);
    }
    acked
}

fn record(acked: &mut HashSet<(String, i64)>, line: &str) {
    let mut parts = line.split(' ');
    if let (Some("ACK"), Some(id), Some(seq)) = (parts.next(), parts.next(), parts.next())
        && let Ok(seq) = seq.parse::<i64>()
    {
        acked.insert((id.to_string(), seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_lines_round_trip_and_other_lines_are_ignored() {
        let mut acked = HashSet::new();
        record(&mut acked, &ack_line("call-1", 3));
        record(&mut acked, "running 1 test");
        record(&mut acked, "ACK call-2 notanumber");
        assert_eq!(acked, HashSet::from([("call-1".to_string(), 3)]));
    }
}
