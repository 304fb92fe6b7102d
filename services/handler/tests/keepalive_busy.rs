//! Keepalive under load: a handler that falls behind must not close clients whose
//! PINGREQ is already in its socket buffers. Reproduces the 1,000,000-connection
//! benchmark finding on a small scale: the handler runs on one thread that is
//! blocked past every deadline while the clients ping; afterwards more sockets are
//! readable than one reactor turn reports (1,024 events), so the keepalive sweep
//! runs before the handler has seen some of the pings.

mod support;

use std::time::Duration;

use throng_codec::Packet;

use support::TestServer;
use support::v3::{connect_packet, raw_connect};

const CLIENTS: usize = 1_500;
/// 1.5 × 3 s of silence is allowed; the handler is blocked for longer than that.
const KEEP_ALIVE: u16 = 3;
const BLOCKED: Duration = Duration::from_millis(6_000);

#[test]
fn pings_waiting_in_socket_buffers_keep_connections_open() {
    // The handler gets a single-threaded runtime of its own, so the test can stall it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::start());
    let handler = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        runtime.block_on(async {
            let _ = stopped.await;
        });
    });
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(ping_while_handler_stalls(&server, &handler));
    drop(server);
    let _ = stop.send(());
    driver.join().unwrap();
}

async fn ping_while_handler_stalls(server: &TestServer, handler: &tokio::runtime::Handle) {
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let (client, ack) = raw_connect(
            server.mqtt,
            connect_packet(&format!("busy-{i}"), true, KEEP_ALIVE),
        )
        .await;
        assert_eq!(ack.code, 0);
        clients.push(client);
    }

    // Stall the handler, ping from every client well within its deadline, and let
    // the handler go only after every deadline has passed.
    handler.spawn(async { std::thread::sleep(BLOCKED) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for client in &mut clients {
        client.send(&Packet::PingReq).await;
    }
    // Replies come once the handler runs again (`recv` waits 5 s at most).
    tokio::time::sleep(BLOCKED).await;

    let mut closed = 0;
    for client in &mut clients {
        match tokio::time::timeout(BLOCKED + Duration::from_secs(10), client.recv()).await {
            Ok(Some(Packet::PingResp)) => {}
            Ok(Some(other)) => panic!("expected PINGRESP, got {other:?}"),
            Ok(None) => closed += 1,
            Err(_) => panic!("no PINGRESP and no close"),
        }
    }
    assert_eq!(
        closed, 0,
        "connections closed although they had pinged in time"
    );
    let timeouts = server
        .metric("throng_handler_disconnects_total{reason=\"keepalive_timeout\"}")
        .await;
    assert_eq!(timeouts, 0.0);

    // Silence after that is still enforced.
    let (mut silent, ack) = raw_connect(server.mqtt, connect_packet("silent", true, 1)).await;
    assert_eq!(ack.code, 0);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), silent.recv())
            .await
            .expect("silent client not closed"),
        None
    );
    server
        .wait_metric(
            "throng_handler_disconnects_total{reason=\"keepalive_timeout\"}",
            |v| v == 1.0,
        )
        .await;
}
