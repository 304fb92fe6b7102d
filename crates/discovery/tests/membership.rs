//! Membership folds scripted update streams into the expected ring snapshots, and
//! publishes only when the member set changes.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, Stream};
use throng_discovery::{Member, Membership, Update, parse_static, static_updates};
use throng_ring::Ring;
use tokio::sync::{mpsc, watch};

fn m(id: &str, addr: &str) -> Member {
    Member::new(id, addr)
}

fn ids(ring: &Ring) -> Vec<(&str, &str)> {
    ring.members().map(|m| (&*m.id, &*m.addr)).collect()
}

/// A stream fed by the returned sender.
fn scripted() -> (
    mpsc::Sender<Update>,
    impl Stream<Item = Update> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(8);
    let updates = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|u| (u, rx)) });
    (tx, updates)
}

async fn changed(rx: &mut watch::Receiver<Arc<Ring>>) -> Arc<Ring> {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a new ring within 5 s")
        .expect("membership still running");
    rx.borrow_and_update().clone()
}

#[test]
fn apply_folds_updates_and_reports_changes() {
    let (tx, rx) = watch::channel(Arc::new(Ring::default()));
    let mut membership = Membership::new(tx);
    let mut step = |update, want_changed: bool, want: &[(&str, &str)]| {
        let before = rx.borrow().clone();
        assert_eq!(membership.apply(update), want_changed);
        let ring = rx.borrow().clone();
        assert_eq!(ids(&ring), want);
        assert_eq!(
            Arc::ptr_eq(&before, &ring),
            !want_changed,
            "published only on change"
        );
    };
    step(
        Update::Reset(vec![m("b", "b:1"), m("a", "a:1")]),
        true,
        &[("a", "a:1"), ("b", "b:1")],
    );
    step(
        Update::Reset(vec![m("a", "a:1"), m("b", "b:1")]),
        false,
        &[("a", "a:1"), ("b", "b:1")],
    );
    step(
        Update::Add(vec![m("c", "c:1")]),
        true,
        &[("a", "a:1"), ("b", "b:1"), ("c", "c:1")],
    );
    step(
        Update::Add(vec![m("c", "c:1")]),
        false,
        &[("a", "a:1"), ("b", "b:1"), ("c", "c:1")],
    );
    step(
        Update::Add(vec![m("c", "c:2")]),
        true,
        &[("a", "a:1"), ("b", "b:1"), ("c", "c:2")],
    );
    step(
        Update::Remove(vec!["a".into(), "nobody".into()]),
        true,
        &[("b", "b:1"), ("c", "c:2")],
    );
    step(
        Update::Remove(vec!["nobody".into()]),
        false,
        &[("b", "b:1"), ("c", "c:2")],
    );
    step(Update::Reset(vec![m("d", "d:1")]), true, &[("d", "d:1")]);
    step(Update::Reset(vec![]), true, &[]);
    assert_eq!(membership.members().count(), 0);
}

#[tokio::test]
async fn spawned_membership_publishes_each_change() {
    let (tx, updates) = scripted();
    let mut rings = Membership::spawn(updates);
    assert!(
        rings.borrow().is_empty(),
        "no members before the first update"
    );

    tx.send(Update::Reset(vec![
        m("h-0", "10.0.0.1:7000"),
        m("h-1", "10.0.0.2:7000"),
    ]))
    .await
    .unwrap();
    let ring = changed(&mut rings).await;
    assert_eq!(
        ids(&ring),
        [("h-0", "10.0.0.1:7000"), ("h-1", "10.0.0.2:7000")]
    );

    // A no-op, then a join: the ring seen next is the one after the join.
    tx.send(Update::Add(vec![m("h-1", "10.0.0.2:7000")]))
        .await
        .unwrap();
    tx.send(Update::Add(vec![m("h-2", "10.0.0.3:7000")]))
        .await
        .unwrap();
    let ring = changed(&mut rings).await;
    assert_eq!(ring.len(), 3);
    assert!(!rings.has_changed().unwrap(), "the no-op published nothing");

    // The owner of a key leaves: the key moves to its next candidate.
    let owner = ring.owner("device-42").unwrap().clone();
    let next = ring.candidates("device-42")[1].clone();
    tx.send(Update::Remove(vec![owner.id.clone()]))
        .await
        .unwrap();
    let ring = changed(&mut rings).await;
    assert_eq!(ring.len(), 2);
    assert_eq!(ring.get(&owner.id), None);
    assert_eq!(ring.owner("device-42"), Some(&next));

    // The source ends: the task ends and readers see the sender gone.
    drop(tx);
    let closed = tokio::time::timeout(Duration::from_secs(5), rings.changed()).await;
    assert!(closed.expect("task ends within 5 s").is_err());
}

#[tokio::test]
async fn the_task_stops_when_nobody_reads_the_ring() {
    let (tx, updates) = scripted();
    let rings = Membership::spawn(updates);
    drop(rings);
    tokio::time::timeout(Duration::from_secs(5), tx.closed())
        .await
        .expect("the update stream is dropped within 5 s");
}

#[tokio::test]
async fn a_static_list_becomes_one_ring() {
    let members =
        parse_static("throng-handler-0=10.0.0.1:7000,throng-handler-1=10.0.0.2:7000").unwrap();
    let mut rings = Membership::spawn(static_updates(members.clone()));
    let ring = changed(&mut rings).await;
    assert_eq!(*ring, Ring::new(members));
}
