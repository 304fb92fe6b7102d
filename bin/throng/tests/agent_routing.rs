//! Routing through a real `throng agent` in front of three `throng handler`
//! processes: every client lands on its ring owner as `/v1/owner` names it, a
//! persistent session comes back on reconnect, the clients of a killed handler
//! reconnect to the next member in ring order (proxy and fd hand-off), a restarted
//! handler gets its clients back, and agent-assigned client ids route where the
//! handler uses them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use throng_codec::QoS;

#[test]
fn clients_land_on_their_ring_owner() {
    let cluster = Cluster::start(&[]);
    let ids = random_ids("route-", 60);
    let owners: Vec<String> = ids.iter().map(|id| cluster.owner(id)).collect();
    // The agent's ring is the one any process builds from the same membership.
    let ring = ring_of(&cluster.handlers);
    for (id, owner) in ids.iter().zip(&owners) {
        assert_eq!(&*ring.owner(id).unwrap().id, owner, "owner of {id}");
    }
    let expected = with_zeros(&cluster.handlers, &tally(&owners));
    assert!(
        expected.values().all(|&n| n > 0),
        "60 random ids should reach every handler: {expected:?}"
    );

    let clients: Vec<Mqtt> = ids
        .iter()
        .map(|id| Mqtt::connect(cluster.agent.mqtt, id, v311()))
        .collect();

    wait_until("handler gauges match /v1/owner", WAIT, || {
        cluster.handler_connections() == expected
    });
    wait_until("/v1/connections matches /v1/owner", WAIT, || {
        agent_connections(cluster.agent.admin) == (60, expected.clone())
    });
    let admin = cluster.agent.admin;
    for (handler, &n) in &expected {
        let routed = metric(
            admin,
            &format!("throng_agent_routed_total{{handler=\"{handler}\"}}"),
        );
        assert_eq!(routed, n as f64, "routed to {handler}");
    }
    assert_eq!(accepts(admin, "admitted"), 60.0);
    assert_eq!(metric(admin, "throng_agent_connections"), 60.0);
    assert_eq!(metric(admin, "throng_agent_ring_members"), 3.0);
    assert_eq!(
        metric_sum(admin, "throng_agent_handoff_failures_total"),
        0.0
    );

    check_each_location(
        &cluster.handlers.iter().collect::<Vec<_>>(),
        clients
            .into_iter()
            .zip(ids)
            .zip(owners)
            .map(|((client, id), owner)| (client, id, owner))
            .collect(),
    );
    wait_until("the agent forgets closed connections", WAIT, || {
        agent_connections(admin) == (0, BTreeMap::new())
            && metric(admin, "throng_agent_connections") == 0.0
    });
}

#[test]
fn persistent_session_comes_back_through_the_agent() {
    let cluster = Cluster::start(&[]);
    // Same owner for both: delivery across handlers is not built yet.
    let (sub_id, pub_id, owner) = cluster.ids_on_one_handler("session-");
    let handler = cluster.handler(&owner);
    let topic = format!("e2e/{sub_id}/inbox");

    let (mut sub, present) = Mqtt::connect_session(cluster.agent.mqtt, &sub_id, v311(), false);
    assert!(!present, "a new session");
    sub.subscribe(&topic, QoS::AtLeastOnce);
    assert_eq!(handler.connections(), 1.0);
    sub.disconnect();
    wait_until("the subscriber's session is offline", WAIT, || {
        metric(handler.admin, "throng_sessions{state=\"offline\"}") == 1.0
            && handler.connections() == 0.0
    });

    let mut publisher = Mqtt::connect(cluster.agent.mqtt, &pub_id, v311());
    publisher.publish(&topic, b"queued while away", QoS::AtLeastOnce);
    publisher.disconnect();

    let (mut sub, present) = Mqtt::connect_session(cluster.agent.mqtt, &sub_id, v311(), false);
    assert!(present, "the session must be found again");
    let message = sub.expect_publish();
    assert_eq!(message.topic, topic);
    assert_eq!(&message.payload[..], b"queued while away");
    assert_eq!(message.qos, QoS::AtLeastOnce);
    // The second connection went to the same handler as the first (the
    // publisher's is gone or going).
    wait_until("only the subscriber is left on its handler", WAIT, || {
        handler.connections() == 1.0
    });
    let table = (1, [(owner.clone(), 1)].into_iter().collect());
    wait_until(
        "the agent files the connection under its owner",
        WAIT,
        || agent_connections(cluster.agent.admin) == table,
    );
    assert_eq!(
        metric(
            cluster.agent.admin,
            &format!("throng_agent_routed_total{{handler=\"{owner}\"}}"),
        ),
        3.0
    );
    for other in cluster.handlers.iter().filter(|h| h.id != owner) {
        assert_eq!(
            metric_sum(other.admin, "throng_handler_connects_total"),
            0.0
        );
    }
}

