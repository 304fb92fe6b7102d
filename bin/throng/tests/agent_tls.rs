//! MQTT over TLS through a real `throng agent` (`--mqtts-listen`, a certificate
//! from a test CA made with rcgen) to its handler: a rumqttc client trusting only
//! that CA exchanges messages with a plain client on the same handler.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

/// A CA, and a leaf for 127.0.0.1 signed by it: (CA DER, leaf chain PEM, key PEM).
fn certificates() -> (CertificateDer<'static>, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "throng e2e ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "throng agent");
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &ca).unwrap();
    (
        ca.der().clone(),
        format!("{}{}", leaf.pem(), ca.pem()),
        key.serialize_pem(),
    )
}

fn client_config(ca: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    // rumqttc's rustls has more than one provider compiled in: name one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects, checks the CONNACK, then keeps the event loop running in a task
/// that forwards every incoming packet.
async fn start_client(options: MqttOptions) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let (client, mut events) = AsyncClient::new(options, 16);
    let connack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return ack,
                Ok(_) => {}
                Err(err) => panic!("connect failed: {err}"),
            }
        }
    })
    .await
    .expect("no CONNACK within 10 s");
    assert_eq!(connack.code, ConnectReturnCode::Success);
    let (tx, rx) = mpsc::unbounded_channel();
    // Keeps polling after the receiver is gone: the connection lives as long as
    // the runtime.
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(packet) = event {
                let _ = tx.send(packet);
            }
        }
    });
    (client, rx)
}

/// The next incoming packet `pick` accepts, skipping others (10 s at most).
async fn next<T>(
    rx: &mut mpsc::UnboundedReceiver<Packet>,
    pick: impl Fn(Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let packet = rx.recv().await.expect("event loop ended");
            if let Some(found) = pick(packet) {
                return found;
            }
        }
    })
    .await
    .expect("expected packet within 10 s")
}

async fn subscribe(client: &AsyncClient, rx: &mut mpsc::UnboundedReceiver<Packet>, topic: &str) {
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    next(rx, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
}

async fn received(rx: &mut mpsc::UnboundedReceiver<Packet>) -> (String, Vec<u8>) {
    next(rx, |p| match p {
        Packet::Publish(publish) => Some((publish.topic, publish.payload.to_vec())),
        _ => None,
    })
    .await
}

#[test]
fn tls_client_talks_to_a_plain_client_on_its_handler() {
    tls_exchange(false);
}

/// TLS implies proxy hand-off: with `--handoff fd` the TLS client is still relayed
/// (the agent holds the TLS session) while the plain one is passed on.
#[test]
fn tls_is_proxied_even_with_fd_handoff() {
    tls_exchange(true);
}

fn tls_exchange(fd: bool) {
    let files = tempfile::tempdir().unwrap();
    let (ca, chain, key) = certificates();
    let cert_path = files.path().join("tls.crt");
    let key_path = files.path().join("tls.key");
    std::fs::write(&cert_path, chain).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let cluster = Cluster::start_full(
        fd,
        true,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let mqtts = cluster.agent.mqtts.expect("an MQTTS listener");
    let admin = cluster.agent.admin;
    let (tls_id, plain_id, owner) = cluster.ids_on_one_handler("tls-");
    let handler = cluster.handler(&owner);

    // A plain connection to the TLS port is no CONNECT: closed, counted, never routed.
    let mut plain_on_tls = Mqtt::over(std::net::TcpStream::connect(mqtts).unwrap(), v311());
    plain_on_tls.send(&connect_packet("confused", v311(), true));
    match read_until_closed(&mut plain_on_tls.stream, Duration::from_secs(5)) {
        ReadEnd::Closed(got) => assert!(
            got.first() != Some(&0x20),
            "no CONNACK over plain TCP on the TLS port: {got:?}"
        ),
        ReadEnd::Open(got) => panic!("still open after 5 s (got {got:?})"),
    }
    assert_eq!(accepts(admin, "bad_connect"), 1.0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_tls_client, _plain_client) = runtime.block_on(async {
        let mut options = MqttOptions::new(&tls_id, "127.0.0.1", mqtts.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            client_config(ca),
        )));
        let (tls_client, mut tls_rx) = start_client(options).await;
        let mut options = MqttOptions::new(&plain_id, "127.0.0.1", cluster.agent.mqtt.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (plain_client, mut plain_rx) = start_client(options).await;

        subscribe(&tls_client, &mut tls_rx, "tls/down").await;
        subscribe(&plain_client, &mut plain_rx, "tls/up").await;
        plain_client
            .publish(
                "tls/down",
                QoS::AtLeastOnce,
                false,
                b"to the tls client".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(
            received(&mut tls_rx).await,
            ("tls/down".to_owned(), b"to the tls client".to_vec())
        );
        tls_client
            .publish(
                "tls/up",
                QoS::AtLeastOnce,
                false,
                b"from the tls client".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(
            received(&mut plain_rx).await,
            ("tls/up".to_owned(), b"from the tls client".to_vec())
        );
        (tls_client, plain_client)
    });

    // Both on the owner; the relayed ones in the agent's table under it.
    assert_eq!(handler.connections(), 2.0);
    let relayed = if fd { 1 } else { 2 };
    let table = (relayed, [(owner.clone(), relayed)].into_iter().collect());
    wait_until(
        "the agent's table holds the relayed connections",
        WAIT,
        || agent_connections(admin) == table,
    );
    assert_eq!(
        metric(
            admin,
            &format!("throng_agent_routed_total{{handler=\"{owner}\"}}")
        ),
        2.0
    );
    assert_eq!(accepts(admin, "admitted"), 2.0);
}
