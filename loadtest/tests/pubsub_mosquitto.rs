//! `throng-load pubsub` end to end: the real binary against a real Mosquitto
//! started on a free port, every mode at QoS 0, 1 and 2 with small counts;
//! every expected delivery must arrive exactly once. Skipped (with a message)
//! when no `mosquitto` binary is installed.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mosquitto_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mosquitto"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let sbin = Path::new("/usr/sbin/mosquitto");
        sbin.is_file().then(|| sbin.to_path_buf())
    })
}

fn start_mosquitto(bin: &Path) -> Mosquitto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("pubsub-it-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest stderr\nlog_type error\n"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting mosquitto");
    let mut m = Mosquitto { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            m.child.try_wait().unwrap().is_none(),
            "mosquitto exited before listening"
        );
        assert!(Instant::now() < deadline, "mosquitto does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    m
}

/// Runs one scenario and returns its JSON report.
fn run(
    m: &Mosquitto,
    mode: &str,
    qos: u8,
    protocol: u8,
    p: u32,
    s: u32,
    n: u64,
) -> serde_json::Value {
    let json = m.dir.join(format!("{mode}-{qos}-{protocol}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(["pubsub", "--quiet", "--warmup", "0", "--source-ips", "none"])
        .args(["--target", &format!("127.0.0.1:{}", m.port)])
        .args(["--mode", mode, "--qos", &qos.to_string()])
        .args(["--protocol", &protocol.to_string()])
        .args([
            "--publishers",
            &p.to_string(),
            "--subscribers",
            &s.to_string(),
        ])
        .args(["--messages", &n.to_string(), "--inflight", "8"])
        .args(["--drain-timeout", "3", "--timeout", "60"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running throng-load");
    let what = format!("{mode} QoS {qos} MQTT {protocol}");
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn every_mode_and_qos_against_mosquitto() {
    let Some(bin) = mosquitto_bin() else {
        eprintln!("skipped: no mosquitto binary (apt-get install mosquitto)");
        return;
    };
    let m = start_mosquitto(&bin);
    // (mode, protocol, publishers, subscribers, messages, deliveries expected)
    let cases = [
        ("fan-out", 4, 2, 3, 300, 900),
        ("fan-in", 5, 4, 2, 400, 800),
        ("one-to-one", 5, 3, 3, 300, 300),
    ];
    for (mode, protocol, p, s, n, expected) in cases {
        for qos in 0..=2u8 {
            let r = run(&m, mode, qos, protocol, p, s, n);
            let d = &r["delivery"];
            let what = format!("{mode} QoS {qos}: {d}");
            assert_eq!(r["publish"]["sent"], n, "{what}");
            assert_eq!(d["expected"], expected, "{what}");
            assert_eq!(d["unique"], expected, "{what}");
            assert_eq!(d["received"], expected, "{what}");
            assert_eq!(d["lost"], 0, "{what}");
            assert_eq!(d["duplicates"], 0, "{what}");
            assert_eq!(d["by_qos"][usize::from(qos)], expected, "{what}");
            assert_eq!(r["probe"]["complete"], true, "{what}");
            if qos > 0 {
                assert_eq!(r["publish"]["acked"], n, "{what}");
            }
            let rows = r["per_subscriber"].as_array().expect("per-subscriber rows");
            assert_eq!(rows.len(), s as usize, "{what}");
            assert!(rows.iter().all(|row| row["lost"] == 0), "{what}");
            assert!(r["problems"].as_array().unwrap().is_empty(), "{what}");
        }
    }
}
