//! The desk relay's tests: two or more nodes' hubs over one state store.

use super::*;
use crate::desk::{AgentMedia, Attachment, CommandRequest};
use domain::{Pii, QueueId};

/// A failure bound: every wait here is for an event that comes at once when things work.
const BOUND: Duration = Duration::from_secs(20);

fn agent(id: &str) -> AgentId {
    AgentId::new(id).expect("valid id")
}

fn pop(call: &str) -> Arc<ScreenPop> {
    Arc::new(ScreenPop {
        call: CallId::new(call).expect("valid id"),
        direction: domain::Direction::Inbound,
        queue: Some(QueueId::new("support").expect("valid id")),
        caller: Pii::new("+15550100".into()),
        called: Pii::new("801".into()),
        waited_ms: 1200,
        explanation: "longest idle".into(),
        customer: None,
        ivr: None,
        campaign: None,
    })
}

/// Writes node `name`'s liveness record, as its router client keeps it.
async fn node_record(store: &StateStore, name: &str) {
    store
        .put_blob(
            routing::protocol::NODES_NAMESPACE,
            name,
            b"alive",
            &state_store::BlobWrite::new(),
            Timestamp::now_utc(),
        )
        .await
        .expect("alive");
}

/// A node of the cluster: alive (its liveness record) and its hub joined to the relay.
async fn node(store: &StateStore, name: &str) -> DeskHub {
    node_record(store, name).await;
    let hub = DeskHub::new();
    hub.join_cluster(store.clone(), name.to_string())
        .await
        .expect("relay starts");
    hub
}

async fn next(desk: &mut Attachment) -> DeskEvent {
    tokio::time::timeout(BOUND, desk.events.recv())
        .await
        .expect("an event within the bound")
        .expect("the desktop is attached")
}

async fn request(calls: &mut mpsc::UnboundedReceiver<CommandRequest>) -> CommandRequest {
    tokio::time::timeout(BOUND, calls.recv())
        .await
        .expect("a command within the bound")
        .expect("the call listens")
}

/// Two nodes over one store; agent 2001's desktop on node A; call c1, held on node B, offered to
/// the agent and already shown on the desktop.
struct OfferedAcross {
    store: StateStore,
    a: DeskHub,
    b: DeskHub,
    agent: AgentId,
    desk: Attachment,
    calls: mpsc::UnboundedReceiver<CommandRequest>,
    p: Arc<ScreenPop>,
}

async fn offered_across() -> OfferedAcross {
    let store = StateStore::memory();
    let (a, b) = (node(&store, "node-a").await, node(&store, "node-b").await);
    let agent = agent("2001");
    let mut desk = a.attach(&agent, AgentMedia::Phone);
    let (tx, calls) = mpsc::unbounded_channel();
    let p = pop("c1");
    b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));
    assert_eq!(next(&mut desk).await, DeskEvent::Offered(p.clone()));
    OfferedAcross {
        store,
        a,
        b,
        agent,
        desk,
        calls,
        p,
    }
}

