//! The `throng` processes of a test: handlers and agents on free loopback ports,
//! started and waited for with bounds, killed when the test ends, their output
//! kept in a log file whose tail is printed when a test fails.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use throng_ring::{Member, Ring};

use super::{WAIT, metric, try_http_get};

pub const THRONG: &str = env!("CARGO_BIN_EXE_throng");

/// A free loopback port: bind port 0 and let it go.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process, killed if the test ends before it exits. Its output goes to a
/// log file whose tail is printed when the test panics.
pub struct Running {
    pub child: Child,
    name: String,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(&self.log)
        {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            eprintln!("--- {} log (last {} lines) ---", self.name, tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Running {
    pub fn spawn(name: &str, dir: &Path, args: &[String]) -> Running {
        let log = (1..)
            .map(|n| match n {
                1 => dir.join(format!("{name}.log")),
                n => dir.join(format!("{name}-{n}.log")),
            })
            .find(|path| !path.exists())
            .unwrap();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(THRONG)
            .args(args)
            .env("THRONG_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Running {
            child,
            name: name.to_owned(),
            log,
        }
    }

    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited early: {status}", self.name);
        }
    }

    /// Waits until this process listens on `admin` (bound last, after every other
    /// listener) and `ready` holds. `false` if the process exited because one of
    /// its free ports was taken by someone else before it could bind it (worth
    /// another try on other ports); any other exit fails the test. Checking who
    /// holds the port matters: every process here answers `/livez`, so a port
    /// taken by another test's process would otherwise look like this one up.
    fn wait_up(&mut self, admin: SocketAddr, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        while !(self.listens_on(admin) && ready()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                let output = self.output();
                if output.contains("cannot listen on") {
                    return false;
                }
                panic!("{} exited early: {status}\n{output}", self.name);
            }
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            std::thread::sleep(Duration::from_millis(25));
        }
        true
    }

    /// Whether this process holds the IPv4 listening socket on `addr`: its inode
    /// from /proc/net/tcp among the process's open files.
    fn listens_on(&self, addr: SocketAddr) -> bool {
        let SocketAddr::V4(addr) = addr else {
            panic!("IPv4 addresses only: {addr}");
        };
        let local = format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(addr.ip().octets()),
            addr.port()
        );
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let Some(inode) = table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), …, inode
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|inode| inode.to_string()))?
        }) else {
            return false;
        };
        let socket = format!("socket:[{inode}]");
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str())
        })
    }

    /// Waits for the process to exit (bounded).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL, and reaped.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

/// Resident set size of process `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// One `throng handler` process.
pub struct Handler {
    pub id: String,
    pub handoff: SocketAddr,
    pub admin: SocketAddr,
    pub process: Running,
}

impl Handler {
    /// Its connection gauge (counted from accept).
    pub fn connections(&self) -> f64 {
        metric(self.admin, "throng_handler_connections")
    }

    /// Waits until the admin port answers.
    pub fn wait_up(&mut self) {
        let admin = self.admin;
        let up = self
            .process
            .wait_up(admin, || try_http_get(admin, "/livez").is_ok());
        assert!(up, "{} could not bind its addresses", self.id);
    }
}

/// Starts `n` handlers `h0`, `h1`, … with TCP hand-off listeners, and with fd
/// hand-off sockets at `<dir>/<id>.sock` when `fd` is set; returns once every
/// admin port answers (every listener is bound before the admin server starts).
pub fn start_handlers(dir: &Path, n: usize, fd: bool, extra: &[&str]) -> Vec<Handler> {
    let mut handlers: Vec<Handler> = (0..n)
        .map(|i| spawn_handler(dir, &format!("h{i}"), free_addr(), free_addr(), fd, extra))
        .collect();
    for handler in &mut handlers {
        for attempt in 1.. {
            if handler.process.wait_up(handler.admin, || {
                try_http_get(handler.admin, "/livez").is_ok()
            }) {
                break;
            }
            assert!(attempt < 5, "{} could not bind free ports", handler.id);
            *handler = spawn_handler(dir, &handler.id, free_addr(), free_addr(), fd, extra);
        }
    }
    handlers
}

