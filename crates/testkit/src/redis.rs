//! Redis processes a test starts for itself (`redis-server`, `redis-sentinel`) on a free port, to
//! restart or stop them; killed when dropped.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis program of the test's own, answering on `127.0.0.1:port`.
pub struct RedisProcess {
    child: Child,
    pub port: u16,
    program: String,
    args: Vec<String>,
}

impl RedisProcess {
    /// `redis-server` on a free port with nothing saved, plus `extra` arguments.
    pub fn server(extra: &[String]) -> RedisProcess {
        let port = crate::free_port();
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]
            .map(String::from)
            .to_vec();
        args.extend_from_slice(extra);
        Self::spawn("redis-server", args, port)
    }

    /// Starts `program` with `args` and returns once it answers `PING` on `port` (30 s at most).
    pub fn spawn(program: &str, args: Vec<String>, port: u16) -> RedisProcess {
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} starts (the test command installs it): {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !answers(port) {
            assert!(
                Instant::now() < deadline,
                "{program} did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisProcess {
            child,
            port,
            program: program.to_string(),
            args,
        }
    }

    /// Kills the process (SIGKILL: no shutdown, no last save).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process and starts it again with the same port and arguments.
    pub fn restart(&mut self) {
        self.stop();
        let fresh = Self::spawn(&self.program, self.args.clone(), self.port);
        *self = fresh;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something answers `+PONG` to `PING` on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf.get(..n).is_some_and(|b| b.starts_with(b"+PONG")))
}