#[tokio::test]
async fn a_desktop_on_one_node_follows_and_commands_a_call_held_on_another() {
    let OfferedAcross {
        store,
        a,
        b,
        agent,
        mut desk,
        mut calls,
        p,
    } = offered_across().await;
    assert!(
        !a.calls_of(&agent).is_empty(),
        "node A knows the agent's call on node B"
    );
    for hub in [&a, &b] {
        assert_eq!(
            hub.call_node(&p.call).as_deref(),
            Some("node-b"),
            "where the call is"
        );
    }
    b.set_phase(&p.call, &agent, CallPhase::Connected, Timestamp::from_millis(9));
    assert_eq!(
        next(&mut desk).await,
        DeskEvent::Phase {
            call: p.call.clone(),
            phase: CallPhase::Connected
        }
    );

    // A command from node A's desktop runs on node B's call; its answer comes back.
    let hold = tokio::spawn({
        let (a, agent, call) = (a.clone(), agent.clone(), p.call.clone());
        async move { a.command(&agent, &call, AgentCommand::Hold).await }
    });
    let r = request(&mut calls).await;
    assert_eq!(r.command, AgentCommand::Hold);
    let _ = r.reply.send(Err(Refusal::new("already_held", "on hold already")));
    let refused = hold.await.expect("joined");
    assert_eq!(
        refused.map_err(|r| r.code),
        Err("already_held"),
        "the code survives the trip"
    );

    // A reload on node A sees the call as it stands; the wallboard there sees its phase.
    let again = a.attach(&agent, AgentMedia::Phone);
    assert_eq!(again.calls.len(), 1);
    assert_eq!(again.calls[0].phase, CallPhase::Connected);
    assert!(
        a.phases()
            .iter()
            .any(|(who, phase, _)| who == &agent && *phase == CallPhase::Connected)
    );
    let mut desk = again;

    b.release(&p.call, &agent);
    assert_eq!(
        next(&mut desk).await,
        DeskEvent::Released { call: p.call.clone() }
    );
    assert!(a.calls_of(&agent).is_empty());
    let refused = a.command(&agent, &p.call, AgentCommand::Hangup).await;
    assert_eq!(refused.map_err(|r| r.code), Err("not_your_call"));
    // Another agent can never reach the call, on either node.
    let (tx, _calls) = mpsc::unbounded_channel();
    b.offer(&agent, pop("c2"), tx, Timestamp::from_millis(20));
    assert!(matches!(next(&mut desk).await, DeskEvent::Offered(_)));
    for hub in [&a, &b] {
        let refused = hub
            .command(&self::agent("2002"), &pop("c2").call, AgentCommand::Hangup)
            .await;
        assert_eq!(refused.map_err(|r| r.code), Err("not_your_call"));
    }

    // The agent opens their desktop on a third node: the one on node A is replaced, and node A
    // knows how the agent takes calls now.
    let c = node(&store, "node-c").await;
    let _moved = c.attach(&agent, AgentMedia::Browser);
    assert_eq!(next(&mut desk).await, DeskEvent::Replaced);
    assert_eq!(a.desk_media(&agent), Some(AgentMedia::Browser));
}

#[tokio::test]
async fn a_command_delivered_twice_is_run_once_and_answered_twice_alike() {
    let store = StateStore::memory();
    let b = node(&store, "node-b").await;
    let agent = agent("2001");
    let (tx, mut calls) = mpsc::unbounded_channel();
    let p = pop("c1");
    b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));
    let entry = serde_json::to_vec(&CommandEntry {
        origin: "node-x".into(),
        id: 7,
        agent: agent.clone(),
        request: Request::Call {
            call: p.call.clone(),
            command: AgentCommand::Hangup,
        },
    })
    .expect("encodes");
    store
        .stream_append(&commands_stream("node-b"), &entry)
        .await
        .expect("appended");
    let r = request(&mut calls).await;
    assert_eq!(r.command, AgentCommand::Hangup);
    let _ = r.reply.send(Ok(None));
    let first = store
        .stream_read(&replies_stream("node-x"), None, 10, Some(BOUND))
        .await
        .expect("the answer is stored");
    assert_eq!(first.len(), 1);

    // The same command again (a resend, or a redelivery): answered from the stored answer.
    store
        .stream_append(&commands_stream("node-b"), &entry)
        .await
        .expect("appended");
    let both = loop {
        let got = store
            .stream_read(&replies_stream("node-x"), None, 10, Some(BOUND))
            .await
            .expect("read");
        if got.len() >= 2 {
            break got;
        }
        let _ = store
            .stream_read(
                &replies_stream("node-x"),
                Some(&got[got.len() - 1].id),
                10,
                Some(BOUND),
            )
            .await;
    };
    assert_eq!(both[0].payload, both[1].payload, "the same answer twice");
    assert!(calls.try_recv().is_err(), "the call heard the hang-up once");
}

#[tokio::test]
async fn a_command_the_holder_answers_late_is_resent_and_run_once() {
    let OfferedAcross {
        store,
        a,
        b: _b,
        agent,
        desk: _desk,
        mut calls,
        p,
    } = offered_across().await;
    let hold = tokio::spawn({
        let (a, agent, call) = (a.clone(), agent.clone(), p.call.clone());
        async move { a.command(&agent, &call, AgentCommand::Hold).await }
    });
    let r = request(&mut calls).await;
    // The call answers only once node A has sent the command again.
    let resent = loop {
        let all = store
            .stream_read(&commands_stream("node-b"), None, 10, Some(BOUND))
            .await
            .expect("read");
        if all.len() >= 2 {
            break all;
        }
        let _ = store
            .stream_read(
                &commands_stream("node-b"),
                Some(&all[all.len() - 1].id),
                10,
                Some(BOUND),
            )
            .await;
    };
    assert_eq!(
        resent[0].payload, resent[1].payload,
        "sent again under the same number"
    );
    let _ = r.reply.send(Ok(None));
    assert_eq!(hold.await.expect("joined"), Ok(None));
    assert!(calls.try_recv().is_err(), "the call heard the hold once");
}

