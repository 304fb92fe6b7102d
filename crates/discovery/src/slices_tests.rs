//! Unit tests of the per-slice view: which endpoints are members, with what id and
//! address, and the updates each watcher event causes.

use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::*;

fn view() -> SliceView {
    SliceView::new(PortChoice {
        name: Some("handoff".into()),
        default: 1884,
    })
}

/// An endpoint of pod `pod` at `ip`; `ready` None leaves the condition out.
fn endpoint(pod: &str, ip: &str, ready: Option<bool>) -> Value {
    let mut e = json!({
        "addresses": [ip],
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "mqtt"},
        "conditions": {"serving": true, "terminating": false},
    });
    if let Some(ready) = ready {
        e["conditions"]["ready"] = json!(ready);
    }
    e
}

fn slice(name: &str, endpoints: Vec<Value>) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "mqtt", "resourceVersion": "1"},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "mqtt", "port": 1883}, {"name": "handoff", "port": 7000}],
    }))
    .unwrap()
}

fn m(id: &str, addr: &str) -> Member {
    Member::new(id, addr)
}

fn listed(view: &mut SliceView, slices: Vec<EndpointSlice>) -> Vec<Update> {
    let mut updates = view.apply(Event::Init);
    for s in slices {
        updates.extend(view.apply(Event::InitApply(s)));
    }
    updates.extend(view.apply(Event::InitDone));
    updates
}

#[test]
fn only_ready_endpoints_are_members_and_missing_ready_counts_as_ready() {
    let s = slice(
        "h-abc",
        vec![
            endpoint("h-0", "10.0.0.1", Some(true)),
            endpoint("h-1", "10.0.0.2", Some(false)),
            endpoint("h-2", "10.0.0.3", None),
        ],
    );
    let port = view().port;
    assert_eq!(
        ready_members(&s, &port),
        vec![m("h-0", "10.0.0.1:7000"), m("h-2", "10.0.0.3:7000")]
    );
}

#[test]
fn id_falls_back_to_hostname_and_endpoints_without_id_or_address_are_skipped() {
    let mut s = slice("h-abc", vec![]);
    s.endpoints = serde_json::from_value(json!([
        {"addresses": ["10.0.0.1"], "hostname": "h-0"},
        {"addresses": ["10.0.0.2"]},
        {"addresses": [], "targetRef": {"name": "h-3"}},
        {"addresses": ["10.0.0.4", "10.0.0.5"], "hostname": "ignored", "targetRef": {"name": "h-4"}},
    ]))
    .unwrap();
    let port = view().port;
    assert_eq!(
        ready_members(&s, &port),
        vec![m("h-0", "10.0.0.1:7000"), m("h-4", "10.0.0.4:7000")]
    );
}

#[test]
fn port_comes_from_the_named_or_first_slice_port_else_the_default() {
    let mut s = slice("h-abc", vec![endpoint("h-0", "10.0.0.1", None)]);
    let port = |name: Option<&str>| PortChoice {
        name: name.map(str::to_owned),
        default: 1884,
    };
    assert_eq!(
        ready_members(&s, &port(Some("handoff")))[0].addr.as_ref(),
        "10.0.0.1:7000"
    );
    assert_eq!(
        ready_members(&s, &port(None))[0].addr.as_ref(),
        "10.0.0.1:1883"
    );
    assert_eq!(
        ready_members(&s, &port(Some("grpc")))[0].addr.as_ref(),
        "10.0.0.1:1884"
    );
    s.ports = None;
    assert_eq!(
        ready_members(&s, &port(None))[0].addr.as_ref(),
        "10.0.0.1:1884"
    );
}

#[test]
fn ipv6_addresses_are_bracketed() {
    let mut s = slice("h-v6", vec![endpoint("h-0", "fd00::1", None)]);
    s.address_type = "IPv6".into();
    assert_eq!(
        ready_members(&s, &view().port),
        vec![m("h-0", "[fd00::1]:7000")]
    );
}

#[test]
fn a_list_is_one_reset_with_the_union_of_slices() {
    let mut v = view();
    let updates = listed(
        &mut v,
        vec![
            slice("h-a", vec![endpoint("h-0", "10.0.0.1", None)]),
            slice("h-b", vec![endpoint("h-1", "10.0.0.2", Some(true))]),
        ],
    );
    assert_eq!(
        updates,
        vec![Update::Reset(vec![
            m("h-0", "10.0.0.1:7000"),
            m("h-1", "10.0.0.2:7000")
        ])]
    );
}

#[test]
fn slice_changes_yield_their_diff_only() {
    let mut v = view();
    listed(
        &mut v,
        vec![slice("h-a", vec![endpoint("h-0", "10.0.0.1", None)])],
    );

    let b = slice(
        "h-b",
        vec![
            endpoint("h-1", "10.0.0.2", None),
            endpoint("h-2", "10.0.0.3", None),
        ],
    );
    assert_eq!(
        v.apply(Event::Apply(b)),
        vec![Update::Add(vec![
            m("h-1", "10.0.0.2:7000"),
            m("h-2", "10.0.0.3:7000")
        ])]
    );
    // Same slice again: nothing changed.
    let b = slice(
        "h-b",
        vec![
            endpoint("h-1", "10.0.0.2", None),
            endpoint("h-2", "10.0.0.3", None),
        ],
    );
    assert_eq!(v.apply(Event::Apply(b)), vec![]);
    // h-1 stops being ready, h-2 moves to a new address.
    let b = slice(
        "h-b",
        vec![
            endpoint("h-1", "10.0.0.2", Some(false)),
            endpoint("h-2", "10.0.0.9", None),
        ],
    );
    assert_eq!(
        v.apply(Event::Apply(b)),
        vec![
            Update::Add(vec![m("h-2", "10.0.0.9:7000")]),
            Update::Remove(vec!["h-1".into()]),
        ]
    );
    assert_eq!(
        v.apply(Event::Delete(slice("h-b", vec![]))),
        vec![Update::Remove(vec!["h-2".into()])]
    );
}

#[test]
fn a_member_in_two_slices_stays_until_both_drop_it() {
    let mut v = view();
    listed(
        &mut v,
        vec![
            slice("h-a", vec![endpoint("h-0", "10.0.0.1", None)]),
            slice("h-b", vec![endpoint("h-0", "10.0.0.1", None)]),
        ],
    );
    assert_eq!(v.apply(Event::Delete(slice("h-a", vec![]))), vec![]);
    assert_eq!(
        v.apply(Event::Apply(slice("h-b", vec![]))),
        vec![Update::Remove(vec!["h-0".into()])]
    );
}

#[test]
fn a_relist_keeps_the_old_view_until_done_then_resets() {
    let mut v = view();
    listed(
        &mut v,
        vec![slice("h-a", vec![endpoint("h-0", "10.0.0.1", None)])],
    );
    assert_eq!(v.apply(Event::Init), vec![]);
    let b = slice("h-b", vec![endpoint("h-1", "10.0.0.2", None)]);
    assert_eq!(v.apply(Event::InitApply(b)), vec![]);
    assert_eq!(v.members.len(), 1, "old view kept while relisting");
    assert_eq!(
        v.apply(Event::InitDone),
        vec![Update::Reset(vec![m("h-1", "10.0.0.2:7000")])]
    );
    // The relist replaced the slices: deleting the old one changes nothing.
    assert_eq!(v.apply(Event::Delete(slice("h-a", vec![]))), vec![]);
}
