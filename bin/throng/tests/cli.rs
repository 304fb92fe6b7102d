//! The real `throng` binary: `throng dev` serves MQTT to the Mosquitto command-line
//! clients (3.1.1 and 5), answers on its admin port, and exits 0 on SIGTERM; bad
//! command lines exit non-zero with a clear message.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const THRONG: &str = env!("CARGO_BIN_EXE_throng");

/// A free loopback port: bind port 0 and let it go.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process that is killed if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Running {
    /// Waits for the process to exit (bounded).
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// `throng dev` on free ports; returns once the MQTT port accepts connections.
fn start_dev() -> (Running, SocketAddr, SocketAddr) {
    let (running, mqtt, admin, _grpc) = start_dev_with_grpc();
    (running, mqtt, admin)
}

fn start_dev_with_grpc() -> (Running, SocketAddr, SocketAddr, SocketAddr) {
    // A port picked free can be taken by another test's process before `throng
    // dev` binds it (it then exits 1, "cannot listen on"): try other ports.
    for _ in 0..5 {
        if let Some(started) = try_start_dev() {
            return started;
        }
    }
    panic!("throng dev could not bind its ports in 5 attempts");
}

fn try_start_dev() -> Option<(Running, SocketAddr, SocketAddr, SocketAddr)> {
    let mqtt = free_addr();
    let admin = free_addr();
    let grpc = free_addr();
    // A file, not a pipe: nobody reads a pipe while the process runs.
    let log = tempfile::tempfile().unwrap();
    let mut log_reader = log.try_clone().unwrap();
    let child = Command::new(THRONG)
        .args(["dev", "--mqtt-listen", &mqtt.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--grpc-listen", &grpc.to_string()])
        .args(["--shutdown-grace", "2s"])
        .env("THRONG_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(mqtt).is_err()
        || TcpStream::connect(admin).is_err()
        || TcpStream::connect(grpc).is_err()
    {
        if let Some(status) = running.0.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Seek;
            let _ = log_reader.rewind();
            let _ = log_reader.read_to_string(&mut stderr);
            assert!(
                stderr.contains("cannot listen on"),
                "throng dev exited early: {status}\n{stderr}"
            );
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "throng dev did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    Some((running, mqtt, admin, grpc))
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn metric(admin: SocketAddr, sample: &str) -> f64 {
    http_get(admin, "/metrics")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

fn have_mosquitto_clients() -> bool {
    let found = ["mosquitto_pub", "mosquitto_sub"].iter().all(|bin| {
        Command::new(bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !found {
        eprintln!("skipping: mosquitto_pub/mosquitto_sub not installed");
    }
    found
}

/// One message from `mosquitto_pub` to `mosquitto_sub -C 1` at protocol `version`,
/// with the given client ids (subscriber, publisher) or ones the tools make up.
fn exchange(
    mqtt: SocketAddr,
    admin: SocketAddr,
    version: &str,
    topic: &str,
    ids: Option<(&str, &str)>,
) {
    let port = mqtt.port().to_string();
    let subs_before = metric(admin, "throng_subscriptions");
    let id_args = |id: Option<&str>| {
        id.map(|id| vec!["-i".to_string(), id.to_string()])
            .unwrap_or_default()
    };
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", version])
        .args(id_args(ids.map(|(sub, _)| sub)))
        .args(["-t", topic, "-q", "1", "-C", "1", "-W", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sub = Running(sub);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(admin, "throng_subscriptions") <= subs_before {
        assert!(Instant::now() < deadline, "mosquitto_sub never subscribed");
        std::thread::sleep(Duration::from_millis(25));
    }
    let message = format!("hello over {version}");
    let publish = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", version])
        .args(id_args(ids.map(|(_, publisher)| publisher)))
        .args(["-t", topic, "-q", "1", "-m", &message])
        .output()
        .unwrap();
    assert!(publish.status.success(), "mosquitto_pub: {publish:?}");
    let status = sub.wait_exit(Duration::from_secs(10));
    let mut out = String::new();
    sub.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "mosquitto_sub exited with {status}");
    assert_eq!(out.trim_end(), message);
}

#[test]
fn dev_serves_mosquitto_clients_v311_and_v5() {
    if !have_mosquitto_clients() {
        return;
    }
    let (mut throng, mqtt, admin) = start_dev();
    exchange(mqtt, admin, "mqttv311", "cli/v311", None);
    exchange(mqtt, admin, "mqttv5", "cli/v5", None);
    assert!(metric(admin, "throng_messages_received_total") >= 2.0);
    throng.terminate();
    assert!(throng.wait_exit(Duration::from_secs(10)).success());
}

/// The owning handler of `client_id`, from the admin port's `/v1/owner`.
fn owner(admin: SocketAddr, client_id: &str) -> String {
    let response = http_get(admin, &format!("/v1/owner?client_id={client_id}"));
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let start = body.find("\"handler\":\"").expect("handler in /v1/owner") + 11;
    body[start..].split('"').next().unwrap().to_string()
}

#[test]
fn dev_delivers_between_clients_on_different_handlers() {
    if !have_mosquitto_clients() {
        return;
    }
    let (mut throng, mqtt, admin) = start_dev();
    let subscriber = "cli-sub-0";
    let sub_owner = owner(admin, subscriber);
    let publisher = (0..100)
        .map(|i| format!("cli-pub-{i}"))
        .find(|id| owner(admin, id) != sub_owner)
        .expect("two handlers own some ids each");
    exchange(
        mqtt,
        admin,
        "mqttv5",
        "cli/across",
        Some((subscriber, &publisher)),
    );
    assert_eq!(metric(admin, "throng_agent_ring_members"), 2.0);
    throng.terminate();
    assert!(throng.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn admin_port_answers() {
    let (mut throng, _mqtt, admin) = start_dev();
    let live = http_get(admin, "/livez");
    assert!(live.starts_with("HTTP/1.1 200"), "/livez: {live}");
    let metrics = http_get(admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "/metrics: {metrics}");
    assert!(metrics.contains("throng_handler_connections"));
    throng.terminate();
    assert!(throng.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn sigterm_exits_zero_and_closes_clients() {
    let (mut throng, mqtt, admin) = start_dev();
    let mut client = TcpStream::connect(mqtt).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    // CONNECT, MQTT 3.1.1, clean session, keepalive 60, client id "term".
    client
        .write_all(&[
            0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x04,
            b't', b'e', b'r', b'm',
        ])
        .unwrap();
    let mut connack = [0u8; 4];
    client.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    assert_eq!(metric(admin, "throng_handler_connections"), 1.0);

    let sent = Instant::now();
    throng.terminate();
    let status = throng.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        sent.elapsed()
    );
    let mut rest = Vec::new();
    let closed = client.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the client connection must be closed: {closed:?}"
    );
}

#[test]
fn sigterm_does_not_wait_for_sockets_that_never_sent_connect() {
    let (mut throng, mqtt, admin) = start_dev();
    let _idle = TcpStream::connect(mqtt).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(admin, "throng_agent_connections") < 1.0 {
        assert!(Instant::now() < deadline, "idle socket never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    throng.terminate();
    let status = throng.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?} for a socket without CONNECT",
        sent.elapsed()
    );
}

fn run(args: &[&str]) -> Output {
    Command::new(THRONG)
        .args(args)
        .env("THRONG_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn handler_without_listeners_fails_clearly() {
    let out = run(&["handler", "--id", "h0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--mqtt-listen"), "stderr: {stderr}");
}

#[test]
fn bad_config_fails_before_binding() {
    let mqtt = free_addr();
    let mqtt_arg = mqtt.to_string();
    let admin_arg = free_addr().to_string();
    let base = [
        "dev",
        "--mqtt-listen",
        &mqtt_arg,
        "--admin-listen",
        &admin_arg,
    ];

    let out = run(&[&base[..], &["--receive-maximum", "0"]].concat());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("receive maximum"), "stderr: {stderr}");

    let out = run(&[&base[..], &["--max-packet-size", "10"]].concat());
    assert!(!out.status.success());

    let out = run(&[&base[..], &["--connect-timeout", "soon"]].concat());
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());

    let out = run(&[&base[..], &["--max-queued-messages", "0"]].concat());
    assert!(!out.status.success());
}

#[test]
fn busy_port_fails_clearly() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let admin = free_addr().to_string();
    let out = run(&["dev", "--mqtt-listen", &addr, "--admin-listen", &admin]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr),
        "stderr should name the address: {stderr}"
    );
}

#[test]
fn dev_answers_grpc_health_checks() {
    let (mut throng, _mqtt, _admin, grpc) = start_dev_with_grpc();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    });
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    throng.terminate();
    assert!(throng.wait_exit(Duration::from_secs(10)).success());
}

/// `throng pub` against `throng dev`: a message for a connected client id reaches
/// it on `$throng/downlink/<id>` whatever it subscribes to; a repeated message id is
/// not delivered twice; an unknown client is reported and exits non-zero; an
/// offline persistent session gets `queued`.
#[test]
fn pub_reaches_a_device_through_dev_and_reports_outcomes() {
    if !have_mosquitto_clients() {
        return;
    }
    let (mut throng, mqtt, admin, grpc) = start_dev_with_grpc();
    let grpc = grpc.to_string();
    let port = mqtt.port().to_string();
    let subs_before = metric(admin, "throng_sessions{state=\"online\"}");
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "pub-dev-42",
            "-c",
            "-q",
            "1",
        ])
        .args(["-t", "unrelated/topic", "-v", "-C", "2", "-W", "15"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sub = Running(sub);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(admin, "throng_sessions{state=\"online\"}") <= subs_before {
        assert!(Instant::now() < deadline, "mosquitto_sub never connected");
        std::thread::sleep(Duration::from_millis(25));
    }
    let publish = |extra: &[&str]| run(&[&["pub", "--grpc", &grpc][..], extra].concat());

    let first = publish(&[
        "--client",
        "pub-dev-42",
        "--qos",
        "1",
        "--payload",
        "one",
        "--message-id",
        "m-1",
    ]);
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "accepted m-1"
    );
    let again = publish(&[
        "--client",
        "pub-dev-42",
        "--qos",
        "1",
        "--payload",
        "one",
        "--message-id",
        "m-1",
    ]);
    assert!(again.status.success(), "{again:?}");
    let second = publish(&["--client", "pub-dev-42", "--qos", "1", "--payload", "two"]);
    assert!(second.status.success(), "{second:?}");

    let status = sub.wait_exit(Duration::from_secs(15));
    let mut out = String::new();
    sub.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        status.success(),
        "mosquitto_sub exited with {status}: {out}"
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "$throng/downlink/pub-dev-42 one",
            "$throng/downlink/pub-dev-42 two"
        ],
        "m-1 once, then the second message"
    );

    // The session is persistent (-c) and now offline: QoS 1 is queued there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(admin, "throng_sessions{state=\"offline\"}") < 1.0 {
        assert!(Instant::now() < deadline, "session never went offline");
        std::thread::sleep(Duration::from_millis(25));
    }
    let queued = publish(&["--client", "pub-dev-42", "--qos", "1", "--payload", "later"]);
    assert!(queued.status.success(), "{queued:?}");
    assert!(
        String::from_utf8_lossy(&queued.stdout).starts_with("queued "),
        "{queued:?}"
    );

    let unknown = publish(&["--client", "nobody-here", "--payload", "x"]);
    assert!(!unknown.status.success());
    let line = String::from_utf8_lossy(&unknown.stdout);
    assert!(
        line.starts_with("undeliverable ") && line.contains("nobody-here"),
        "{line}"
    );

    let refused = publish(&["--client", "pub-dev-42", "--retain", "--payload", "x"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).starts_with("rejected "),
        "{refused:?}"
    );

    throng.terminate();
    assert!(throng.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn pub_needs_a_target_and_a_reachable_server() {
    let out = run(&["pub", "--payload", "x"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--client") && stderr.contains("--topic"),
        "stderr: {stderr}"
    );

    let out = run(&["pub", "--topic", "t", "--qos", "3"]);
    assert!(!out.status.success());

    let nobody = free_addr().to_string();
    let out = run(&["pub", "--grpc", &nobody, "--topic", "t", "--timeout", "2s"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("throng: "), "stderr: {stderr}");
}