#[test]
fn clients_of_a_killed_handler_reconnect_to_the_next_in_ring_order() {
    failover(false);
}

#[test]
fn fd_handoff_falls_back_to_the_next_in_ring_order() {
    failover(true);
}

/// Kill -9 the busiest handler: its clients are cut off, reconnect through the
/// agent, and land on the member that owns them without it; with every handler
/// gone a device is refused at once, not left hanging.
fn failover(fd: bool) {
    let mut cluster = Cluster::start_with(fd, &[]);
    let ids = random_ids("failover-", 30);
    let owners: Vec<String> = ids.iter().map(|id| cluster.owner(id)).collect();
    let counts = with_zeros(&cluster.handlers, &tally(&owners));
    let victim = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(id, _)| id.clone())
        .unwrap();
    let clients: Vec<Mqtt> = ids
        .iter()
        .map(|id| Mqtt::connect(cluster.agent.mqtt, id, v311()))
        .collect();
    wait_until("handler gauges match /v1/owner", WAIT, || {
        cluster.handler_connections() == counts
    });

    let ring = ring_of(&cluster.handlers);
    let victim_index = cluster
        .handlers
        .iter()
        .position(|h| h.id == victim)
        .unwrap();
    cluster.handlers[victim_index].process.kill_hard();

    // The dead handler's clients see their connection end; the others keep going.
    let mut located = Vec::new();
    let mut cut_off = Vec::new();
    for ((mut client, id), owner) in clients.into_iter().zip(ids).zip(owners) {
        if owner == victim {
            client.expect_closed(Duration::from_secs(10));
            cut_off.push(id);
        } else {
            client.ping();
            located.push((client, id, owner));
        }
    }
    assert_eq!(cut_off.len(), counts[&victim]);

    // On reconnect each lands on the member that owns it without the dead one.
    let mut expected = counts.clone();
    expected.remove(&victim);
    for id in cut_off {
        let candidates = ring.candidates(&id);
        assert_eq!(*candidates[0].id, *victim);
        let next = candidates[1].id.to_string();
        let mut client = Mqtt::connect(cluster.agent.mqtt, &id, v311());
        client.ping();
        *expected.get_mut(&next).unwrap() += 1;
        // Membership is static: the agent still names the dead handler as owner.
        assert_eq!(cluster.owner(&id), victim);
        located.push((client, id, next));
    }
    let moved = counts[&victim];
    let survivors: Vec<&Handler> = cluster.handlers.iter().filter(|h| h.id != victim).collect();
    let survivor_gauges = || {
        survivors
            .iter()
            .map(|h| (h.id.clone(), h.connections() as usize))
            .collect::<BTreeMap<_, _>>()
    };
    wait_until("moved clients land on candidates[1]", WAIT, || {
        survivor_gauges() == expected
    });
    let admin = cluster.agent.admin;
    // Proxied: the table holds every live pair under its handler. Fd: nothing.
    // (A connection leaves or is filed in the table after it is counted as routed.)
    let table = if fd {
        (0, BTreeMap::new())
    } else {
        (30, expected.clone())
    };
    wait_until(
        "/v1/connections drops the dead handler's pairs",
        WAIT,
        || agent_connections(admin) == table,
    );
    assert_eq!(
        metric(
            admin,
            &format!("throng_agent_handoff_failures_total{{handler=\"{victim}\"}}")
        ),
        moved as f64,
        "one failed attempt on the dead handler per reconnect"
    );
    assert_eq!(
        metric_sum(admin, "throng_agent_handoff_failures_total"),
        moved as f64
    );
    for (handler, &n) in &expected {
        assert_eq!(
            metric(
                admin,
                &format!("throng_agent_routed_total{{handler=\"{handler}\"}}")
            ),
            n as f64,
            "routed to {handler}"
        );
    }
    assert_eq!(
        metric(
            admin,
            &format!("throng_agent_routed_total{{handler=\"{victim}\"}}")
        ),
        moved as f64,
        "only the first connections went to the dead handler"
    );
    check_each_location(&survivors, located);

    for handler in &mut cluster.handlers {
        if handler.id != victim {
            handler.process.kill_hard();
        }
    }
    let (mut refused, ack) = Mqtt::handshake(
        TcpStream::connect(cluster.agent.mqtt).unwrap(),
        "nobody-home",
        v5(),
        true,
    );
    assert_eq!(ack.code, 0x88, "v5: server unavailable");
    refused.expect_closed(Duration::from_secs(5));
    let (mut refused, ack) = Mqtt::handshake(
        TcpStream::connect(cluster.agent.mqtt).unwrap(),
        "nobody-home",
        v311(),
        true,
    );
    assert_eq!(ack.code, 0x03, "v3.1.1: server unavailable");
    refused.expect_closed(Duration::from_secs(5));
    assert_eq!(
        metric_sum(admin, "throng_agent_handoff_failures_total"),
        (moved + 6) as f64,
        "each refused device tried all three handlers"
    );
}

