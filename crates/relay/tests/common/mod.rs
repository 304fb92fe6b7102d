//! Test harness: an "agent" listener whose accepted sockets become relay
//! clients, a "handler" listener the relay's upstreams connect to, and helpers
//! for bounded waits. Everything binds 127.0.0.1:0.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use throng_relay::{CloseReason, PairId, Relay, RelayConfig};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Harness {
    pub relay: Relay,
    pub closed: Arc<Mutex<Vec<(PairId, CloseReason)>>>,
    agent: TcpListener,
    handler: TcpListener,
}

/// One relayed pair as the test sees it: the device's socket and the
/// handler's accepted socket.
pub struct Ends {
    pub id: PairId,
    pub device: TcpStream,
    pub handler: TcpStream,
}

impl Harness {
    pub fn new(threads: usize, config: RelayConfig) -> Harness {
        let closed = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&closed);
        let config = RelayConfig {
            on_close: Some(Arc::new(move |id, reason| {
                log.lock().unwrap().push((id, reason));
            })),
            ..config
        };
        Harness {
            relay: Relay::start(threads, config).expect("relay starts"),
            closed,
            agent: TcpListener::bind("127.0.0.1:0").unwrap(),
            handler: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// Connects a device, an upstream, and hands the agent-side pair to the relay.
    pub fn pair(&self, pending: Vec<u8>) -> Ends {
        let (device, agent_side, handler, upstream) = self.sockets();
        let id = self.relay.add(agent_side, upstream, pending).expect("add");
        Ends {
            id,
            device,
            handler,
        }
    }

    /// (device, agent's accepted socket, handler's accepted socket, agent's upstream).
    pub fn sockets(&self) -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let device = TcpStream::connect(self.agent.local_addr().unwrap()).unwrap();
        let (agent_side, _) = self.agent.accept().unwrap();
        let upstream = TcpStream::connect(self.handler.local_addr().unwrap()).unwrap();
        let (handler, _) = self.handler.accept().unwrap();
        (device, agent_side, handler, upstream)
    }

    pub fn close_reason(&self, id: PairId) -> Option<CloseReason> {
        let closed = self.closed.lock().unwrap();
        closed.iter().find(|(i, _)| *i == id).map(|(_, r)| *r)
    }

    /// Waits for the pair's close callback and returns its reason.
    pub fn wait_closed(&self, id: PairId) -> CloseReason {
        wait_for("pair close", || self.close_reason(id))
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Blocking reads with a timeout so a broken relay fails instead of hanging.
pub fn with_timeout(stream: &TcpStream) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::fill(&mut bytes[..]);
    bytes
}

/// Writes `data` then half-closes, on its own thread.
pub fn send_then_shutdown(stream: &TcpStream, data: Vec<u8>) -> thread::JoinHandle<()> {
    let mut stream = stream.try_clone().unwrap();
    thread::spawn(move || {
        stream.write_all(&data).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
    })
}

/// Reads until EOF.
pub fn read_to_end(stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut stream = stream;
    stream.read_to_end(&mut out)?;
    Ok(out)
}

/// FNV-1a, to report mismatches without printing megabytes.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
