//! A state store that cannot answer is not a logout: `Auth::check_session` tells "no session" from
//! "could not check", so an open desktop stays through a Redis hiccup or failover (it used to be
//! told `session_expired`, every agent on every node at once). Runs against a Redis server of the
//! test's own, stopped halfway.

use agent_desk::{Auth, AuthConfig};
use crm_store::{CrmStore, Role};
use domain::{AgentId, Timestamp};
use testkit::redis::RedisProcess;

#[tokio::test]
async fn a_store_that_cannot_answer_is_not_a_logout() {
    let mut redis = RedisProcess::server(&[]);
    let url = redis.url();
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