#[test]
fn assigned_client_ids_route_where_the_handler_uses_them() {
    assigned_ids(false);
}

#[test]
fn assigned_client_ids_route_where_the_handler_uses_them_fd() {
    assigned_ids(true);
}

/// A v5 client with an empty id gets one assigned; the agent routed it by that
/// id, and the handler (told it in the hand-off) assigned the same one.
fn assigned_ids(fd: bool) {
    let cluster = Cluster::start_with(fd, &[]);
    let mut located = Vec::new();
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let before = cluster.handler_connections();
        let (mut client, ack) = Mqtt::handshake(
            TcpStream::connect(cluster.agent.mqtt).unwrap(),
            "",
            v5(),
            true,
        );
        assert_eq!(ack.code, 0);
        let assigned = ack
            .properties
            .assigned_client_identifier
            .expect("an assigned client identifier");
        assert!(seen.insert(assigned.clone()), "{assigned} assigned twice");
        client.ping();
        let owner = cluster.owner(&assigned);
        let mut expected = before;
        *expected.get_mut(&owner).unwrap() += 1;
        wait_until(
            "the client is on the owner of its assigned id",
            WAIT,
            || cluster.handler_connections() == expected,
        );
        located.push((client, assigned, owner));
    }
    // 3.1.1 allows no assigned id for a persistent session.
    let (mut refused, ack) = Mqtt::handshake(
        TcpStream::connect(cluster.agent.mqtt).unwrap(),
        "",
        v311(),
        false,
    );
    assert_eq!(ack.code, 0x02, "v3.1.1: identifier rejected");
    refused.expect_closed(Duration::from_secs(5));
    check_each_location(&cluster.handlers.iter().collect::<Vec<_>>(), located);
}

#[test]
fn a_restarted_handler_gets_its_clients_back() {
    restarted_owner(false);
}

#[test]
fn fd_handoff_reaches_a_restarted_handler() {
    restarted_owner(true);
}

/// A handler dies and comes back on the same addresses (a StatefulSet pod
/// restarting): the next clients it owns go to it again, not to a fallback.
fn restarted_owner(fd: bool) {
    let mut cluster = Cluster::start_with(fd, &[]);
    let (first, second, owner) = cluster.ids_on_one_handler("restart-");
    let mut before = Mqtt::connect(cluster.agent.mqtt, &first, v311());
    before.ping();
    assert_eq!(cluster.handler(&owner).connections(), 1.0);

    let index = cluster.handlers.iter().position(|h| h.id == owner).unwrap();
    cluster.handlers[index].process.kill_hard();
    before.expect_closed(Duration::from_secs(10));
    let (handoff, admin) = (
        cluster.handlers[index].handoff,
        cluster.handlers[index].admin,
    );
    let mut restarted = spawn_handler(cluster.dir.path(), &owner, handoff, admin, fd, &[]);
    restarted.wait_up();
    cluster.handlers[index] = restarted;

    for id in [&second, &first] {
        let mut client = Mqtt::connect(cluster.agent.mqtt, id, v311());
        client.ping();
    }
    wait_until("both clients back on their owner", WAIT, || {
        metric_sum(
            cluster.handler(&owner).admin,
            "throng_handler_connects_total",
        ) == 2.0
    });
    for other in cluster.handlers.iter().filter(|h| h.id != owner) {
        assert_eq!(
            metric_sum(other.admin, "throng_handler_connects_total"),
            0.0,
            "{} got a client of {owner}",
            other.id
        );
    }
    assert_eq!(
        metric_sum(cluster.agent.admin, "throng_agent_handoff_failures_total"),
        0.0
    );
}
