//! A state store that cannot answer is not a logout: `Auth::check_session` tells "no session" from
//! "could not check", so an open desktop stays through a Redis hiccup or failover (it used to be
//! told `session_expired`, every agent on every node at once). Runs against a Redis server of the
//! test's own, stopped halfway.

use agent_desk::{Auth, AuthConfig};
use crm_store::{CrmStore, Role};
use domain::{AgentId, Timestamp};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the test command installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn a_store_that_cannot_answer_is_not_a_logout() {
    let mut redis = OwnRedis::start();
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let state = state_store::StateStore::connect(&state_store::StateConfig::redis(url, "sessiontest"))
        .await
        .expect("connect");
    let crm = CrmStore::connect("sqlite::memory:").await.expect("crm");
    crm.migrate().await.expect("migrations");
    let auth = Auth::new(crm, state, AuthConfig::default()).expect("auth");
    let now = Timestamp::now_utc();
    let agent = AgentId::new("1001").expect("id");
    assert!(
        auth.seed_user(&agent, "1001", Role::Agent, "agent-one", now)
            .await
            .expect("seed")
    );
    let (token, _) = auth
        .login("1001", "agent-one", "127.0.0.1".parse().expect("ip"), now)
        .await
        .expect("login");

    assert!(auth.check_session(&token, now).await.expect("store up").is_some());
    assert!(
        auth.check_session("not-a-token", now)
            .await
            .expect("store up")
            .is_none()
    );

    redis.stop();
    assert!(
        auth.check_session(&token, now).await.is_err(),
        "a store that cannot answer says so"
    );
    // A request is still refused rather than let through unchecked.
    assert!(auth.session(&token, now).await.is_none());
}