#[tokio::test]
async fn the_calls_of_a_node_that_died_are_released_on_the_other_nodes() {
    let OfferedAcross {
        store,
        a,
        b,
        agent,
        mut desk,
        calls: _calls,
        p,
    } = offered_across().await;
    // Node B dies: its liveness record lapses (here: is gone), and it never says so itself.
    store
        .delete_blob(routing::protocol::NODES_NAMESPACE, "node-b", None)
        .await
        .expect("deleted");
    assert_eq!(
        next(&mut desk).await,
        DeskEvent::Released { call: p.call.clone() }
    );
    assert!(a.calls_of(&agent).is_empty(), "nothing of node B is kept");
    assert_eq!(a.call_node(&p.call), None);
    drop(b);
}

/// On virtual time: a record that lapsed while the store was out and came back within
/// [`NODE_GONE_AFTER`] changes nothing; once it stays missing the node is gone, and a command
/// waiting for it ends then as `call_ended` (not at [`COMMAND_TIMEOUT`]).
#[tokio::test(start_paused = true)]
async fn a_node_is_gone_only_once_its_record_stays_missing_and_commands_waiting_for_it_end_then() {
    let OfferedAcross {
        store,
        a,
        b: _b,
        agent,
        mut desk,
        mut calls,
        p,
    } = offered_across().await;

    // B's record lapses (every record does while the store is out) and is renewed 2 s later.
    store
        .delete_blob(routing::protocol::NODES_NAMESPACE, "node-b", None)
        .await
        .expect("deleted");
    tokio::time::sleep(NODE_GONE_AFTER - Duration::from_secs(1)).await;
    node_record(&store, "node-b").await;
    tokio::time::sleep(NODE_GONE_AFTER * 3).await;
    assert!(desk.events.try_recv().is_err(), "nothing ended on the desktop");
    assert_eq!(a.call_node(&p.call).as_deref(), Some("node-b"));

    // A hold the call does not answer waits for B...
    let started = Instant::now();
    let hold = tokio::spawn({
        let (a, agent, call) = (a.clone(), agent.clone(), p.call.clone());
        async move { a.command(&agent, &call, AgentCommand::Hold).await }
    });
    let _unanswered = request(&mut calls).await;
    // ...until B stops for good: its record stays missing.
    store
        .delete_blob(routing::protocol::NODES_NAMESPACE, "node-b", None)
        .await
        .expect("deleted");
    let refused = hold.await.expect("joined").expect_err("the call's node is gone");
    assert_eq!(refused.code, "call_ended");
    assert!(
        started.elapsed() <= NODE_GONE_AFTER + 2 * LIVENESS_EVERY + RESEND_AFTER,
        "ended when B was known gone: {:?}",
        started.elapsed()
    );
    assert_eq!(
        next(&mut desk).await,
        DeskEvent::Released { call: p.call.clone() }
    );
}

