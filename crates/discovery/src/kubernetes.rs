//! Membership from Kubernetes: a watch on the EndpointSlices
//! (`discovery.k8s.io/v1`) of the handler's headless Service, through kube's
//! `watcher`, which lists, then watches from the list's resourceVersion, and
//! relists when the watch expires (410 Gone). Errors are logged and retried with
//! kube's default backoff; the stream never ends.

use futures::Stream;
use futures::stream::{self, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::Update;
use crate::slices::{PortChoice, SliceView};

/// The label the EndpointSlice controller puts on every slice of a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Watches the EndpointSlices of `service` in `namespace`. A member is a ready
/// endpoint; its id is the pod name (falling back to the endpoint's hostname), its
/// address the endpoint's first address with the slice port named `port_name`
/// (without a name, the slice's first port), or `default_port` when the slice has
/// no such port. Each (re)list yields a `Reset`, each slice change the `Add` and
/// `Remove` it causes.
pub fn endpoint_slices(
    client: Client,
    namespace: &str,
    service: &str,
    port_name: Option<&str>,
    default_port: u16,
) -> impl Stream<Item = Update> + Send + 'static {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let mut view = SliceView::new(PortChoice {
        name: port_name.map(str::to_owned),
        default: default_port,
    });
    let (namespace, service) = (namespace.to_owned(), service.to_owned());
    watcher(api, config).default_backoff().flat_map(move |event| {
        let updates = match event {
            Ok(event) => view.apply(event),
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                debug!(%namespace, %service, "endpointslice watch expired, relisting");
                Vec::new()
            }
            Err(error) => {
                warn!(%namespace, %service, %error, "endpointslice watch failed, retrying");
                Vec::new()
            }
        };
        for update in &updates {
            match update {
                Update::Reset(members) => {
                    info!(%namespace, %service, members = members.len(), "handler membership listed")
                }
                Update::Add(members) => {
                    info!(%namespace, %service, ?members, "handler members joined")
                }
                Update::Remove(ids) => info!(%namespace, %service, ?ids, "handler members left"),
            }
        }
        stream::iter(updates)
    })
}