/// Starts one handler on the given addresses (not waiting for it).
pub fn spawn_handler(
    dir: &Path,
    id: &str,
    handoff: SocketAddr,
    admin: SocketAddr,
    fd: bool,
    extra: &[&str],
) -> Handler {
    let mut args: Vec<String> = vec![
        "handler".into(),
        "--id".into(),
        id.into(),
        "--handoff-listen".into(),
        handoff.to_string(),
        "--admin-listen".into(),
        admin.to_string(),
    ];
    if fd {
        args.push("--fd-handoff-listen".into());
        args.push(dir.join(format!("{id}.sock")).display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Handler {
        id: id.to_owned(),
        handoff,
        admin,
        process: Running::spawn(id, dir, &args),
    }
}

/// The `--handlers` list for these handlers.
pub fn handlers_spec(handlers: &[Handler]) -> String {
    handlers
        .iter()
        .map(|h| format!("{}={}", h.id, h.handoff))
        .collect::<Vec<_>>()
        .join(",")
}

/// The same ring the agent builds from `--handlers`.
pub fn ring_of(handlers: &[Handler]) -> Ring {
    Ring::new(
        handlers
            .iter()
            .map(|h| Member::new(h.id.as_str(), h.handoff.to_string())),
    )
}

/// One `throng agent` process.
pub struct Agent {
    pub mqtt: SocketAddr,
    pub admin: SocketAddr,
    /// The MQTT over TLS listener, when started with one.
    pub mqtts: Option<SocketAddr>,
    pub process: Running,
}

/// Starts an agent in front of `handlers` with `extra` flags (and an MQTTS
/// listener on a free port when `mqtts` is set); returns once it is ready (its
/// ring has members).
pub fn start_agent(
    dir: &Path,
    name: &str,
    handlers: &[Handler],
    extra: &[String],
    mqtts: bool,
) -> Agent {
    for _ in 0..5 {
        let (mqtt, admin) = (free_addr(), free_addr());
        let tls = mqtts.then(free_addr);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--mqtt-listen".into(),
            mqtt.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--handlers".into(),
            handlers_spec(handlers),
        ];
        if let Some(tls) = tls {
            args.extend(["--mqtts-listen".into(), tls.to_string()]);
        }
        args.extend(extra.iter().cloned());
        let mut process = Running::spawn(name, dir, &args);
        if process.wait_up(admin, || {
            try_http_get(admin, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
        }) {
            return Agent {
                mqtt,
                admin,
                mqtts: tls,
                process,
            };
        }
    }
    panic!("agent {name} could not bind free ports");
}

/// Starts handlers `h0`, `h1`, … on the planned (hand-off, admin) addresses with
/// `extra` flags; a handler whose planned ports were taken meanwhile is started
/// again on fresh ones. Returns once every admin port answers.
pub fn start_handlers_at(
    dir: &Path,
    planned: &[(SocketAddr, SocketAddr)],
    extra: &[&str],
) -> Vec<Handler> {
    let mut handlers: Vec<Handler> = planned
        .iter()
        .enumerate()
        .map(|(i, &(handoff, admin))| {
            spawn_handler(dir, &format!("h{i}"), handoff, admin, false, extra)
        })
        .collect();
    for handler in &mut handlers {
        for attempt in 1.. {
            if handler.process.wait_up(handler.admin, || {
                try_http_get(handler.admin, "/livez").is_ok()
            }) {
                break;
            }
            assert!(attempt < 5, "{} could not bind free ports", handler.id);
            *handler = spawn_handler(dir, &handler.id, free_addr(), free_addr(), false, extra);
        }
    }
    handlers
}

/// One `throng distributor` process.
pub struct Distributor {
    pub id: String,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub process: Running,
}

impl Distributor {
    /// Its gauge of attached handlers.
    pub fn handlers(&self) -> f64 {
        metric(self.admin, "throng_distributor_handlers")
    }
}

/// Starts distributor `id` with the handler membership `handlers` (`id=addr,…`)
/// and `extra` flags; returns once its admin port answers (bound after gRPC).
pub fn start_distributor(dir: &Path, id: &str, handlers: &str, extra: &[String]) -> Distributor {
    for _ in 0..5 {
        let (grpc, admin) = (free_addr(), free_addr());
        let mut args: Vec<String> = vec![
            "distributor".into(),
            "--id".into(),
            id.into(),
            "--grpc-listen".into(),
            grpc.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--handlers".into(),
            handlers.into(),
        ];
        args.extend(extra.iter().cloned());
        let mut process = Running::spawn(id, dir, &args);
        if process.wait_up(admin, || try_http_get(admin, "/livez").is_ok()) {
            return Distributor {
                id: id.to_owned(),
                grpc,
                admin,
                process,
            };
        }
    }
    panic!("distributor {id} could not bind free ports");
}
