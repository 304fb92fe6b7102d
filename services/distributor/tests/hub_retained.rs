//! Retained messages in the hub: stored, delivered to every handler, replayed on
//! attach (newest wins), and clears kept as tombstones.

mod support;

use support::{Fake, hub, retained, set, sync_set, topic_of};

#[tokio::test]
async fn retained_messages_are_stored_and_replayed_on_attach() {
    let hub = hub();
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    let (mut c, _) = Fake::attach_expect_interest(&hub, "c");
    c.add("r/#");
    a.drain();
    b.drain();

    // Delivered to every other handler (B has no subscription but stores it).
    let first = retained("r/1", "v1", 2_000);
    a.forward(first.clone());
    for fake in [&mut b, &mut c] {
        let got = fake.delivery_now();
        assert_eq!(topic_of(&got), "r/1");
        assert_eq!(got.message.as_ref(), Some(&first));
        assert!(!got.retained_sync && !got.shared_only);
        assert_eq!(got.delivery_id, 0);
    }
    a.assert_nothing();
    a.forward(retained("r/keep", "k", 2_000));
    b.drain();
    c.drain();

    // A handler attaching later gets both, as retained_sync.
    let (mut d, _) = Fake::attach_expect_interest(&hub, "d");
    assert_eq!(
        sync_set(&mut d, 2).await,
        set(&["r/1=v1", "r/keep=k"]),
        "d replays"
    );
    d.assert_quiet().await;

    // An older copy (a handler replaying what it held) does not overwrite it, and
    // a retain_copy is stored only, never routed.
    b.retain_copy(retained("r/1", "stale", 1_000));
    for fake in [&mut a, &mut b, &mut c, &mut d] {
        fake.assert_nothing();
    }
    let (mut e, _) = Fake::attach_expect_interest(&hub, "e");
    assert_eq!(sync_set(&mut e, 2).await, set(&["r/1=v1", "r/keep=k"]));
    e.assert_quiet().await;

    // A newer copy replaces it.
    b.retain_copy(retained("r/1", "v2", 3_000));
    a.assert_nothing();
    let (mut f, _) = Fake::attach_expect_interest(&hub, "f");
    assert_eq!(sync_set(&mut f, 2).await, set(&["r/1=v2", "r/keep=k"]));

    // An empty payload clears it, and is itself delivered to everyone else.
    a.forward(retained("r/1", "", 4_000));
    for fake in [&mut b, &mut c, &mut d, &mut e, &mut f] {
        let got = fake.delivery_now();
        assert_eq!(topic_of(&got), "r/1");
        assert!(got.message.unwrap().payload.is_empty());
    }
    let (mut g, _) = Fake::attach_expect_interest(&hub, "g");
    assert_eq!(sync_set(&mut g, 1).await, set(&["r/keep=k"]));
    g.assert_quiet().await;

    // An older clear does not remove a newer message either.
    a.forward(retained("r/2", "new", 6_000));
    a.retain_copy(retained("r/2", "", 5_000));
    let (mut h, _) = Fake::attach_expect_interest(&hub, "h");
    assert_eq!(sync_set(&mut h, 2).await, set(&["r/2=new", "r/keep=k"]));
}

/// A recent clear is remembered as a tombstone: a handler attaching later is told
/// to drop its copy, and a stale copy it replays does not bring the message back.
#[tokio::test]
async fn a_recent_clear_is_a_tombstone() {
    let hub = hub();
    let now = throng_distributor::hub::unix_ms();
    let (a, _) = Fake::attach_expect_interest(&hub, "a");
    a.forward(retained("t/1", "old", now - 2_000));
    a.forward(retained("t/1", "", now - 1_000));

    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    assert_eq!(
        sync_set(&mut b, 1).await,
        set(&["t/1="]),
        "b is told it is cleared"
    );
    b.assert_quiet().await;

    // b held the old copy while cut off and replays it: older than the clear.
    b.retain_copy(retained("t/1", "old", now - 2_000));
    let (mut c, _) = Fake::attach_expect_interest(&hub, "c");
    assert_eq!(sync_set(&mut c, 1).await, set(&["t/1="]));
    c.assert_quiet().await;
}
