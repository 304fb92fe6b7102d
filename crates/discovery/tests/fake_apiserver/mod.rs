//! A fake Kubernetes API server for EndpointSlices, in-process on 127.0.0.1:0: just
//! enough of list and watch for kube's real `watcher` to run against it. Lists
//! carry a resourceVersion and honour `labelSelector` (equality terms); watches
//! (`?watch=true`) stream newline-delimited JSON events after the requested
//! resourceVersion, and a watch from a version older than the last compaction is
//! answered with a 410 Gone ERROR event, as a real server does.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::stream;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct FakeApiServer {
    url: Uri,
    shared: Arc<Shared>,
}

struct Shared {
    store: Mutex<Store>,
    /// Bumped after every change to `store`, to wake open watches.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Store {
    resource_version: u64,
    /// Objects by (namespace, name).
    objects: BTreeMap<(String, String), Value>,
    /// (resourceVersion, event type, object), oldest first.
    events: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion older than this are answered 410 Gone.
    compacted: u64,
    /// Bumping it ends every open watch.
    generation: u64,
    /// Lists still to be answered 500.
    failing_lists: usize,
    lists: usize,
    gone: usize,
    selectors: Vec<String>,
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed: watch::Sender::new(0),
        });
        let app = Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                get(endpoint_slices),
            )
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeApiServer { url, shared }
    }

    /// A kube client for this server, without authentication.
    pub fn client(&self) -> kube::Client {
        // Other workspace crates enable rustls' aws-lc-rs as well as ring, and rustls
        // then wants a process-wide provider chosen before any TLS config is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        kube::Client::try_from(kube::Config::new(self.url.clone())).unwrap()
    }

    /// Creates or replaces an object (by metadata.namespace and metadata.name).
    pub fn apply(&self, object: Value) {
        self.edit(|store| store.apply(object));
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        self.edit(|store| store.delete(namespace, name));
    }

    /// Applies `object` and, in the same step, compacts the event history and ends
    /// every open watch: no watch sees the change, the watcher's next watch is
    /// answered 410 Gone, and only a relist shows the change.
    pub fn apply_and_expire_watches(&self, object: Value) {
        self.edit(|store| {
            store.apply(object);
            store.compacted = store.resource_version;
            store.generation += 1;
        });
    }

    /// Answers the next `count` lists with 500 Internal Server Error.
    pub fn fail_next_lists(&self, count: usize) {
        self.store().failing_lists = count;
    }

    /// How many lists were answered with items.
    pub fn lists(&self) -> usize {
        self.store().lists
    }

    /// How many watches were answered 410 Gone.
    pub fn gone_answers(&self) -> usize {
        self.store().gone
    }

    /// Every labelSelector received, in order.
    pub fn selectors(&self) -> Vec<String> {
        self.store().selectors.clone()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    fn edit(&self, f: impl FnOnce(&mut Store)) {
        f(&mut self.store());
        self.shared.changed.send_modify(|n| *n += 1);
    }
}

impl Store {
    fn apply(&mut self, mut object: Value) {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let key = key(&object);
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.events
            .push((self.resource_version, kind, object.clone()));
        self.objects.insert(key, object);
    }

    fn delete(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut object = self
            .objects
            .remove(&key)
            .expect("deleting an object that exists");
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.events.push((self.resource_version, "DELETED", object));
    }
}

fn key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    let field = |f: &str| {
        meta[f]
            .as_str()
            .expect("metadata.namespace and .name")
            .to_owned()
    };
    (field("namespace"), field("name"))
}

/// `k=v` or `k==v` terms joined by commas; anything else is not supported here.
fn selects(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .unwrap_or_else(|| panic!("the fake supports only equality selectors, got {term:?}"));
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

async fn endpoint_slices(
    State(shared): State<Arc<Shared>>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    shared
        .store
        .lock()
        .unwrap()
        .selectors
        .push(selector.clone());
    let wanted = move |ns: &str, object: &Value| ns == namespace && selects(&selector, object);
    if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        let from = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        watch_slices(shared, from, wanted)
    } else {
        list_slices(&shared, wanted)
    }
}

fn list_slices(shared: &Shared, wanted: impl Fn(&str, &Value) -> bool) -> Response {
    let mut store = shared.store.lock().unwrap();
    if store.failing_lists > 0 {
        store.failing_lists -= 1;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "etcd is sulking", "reason": "InternalError", "code": 500});
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(status)).into_response();
    }
    store.lists += 1;
    let items: Vec<&Value> = store
        .objects
        .iter()
        .filter(|((ns, _), object)| wanted(ns, object))
        .map(|(_, object)| object)
        .collect();
    axum::Json(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": store.resource_version.to_string()},
        "items": items,
    }))
    .into_response()
}

/// Streams the matching events after `from` until the watches are expired.
fn watch_slices(
    shared: Arc<Shared>,
    from: u64,
    wanted: impl Fn(&str, &Value) -> bool + Send + Sync + 'static,
) -> Response {
    // Subscribed before the first look at the store, so no change is missed.
    let changed = shared.changed.subscribe();
    let generation = {
        let mut store = shared.store.lock().unwrap();
        if from < store.compacted {
            store.gone += 1;
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {from} ({})", store.compacted)}});
            return ndjson(Body::from(format!("{gone}\n")));
        }
        store.generation
    };
    let wanted = Arc::new(wanted);
    let events = stream::unfold((from, changed), move |(mut seen, mut changed)| {
        let (shared, wanted) = (shared.clone(), wanted.clone());
        let lines = move |seen: u64| {
            let store = shared.store.lock().unwrap();
            if store.generation != generation {
                return None;
            }
            let lines: String = store
                .events
                .iter()
                .filter(|(rv, _, object)| *rv > seen && wanted(&key(object).0, object))
                .map(|(_, kind, object)| format!("{}\n", json!({"type": kind, "object": object})))
                .collect();
            Some((lines, store.resource_version))
        };
        async move {
            loop {
                let (lines, now) = lines(seen)?;
                seen = now;
                if !lines.is_empty() {
                    return Some((Ok::<_, Infallible>(Bytes::from(lines)), (seen, changed)));
                }
                changed.changed().await.ok()?;
            }
        }
    });
    ndjson(Body::from_stream(events))
}

fn ndjson(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
