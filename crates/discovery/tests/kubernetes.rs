//! The EndpointSlice discovery against a fake API server: kube's real watcher and
//! client, over HTTP on 127.0.0.1, from the first list through watch events to a
//! relist after 410 Gone and retries after server errors.

mod fake_apiserver;

use std::pin::Pin;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use throng_discovery::{Member, Update, endpoint_slices};

const NS: &str = "mqtt";
const SERVICE: &str = "throng-handler";

/// An endpoint of pod `pod`; `ready` None leaves the condition out (means ready).
fn endpoint(pod: &str, ip: &str, ready: Option<bool>) -> Value {
    let mut conditions = json!({"serving": true, "terminating": false});
    if let Some(ready) = ready {
        conditions["ready"] = json!(ready);
    }
    json!({
        "addresses": [ip],
        "conditions": conditions,
        "hostname": pod,
        "targetRef": {"kind": "Pod", "namespace": NS, "name": pod},
    })
}

fn slice(namespace: &str, name: &str, service: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [
            {"name": "mqtt", "port": 1883, "protocol": "TCP"},
            {"name": "handoff", "port": 7000, "protocol": "TCP"},
        ],
    })
}

fn handlers(name: &str, endpoints: Vec<Value>) -> Value {
    slice(NS, name, SERVICE, endpoints)
}

fn m(id: &str, ip: &str) -> Member {
    Member::new(id, format!("{ip}:7000"))
}

type Updates = Pin<Box<dyn Stream<Item = Update> + Send>>;

fn watch(server: &FakeApiServer) -> Updates {
    Box::pin(endpoint_slices(
        server.client(),
        NS,
        SERVICE,
        Some("handoff"),
        1884,
    ))
}

/// The next update; a relist waits out kube's first backoff (under a second).
async fn next(updates: &mut Updates) -> Update {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update within 10 s")
        .expect("the update stream never ends")
}

#[tokio::test]
async fn list_then_watch_events_then_relist_after_410_gone() {
    let server = FakeApiServer::start().await;
    server.apply(handlers(
        "throng-handler-abc",
        vec![
            endpoint("throng-handler-0", "10.1.0.1", Some(true)),
            endpoint("throng-handler-1", "10.1.0.2", None),
            endpoint("throng-handler-2", "10.1.0.3", Some(false)),
        ],
    ));
    // Another Service's slice and another namespace's: never members.
    server.apply(slice(
        NS,
        "other-xyz",
        "other",
        vec![endpoint("other-0", "10.9.0.1", None)],
    ));
    server.apply(slice(
        "elsewhere",
        "throng-handler-abc",
        SERVICE,
        vec![endpoint("x-0", "10.9.0.2", None)],
    ));
    let mut updates = watch(&server);

    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![
            m("throng-handler-0", "10.1.0.1"),
            m("throng-handler-1", "10.1.0.2")
        ])
    );
    assert_eq!(
        server.selectors()[0],
        "kubernetes.io/service-name=throng-handler"
    );

    // ADDED: a new slice with a new member.
    server.apply(handlers(
        "throng-handler-def",
        vec![endpoint("throng-handler-3", "10.1.0.4", None)],
    ));
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![m("throng-handler-3", "10.1.0.4")])
    );

    // A change to another Service's slice is filtered out by the label selector,
    // so the next update is the one after it.
    server.apply(slice(
        NS,
        "other-xyz",
        "other",
        vec![endpoint("other-1", "10.9.0.3", None)],
    ));
    // MODIFIED: handler-1 stops being ready.
    server.apply(handlers(
        "throng-handler-abc",
        vec![
            endpoint("throng-handler-0", "10.1.0.1", Some(true)),
            endpoint("throng-handler-1", "10.1.0.2", Some(false)),
            endpoint("throng-handler-2", "10.1.0.3", Some(false)),
        ],
    ));
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["throng-handler-1".into()])
    );

    // DELETED: the whole slice goes.
    server.delete(NS, "throng-handler-def");
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["throng-handler-3".into()])
    );
    assert_eq!(server.lists(), 1);

    // The history is compacted past the watcher while handler-1 and -2 become
    // ready: the next watch is answered 410 Gone, the watcher relists, and the
    // relist is one Reset with the current state.
    server.apply_and_expire_watches(handlers(
        "throng-handler-abc",
        vec![
            endpoint("throng-handler-0", "10.1.0.1", Some(true)),
            endpoint("throng-handler-1", "10.1.0.2", Some(true)),
            endpoint("throng-handler-2", "10.1.0.3", None),
        ],
    ));
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![
            m("throng-handler-0", "10.1.0.1"),
            m("throng-handler-1", "10.1.0.2"),
            m("throng-handler-2", "10.1.0.3"),
        ])
    );
    assert_eq!(server.gone_answers(), 1);
    assert_eq!(server.lists(), 2);

    // And the watch goes on from the relist.
    server.apply(handlers(
        "throng-handler-ghi",
        vec![endpoint("throng-handler-4", "10.1.0.5", None)],
    ));
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![m("throng-handler-4", "10.1.0.5")])
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_the_stream_goes_on() {
    let server = FakeApiServer::start().await;
    server.apply(handlers(
        "throng-handler-abc",
        vec![endpoint("throng-handler-0", "10.1.0.1", None)],
    ));
    server.fail_next_lists(1);
    let mut updates = watch(&server);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![m("throng-handler-0", "10.1.0.1")])
    );
    assert_eq!(server.lists(), 1, "the failed list was retried");
}

#[tokio::test]
async fn an_empty_service_resets_to_no_members() {
    let server = FakeApiServer::start().await;
    let mut updates = watch(&server);
    assert_eq!(next(&mut updates).await, Update::Reset(vec![]));
    server.apply(handlers(
        "throng-handler-abc",
        vec![endpoint("throng-handler-0", "10.1.0.1", None)],
    ));
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![m("throng-handler-0", "10.1.0.1")])
    );
}
