//! PostgreSQL stopped under load: a node of a cluster (`[cluster] enabled`, live state in Redis, the
//! CRM in a PostgreSQL server of the test's own, which it may stop) keeps routing and answering calls
//! while the database is down, and once it is back every interaction of the outage lands in it, once.
//! Interaction events wait in the cluster's shared outbox (a Redis stream) meanwhile; nothing
//! acknowledged is lost. The machine's own PostgreSQL is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use system_tests::*;

/// A PostgreSQL server of this test's own, on a free port, in a temporary directory.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql (Debian package postgresql)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").is_file())
            .max()
            .expect("an initdb");
        let dir = tempfile::tempdir().expect("tempdir");
        // The server refuses to run as root: run it as the `postgres` user then.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let pg = PrivatePostgres {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres"])
                .arg(pg.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the data directory to postgres");
        }
        pg.run("initdb", &["-D", &pg.data(), "-A", "trust", "-U", "postgres"]);
        pg.up();
        pg.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-q",
                "-c",
                "CREATE DATABASE cc",
            ],
        );
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/cc", self.port)
    }

    /// `tool` of the server's binaries (or `psql`), run as the server's user.
    fn command(&self, tool: &str) -> Command {
        let program = if tool == "psql" {
            PathBuf::from("psql")
        } else {
            self.bin.join(tool)
        };
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path());
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl -w`).
    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    /// Stops the server at once, as a crash or a failover would (`-m immediate`), waiting until it is gone.
    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// A number from a query.
    fn count(&self, sql: &str) -> Option<u64> {
        let out = Command::new("psql")
            .arg(self.url())
            .args(["-tAc", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .flatten()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// Runs `calls` callers one after another (each talks a second to the agent, then hangs up); all must
/// succeed.
fn callers(platform: &Platform, calls: u32, when: &str) {
    let run = uac(platform, "uac", "700", calls, &["-d", "1000", "-l", "1"]);
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(calls), 0),
        "{when}: {}\n{}",
        run.output,
        platform.log()
    );
}

fn wait_for_rows(pg: &PrivatePostgres, want: u64, bound: Duration) -> u64 {
    let deadline = Instant::now() + bound;
    loop {
        let got = pg
            .count("SELECT count(*) FROM interactions WHERE ended_at IS NOT NULL AND answered_at IS NOT NULL")
            .unwrap_or(0);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgresql_stopped_under_load_loses_no_interaction_and_stops_no_call() {
    require_command("sipp");
    require_command("psql");
    let Some(redis) = redis_url("postgresql_stopped_under_load") else {
        return;
    };
    assert!(
        Path::new("/usr/lib/postgresql").is_dir(),
        "PostgreSQL's server is installed"
    );
    let pg = PrivatePostgres::start();
    let prefix = format!("ccpgout{}x{}", std::process::id(), free_port());
    const BEFORE: u32 = 4;
    const DURING: u32 = 6;
    let phone = SippServer::start("uas", BEFORE + DURING);
    let platform = Platform::start(&format!(
        "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n\n\
         [state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\n\n\
         [cluster]\nenabled = true\n\n\
         [crm]\ndatabase_url = \"{}\"\n\n\
         [agents]\nready_on_start = true\n\n\
         [[route]]\nnumber = \"700\"\nqueue = \"support\"\n\n\
         [[acd.queues]]\nid = \"support\"\noffer_timeout_secs = 10\n\n\
         [[sip.user]]\nname = \"2001\"\npassword = \"pw2001\"\n\n\
         [[acd.agents]]\nid = \"2001\"\nqueues = [{{ queue = \"support\", rank = 1 }}]\n",
        pg.url()
    ));
    register_agent_phone(&platform, "2001", "pw2001", phone.port);

    callers(&platform, BEFORE, "with the database up");
    assert_eq!(
        wait_for_rows(&pg, u64::from(BEFORE), Duration::from_secs(30)),
        u64::from(BEFORE),
        "the first calls are in the database\n{}",
        platform.log()
    );

    // The database goes away while the next callers come in; they go on being routed, answered
    // and ended.
    std::thread::scope(|scope| {
        let during = scope.spawn(|| callers(&platform, DURING, "with the database going down"));
        pg.down();
        if let Err(failure) = during.join() {
            std::panic::resume_unwind(failure);
        }
    });
    assert_eq!(platform.http_get("/healthz").0, 200, "the node serves on");

    // Back: every call of the outage lands, once.
    pg.up();
    let total = u64::from(BEFORE + DURING);
    let landed = wait_for_rows(&pg, total, Duration::from_secs(60));
    assert_eq!(
        landed,
        total,
        "every interaction is in the database after the outage\n{}",
        platform.log()
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM interactions WHERE agent_id = '2001'"),
        Some(total),
        "each answered by the agent, and none twice"
    );
    assert_eq!(phone.wait(), Some(0), "the agent's phone answered every call");
}
