//! The hub's interest sets, driven by fake handlers attached in-process: how
//! subscriptions, snapshots, re-attaches and detaches move each handler's set.

mod support;

use std::sync::Arc;

use throng_proto::v1::SubscriptionOp;

use support::{Fake, change, hub, message, set, topic_of};

#[tokio::test]
async fn interest_sets_follow_the_other_handlers_subscriptions() {
    let hub = hub();
    let (mut a, interest) = Fake::attach_expect_interest(&hub, "a");
    assert!(interest.is_empty(), "{interest:?}");
    let (mut b, interest) = Fake::attach_expect_interest(&hub, "b");
    assert!(interest.is_empty());
    let (mut c, interest) = Fake::attach_expect_interest(&hub, "c");
    assert!(interest.is_empty());
    assert_eq!(
        hub.attached(),
        vec![Arc::from("a"), Arc::from("b"), Arc::from("c")]
    );

    // B subscribes: everyone else becomes interested; B is not told about itself.
    b.add("a/+");
    a.expect_update(&["a/+"], &[]);
    c.expect_update(&["a/+"], &[]);
    b.assert_nothing();

    // C holds it too: now B has someone else to forward to; A and C already knew.
    c.add("a/+");
    b.expect_update(&["a/+"], &[]);
    a.assert_nothing();
    c.assert_nothing();

    // A second subscription on the same handler changes nothing anywhere.
    c.add("a/+");
    for fake in [&mut a, &mut b, &mut c] {
        fake.assert_nothing();
    }

    // B leaves: only C loses interest (nobody but C holds it); A still has C.
    b.remove("a/+");
    c.expect_update(&[], &["a/+"]);
    a.assert_nothing();
    b.assert_nothing();

    // Removing what is not held is a no-op.
    b.remove("a/+");
    for fake in [&mut a, &mut b, &mut c] {
        fake.assert_nothing();
    }

    // A handler attaching now is told the whole set at once.
    let (mut d, interest) = Fake::attach_expect_interest(&hub, "d");
    assert_eq!(interest, set(&["a/+"]));

    // C detaches (its two subscriptions go with it): nobody holds a/+ any more.
    drop(c);
    a.expect_update(&[], &["a/+"]);
    b.expect_update(&[], &["a/+"]);
    d.expect_update(&[], &["a/+"]);
    assert_eq!(
        hub.attached(),
        vec![Arc::from("a"), Arc::from("b"), Arc::from("d")]
    );

    // A shared subscription counts under its bare filter.
    d.add_shared("g", "jobs/#");
    a.expect_update(&["jobs/#"], &[]);
    b.expect_update(&["jobs/#"], &[]);
    d.assert_nothing();
}

#[tokio::test]
async fn a_snapshot_replaces_what_the_handler_had() {
    let hub = hub();
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (b_old, _) = Fake::attach_expect_interest(&hub, "b");
    b_old.delta(
        vec![
            change("x/1", None, SubscriptionOp::Add),
            change("x/2", None, SubscriptionOp::Add),
        ],
        true,
    );
    a.expect_update(&["x/1", "x/2"], &[]);
    a.add("mine");

    // B re-attaches (its old stream is stale): its new stream starts with the
    // full interest set; its index entries stay until its snapshot arrives.
    let (mut b, interest) = Fake::attach_expect_interest(&hub, "b");
    assert_eq!(interest, set(&["mine"]));
    a.assert_nothing();
    b.delta(
        vec![
            change("x/2", None, SubscriptionOp::Add),
            change("x/3", Some("g"), SubscriptionOp::Add),
        ],
        true,
    );
    a.expect_update(&["x/3"], &["x/1"]);
    b.assert_nothing();

    // The stale stream closing afterwards does not detach the new one.
    drop(b_old);
    a.assert_nothing();
    assert_eq!(hub.attached(), vec![Arc::from("a"), Arc::from("b")]);
    b.forward(message("mine", "p"));
    assert_eq!(topic_of(&a.delivery_now()), "mine");

    // An empty snapshot clears everything the handler had.
    b.delta(Vec::new(), true);
    a.expect_update(&[], &["x/2", "x/3"]);

    // An invalid entry refuses the whole snapshot (what was held stays).
    b.delta(vec![change("ok", None, SubscriptionOp::Add)], true);
    a.expect_update(&["ok"], &[]);
    b.delta(
        vec![
            change("other", None, SubscriptionOp::Add),
            change("bad/#/x", None, SubscriptionOp::Add),
        ],
        true,
    );
    a.assert_nothing();
    b.forward(message("x", "p"));
    a.assert_nothing();
    a.forward(message("ok", "p"));
    assert_eq!(topic_of(&b.delivery_now()), "ok");
}
