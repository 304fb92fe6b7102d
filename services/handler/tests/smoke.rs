//! The harness itself works: a handler starts, accepts a CONNECT, answers PINGREQ
//! and reports the connection in its metrics.

mod support;

use throng_codec::{ConnAck, Connect, Packet, ProtocolVersion};

use support::{RawClient, TestServer};

#[tokio::test]
async fn connect_ping_and_gauge() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(server.mqtt, ProtocolVersion::V3_1_1).await;
    client
        .send(&Packet::Connect(Box::new(Connect {
            protocol: Some(ProtocolVersion::V3_1_1),
            clean_start: true,
            keep_alive: 30,
            client_id: "smoke".into(),
            ..Connect::default()
        })))
        .await;
    assert_eq!(
        client.recv().await,
        Some(Packet::ConnAck(ConnAck::default()))
    );
    client.send(&Packet::PingReq).await;
    assert_eq!(client.recv().await, Some(Packet::PingResp));
    server
        .wait_metric("throng_handler_connections", |v| v == 1.0)
        .await;
    drop(client);
    server
        .wait_metric("throng_handler_connections", |v| v == 0.0)
        .await;
    server.shutdown().await;
}