#[tokio::test]
async fn a_lead_one_node_previews_reaches_a_desktop_on_another_and_the_decision_comes_back() {
    let store = StateStore::memory();
    let (a, b) = (node(&store, "node-a").await, node(&store, "node-b").await);
    let agent = agent("2001");
    let mut desk = b.attach(&agent, AgentMedia::Phone);
    let campaign = CampaignId::new("spring").expect("valid id");
    let (handle, mut decisions) = crate::CampaignHandle::taking_previews(campaign.clone());
    a.register_campaign(handle);
    let offer = |lead: &str| {
        Arc::new(PreviewOffer {
            campaign: campaign.clone(),
            lead: LeadId::new(lead).expect("valid id"),
            name: Some(Pii::new("Ada".into())),
            phone: Pii::new("+442079000001".into()),
            attempt: 1,
            callback: false,
            customer: None,
        })
    };

    // Node A's runner previews a lead: the desktop on node B shows it.
    let first = offer("l1");
    a.offer_preview(&agent, first.clone());
    assert_eq!(next(&mut desk).await, DeskEvent::Preview(first.clone()));
    // The agent skips it on node B: the decision reaches node A's runner, and its answer comes back.
    let skipped = b
        .preview(&agent, &campaign, first.lead.clone(), PreviewChoice::Skip)
        .await;
    assert_eq!(skipped, Ok(()));
    let (who, lead, choice) = tokio::time::timeout(BOUND, decisions.recv())
        .await
        .expect("a decision within the bound")
        .expect("the runner listens");
    assert_eq!((who, lead), (agent.clone(), first.lead.clone()));
    assert!(matches!(choice, PreviewChoice::Skip), "{choice:?}");
    a.end_preview(&agent, None);

    // The next lead, withdrawn on node A (the campaign paused): the desktop on node B is told.
    let second = offer("l2");
    a.offer_preview(&agent, second.clone());
    assert_eq!(next(&mut desk).await, DeskEvent::Preview(second.clone()));
    a.end_preview(&agent, Some("the campaign is paused"));
    assert_eq!(
        next(&mut desk).await,
        DeskEvent::PreviewWithdrawn {
            campaign: campaign.clone(),
            lead: second.lead.clone(),
            reason: "the campaign is paused".into(),
        }
    );
    // Node B no longer sends decisions for it anywhere.
    let late = b
        .preview(&agent, &campaign, second.lead.clone(), PreviewChoice::Skip)
        .await;
    assert_eq!(late.map_err(|r| r.code), Err("no_preview"));
}

#[tokio::test]
async fn a_node_that_leaves_deletes_its_command_and_reply_streams() {
    let OfferedAcross {
        store,
        a,
        b,
        agent,
        desk: _desk,
        mut calls,
        p,
    } = offered_across().await;
    // A command from node A's desktop that node B is still running stays in B's stream, unacknowledged.
    let hangup = tokio::spawn({
        let (a, agent, call) = (a.clone(), agent.clone(), p.call.clone());
        async move { a.command(&agent, &call, AgentCommand::Hangup).await }
    });
    let running = request(&mut calls).await;
    assert_eq!(running.command, AgentCommand::Hangup);
    assert_eq!(
        store.stream_len(&commands_stream("node-b")).await.expect("read"),
        1
    );

    b.leave_cluster().await;
    assert_eq!(
        store.stream_len(&commands_stream("node-b")).await.expect("read"),
        0
    );
    assert_eq!(
        store.stream_len(&replies_stream("node-b")).await.expect("read"),
        0
    );
    assert_eq!(
        store
            .stream_pending(&commands_stream("node-b"), GROUP)
            .await
            .expect("read"),
        0
    );
    hangup.abort();
}

#[tokio::test]
async fn every_node_knows_the_calls_on_an_agents_desktop_for_customer_access() {
    let store = StateStore::memory();
    let (b, c) = (node(&store, "node-b").await, node(&store, "node-c").await);
    let (agent, marker_agent) = (agent("2001"), agent("2009"));
    // A desktop of another agent on node C: the relay's events arrive in order, so once its own
    // offer reaches it, node C has heard of every earlier event too.
    let mut marker = c.attach(&marker_agent, AgentMedia::Phone);
    let (tx, _calls) = mpsc::unbounded_channel();
    let p = pop("c1");
    b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));
    b.set_phase(&p.call, &agent, CallPhase::Connected, Timestamp::from_millis(6));
    let (tx, _marker_calls) = mpsc::unbounded_channel();
    b.offer(&marker_agent, pop("m1"), tx, Timestamp::from_millis(7));
    assert!(matches!(next(&mut marker).await, DeskEvent::Offered(_)));

    // An API request for the agent may land on node C, where no desktop of theirs is attached.
    let seen = c.calls_of(&agent);
    assert_eq!(seen.len(), 1, "node C knows the agent's call held on node B");
    assert_eq!(seen[0].pop.call, p.call);
    assert_eq!(seen[0].phase, CallPhase::Connected);
    assert_eq!(b.calls_of(&agent).len(), 1, "and so does the holder");
    assert!(c.calls_of(&self::agent("2002")).is_empty(), "nobody else's");

    b.release(&p.call, &agent);
    b.release(&pop("m1").call, &marker_agent);
    assert_eq!(
        next(&mut marker).await,
        DeskEvent::Released {
            call: pop("m1").call.clone()
        }
    );
    assert!(c.calls_of(&agent).is_empty(), "the call ended: closed everywhere");
}
