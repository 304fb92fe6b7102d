//! The per-slice view of one Service's EndpointSlices, turned into membership
//! updates. A Service's endpoints are spread over several slices, so each watch
//! event replaces one slice's members; the view keeps every slice and diffs the
//! union before and after, so an update of one slice yields exactly the members
//! that joined or left. A relist (watcher restart) is buffered and published as one
//! `Reset` when complete, so membership never flaps to empty mid-relist.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::runtime::watcher::Event;
use throng_ring::Member;

use crate::Update;

/// Which port of a slice a member is reached on.
#[derive(Debug, Clone)]
pub(crate) struct PortChoice {
    /// The slice port with this name; without one, the slice's first port.
    pub name: Option<String>,
    /// Used when the slice has no such port.
    pub default: u16,
}

type SliceMembers = BTreeMap<String, Vec<Member>>;

#[derive(Debug)]
pub(crate) struct SliceView {
    port: PortChoice,
    /// Ready members by slice name.
    slices: SliceMembers,
    /// Slices gathered since the watcher's last `Init`, until its `InitDone`.
    relist: Option<SliceMembers>,
    /// The union of `slices`, as last published.
    members: BTreeMap<Arc<str>, Member>,
}

impl SliceView {
    pub fn new(port: PortChoice) -> SliceView {
        SliceView {
            port,
            slices: SliceMembers::new(),
            relist: None,
            members: BTreeMap::new(),
        }
    }

    /// Folds one watcher event in; returns the updates it causes (often none).
    pub fn apply(&mut self, event: Event<EndpointSlice>) -> Vec<Update> {
        match event {
            Event::Init => {
                self.relist = Some(SliceMembers::new());
                Vec::new()
            }
            Event::InitApply(slice) => {
                let members = ready_members(&slice, &self.port);
                self.relist
                    .get_or_insert_default()
                    .insert(slice_name(&slice), members);
                Vec::new()
            }
            Event::InitDone => {
                self.slices = self.relist.take().unwrap_or_default();
                self.members = union(&self.slices);
                vec![Update::Reset(self.members.values().cloned().collect())]
            }
            Event::Apply(slice) => {
                let members = ready_members(&slice, &self.port);
                self.slices.insert(slice_name(&slice), members);
                self.diff()
            }
            Event::Delete(slice) => {
                self.slices.remove(&slice_name(&slice));
                self.diff()
            }
        }
    }

    fn diff(&mut self) -> Vec<Update> {
        let now = union(&self.slices);
        let added: Vec<Member> = now
            .values()
            .filter(|m| self.members.get(&m.id) != Some(m))
            .cloned()
            .collect();
        let removed: Vec<Arc<str>> = self
            .members
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        self.members = now;
        let mut updates = Vec::new();
        // Joins before leaves: a replaced member never leaves the ring empty.
        if !added.is_empty() {
            updates.push(Update::Add(added));
        }
        if !removed.is_empty() {
            updates.push(Update::Remove(removed));
        }
        updates
    }
}

/// Every slice's members; a member listed in two slices (as during a move between
/// slices, or dual-stack) takes its address from the slice first by name.
fn union(slices: &SliceMembers) -> BTreeMap<Arc<str>, Member> {
    let mut members = BTreeMap::new();
    for member in slices.values().flatten() {
        members
            .entry(member.id.clone())
            .or_insert_with(|| member.clone());
    }
    members
}

fn slice_name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// The members a slice lists as ready. `ready` absent counts as ready, as the API
/// documents ("nil should be interpreted as ready"); `serving` and `terminating`
/// do not matter for ownership.
pub(crate) fn ready_members(slice: &EndpointSlice, port: &PortChoice) -> Vec<Member> {
    let port = slice_port(slice, port);
    let ipv6 = slice.address_type == "IPv6";
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| {
            let id = member_id(e)?;
            let address = e.addresses.first()?;
            let addr = if ipv6 || address.contains(':') {
                format!("[{address}]:{port}")
            } else {
                format!("{address}:{port}")
            };
            Some(Member::new(id, addr))
        })
        .collect()
}

/// The pod name (the StatefulSet ordinal name) or, failing that, the hostname.
fn member_id(endpoint: &Endpoint) -> Option<&str> {
    let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.as_deref());
    pod.or(endpoint.hostname.as_deref())
        .filter(|id| !id.is_empty())
}

fn slice_port(slice: &EndpointSlice, choice: &PortChoice) -> u16 {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = match &choice.name {
        Some(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str())),
        None => ports.first(),
    };
    port.and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(choice.default)
}

#[cfg(test)]
#[path = "slices_tests.rs"]
mod tests;
