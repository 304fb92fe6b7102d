//! The connections a worker holds once their CONNACK has arrived, and the one
//! timer wheel that keeps them alive.
//!
//! A held connection is a bare non-blocking socket in a `Vec` (4 bytes: the fd),
//! with no task, timer or buffer of its own. The wheel has `S` slots; connection
//! `i` sits in slot `i % S`, and each tick of the worker's single timer visits two
//! slots: it drains the connections of one and sends them PINGREQ, and drains the
//! slot pinged about a second earlier (its PINGRESPs, or the broker closing them). Every
//! connection is pinged once per period, the pings of a worker are spread evenly
//! over the period instead of going out in one burst, and a PINGRESP waits about
//! a second to be read: an unread one costs ~3 KiB of kernel socket memory, which
//! over a million connections would reach `net.ipv4.tcp_mem`.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use crate::handshake::io_key;
use crate::mqtt;

/// Finest tick of the wheel.
const MIN_TICK: Duration = Duration::from_millis(100);
/// Most slots a wheel has (a longer period gets longer ticks).
const MAX_SLOTS: u64 = 600;
/// Period of the liveness check when no pings are sent.
const CHECK_PERIOD: Duration = Duration::from_secs(10);
/// How long after its PINGREQ a connection is drained.
const DRAIN_LAG: Duration = Duration::from_secs(1);
/// Read buffer shared by all connections of a sweep.
const READ_BUF: usize = 1024;

/// Counters of the held connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pings_sent: u64,
    pub pongs: u64,
    /// PINGREQs not sent because the socket's send buffer was full.
    pub pings_blocked: u64,
    /// Packets other than PINGRESP and DISCONNECT received.
    pub other_packets: u64,
    /// Connections the broker closed, by cause (`eof`, `reset`, `disconnect_0x8d`, …).
    pub closed: BTreeMap<String, u64>,
    /// Longest time between two PINGREQs of one wheel slot: no connection went
    /// longer without one (a late timer, a starved process), milliseconds.
    pub max_ping_gap_ms: u64,
}

/// Slots and tick length of a wheel that visits every connection once per `period`.
pub fn wheel_shape(period: Duration) -> (usize, Duration) {
    let period = period.max(MIN_TICK);
    let slots = (period.as_millis() as u64 / MIN_TICK.as_millis() as u64).clamp(1, MAX_SLOTS);
    (slots as usize, period / slots as u32)
}

/// The held connections of one worker.
pub struct Held {
    conns: Vec<Option<StdStream>>,
    slots: usize,
    next_slot: usize,
    /// Slots between the one pinged and the one drained.
    drain_lag: usize,
    /// When each slot was last pinged.
    pinged_at: Vec<Option<Instant>>,
    ping: bool,
    up: u64,
    pub counts: Counts,
}

impl Held {
    /// `ping_every`: PINGREQ period (`None`: only watch for closes, every 10 s).
    /// Returns the set and the tick length to drive [`Held::tick`] with.
    pub fn new(capacity: usize, ping_every: Option<Duration>) -> (Self, Duration) {
        let (slots, tick) = wheel_shape(ping_every.unwrap_or(CHECK_PERIOD));
        let lag_ticks = (DRAIN_LAG.as_millis() / tick.as_millis().max(1)) as usize;
        let held = Self {
            conns: Vec::with_capacity(capacity),
            slots,
            next_slot: 0,
            drain_lag: if slots > 1 {
                lag_ticks.clamp(1, slots - 1)
            } else {
                0
            },
            pinged_at: vec![None; if ping_every.is_some() { slots } else { 0 }],
            ping: ping_every.is_some(),
            up: 0,
            counts: Counts::default(),
        };
        (held, tick)
    }

    pub fn push(&mut self, stream: StdStream) {
        self.conns.push(Some(stream));
        self.up += 1;
    }

    /// Connections still up.
    pub fn up(&self) -> u64 {
        self.up
    }

    /// Turns the wheel one slot: pings (and drains) the connections of the next
    /// slot, then drains those pinged `drain_lag` ticks ago.
    pub fn tick(&mut self) {
        let slot = self.next_slot;
        self.next_slot = (slot + 1) % self.slots;
        if self.ping {
            let now = Instant::now();
            if let Some(last) = self.pinged_at[slot].replace(now) {
                let gap = now.duration_since(last).as_millis() as u64;
                self.counts.max_ping_gap_ms = self.counts.max_ping_gap_ms.max(gap);
            }
        }
        self.visit(slot, self.slots, self.ping);
        if self.drain_lag > 0 {
            let earlier = (slot + self.slots - self.drain_lag) % self.slots;
            self.visit(earlier, self.slots, false);
        }
    }

    /// Drains every connection without pinging: counts late PINGRESPs and closes.
    pub fn check_all(&mut self) {
        self.visit(0, 1, false);
    }

    fn visit(&mut self, first: usize, step: usize, ping: bool) {
        let mut buf = [0u8; READ_BUF];
        for slot in self.conns.iter_mut().skip(first).step_by(step) {
            let Some(stream) = slot.as_ref() else {
                continue;
            };
            if let Some(cause) = service(stream, ping, &mut buf, &mut self.counts) {
                *self.counts.closed.entry(cause).or_default() += 1;
                *slot = None;
                self.up -= 1;
            }
        }
    }

    /// Sends DISCONNECT on every connection still up and closes them all.
    pub fn disconnect_all(self) {
        for stream in self.conns.iter().flatten() {
            let _ = (&*stream).write(&mqtt::DISCONNECT);
        }
    }
}

/// Drains one connection, then pings it (if asked) unless the broker closed it;
/// `Some(cause)` if the broker closed it.
fn service(stream: &StdStream, ping: bool, buf: &mut [u8], counts: &mut Counts) -> Option<String> {
    loop {
        match (&*stream).read(buf) {
            Ok(0) => return Some("eof".into()),
            Ok(n) => {
                let scan = scan(&buf[..n]);
                counts.pongs += scan.pongs;
                counts.other_packets += scan.other;
                if let Some(reason) = scan.disconnect {
                    return Some(match reason {
                        Some(code) => format!("disconnect_0x{code:02x}"),
                        None => "disconnect".into(),
                    });
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Some(io_key(&e)),
        }
    }
    if ping {
        match (&*stream).write(&mqtt::PINGREQ) {
            Ok(2) => counts.pings_sent += 1,
            // Half a PINGREQ: the send buffer was all but full; count it as blocked.
            Ok(_) => counts.pings_blocked += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => counts.pings_blocked += 1,
            Err(e) => return Some(io_key(&e)),
        }
    }
    None
}

/// What one read held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    pongs: u64,
    other: u64,
    /// A DISCONNECT, with its reason code (MQTT 5) if it had one.
    disconnect: Option<Option<u8>>,
}

/// Splits a read into packets. A packet cut off at the end of the buffer is not
/// counted (idle connections receive 2-byte PINGRESPs; the buffer holds 1 KiB).
fn scan(mut buf: &[u8]) -> Scan {
    let mut scan = Scan::default();
    while let Ok(Some(frame)) = mqtt::next_frame(buf) {
        match frame.first >> 4 {
            mqtt::TYPE_PINGRESP if buf[..frame.len] == mqtt::PINGRESP => scan.pongs += 1,
            mqtt::TYPE_DISCONNECT => {
                scan.disconnect = Some(
                    buf.get(frame.body)
                        .copied()
                        .filter(|_| frame.len > frame.body),
                );
                break;
            }
            _ => scan.other += 1,
        }
        buf = &buf[frame.len..];
    }
    scan
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_held_connection_is_its_fd() {
        assert_eq!(std::mem::size_of::<Option<StdStream>>(), 4);
    }

    #[test]
    fn wheel_shapes() {
        assert_eq!(
            wheel_shape(Duration::from_secs(30)),
            (300, Duration::from_millis(100))
        );
        assert_eq!(
            wheel_shape(Duration::from_secs(300)),
            (600, Duration::from_millis(500))
        );
        assert_eq!(
            wheel_shape(Duration::from_millis(10)),
            (1, Duration::from_millis(100))
        );
    }

    #[test]
    fn scans_packets() {
        assert_eq!(
            scan(&[0xD0, 0, 0xD0, 0]),
            Scan {
                pongs: 2,
                ..Scan::default()
            }
        );
        assert_eq!(
            scan(&[0xD0, 0, 0xE0, 2, 0x8D, 0]),
            Scan {
                pongs: 1,
                other: 0,
                disconnect: Some(Some(0x8D))
            }
        );
        assert_eq!(scan(&[0xE0, 0]).disconnect, Some(None));
        // A PUBLISH, then half a PINGRESP.
        assert_eq!(
            scan(&[0x30, 3, 0, 1, b't', 0xD0]),
            Scan {
                other: 1,
                ..Scan::default()
            }
        );
    }

    /// A client/server pair on loopback; the client end is non-blocking.
    fn pair(listener: &TcpListener) -> (StdStream, StdStream) {
        let client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Reads until `n` bytes arrived.
    fn read_n(server: &mut StdStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        server.read_exact(&mut got).unwrap();
        got
    }

    /// Drains `held` until `done` says so (the loopback delivers within microseconds).
    fn settle(held: &mut Held, done: impl Fn(&Held) -> bool) {
        for _ in 0..200 {
            held.check_all();
            if done(held) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("not settled: {:?}", held.counts);
    }

    #[test]
    fn pings_one_slot_per_tick_and_sorts_closes_by_cause() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut held, tick) = Held::new(4, Some(Duration::from_millis(200)));
        assert_eq!(
            (held.slots, held.drain_lag, tick),
            (2, 1, Duration::from_millis(100))
        );
        let (long, _) = Held::new(0, Some(Duration::from_secs(30)));
        assert_eq!((long.slots, long.drain_lag), (300, 10));
        let (single, _) = Held::new(0, Some(Duration::from_millis(100)));
        assert_eq!((single.slots, single.drain_lag), (1, 0));
        let mut servers = Vec::new();
        for _ in 0..4 {
            let (client, server) = pair(&listener);
            held.push(client);
            servers.push(server);
        }
        // Slot 0 holds connections 0 and 2: only they get a PINGREQ.
        held.tick();
        assert_eq!(held.counts.pings_sent, 2);
        for i in [0, 2] {
            assert_eq!(read_n(&mut servers[i], 2), mqtt::PINGREQ);
            servers[i].write_all(&mqtt::PINGRESP).unwrap();
        }
        // Slot 1: connections 1 and 3, which leave it unanswered.
        held.tick();
        assert_eq!(held.counts.pings_sent, 4);
        assert_eq!(held.counts.max_ping_gap_ms, 0, "no slot pinged twice yet");
        for i in [1, 3] {
            assert_eq!(read_n(&mut servers[i], 2), mqtt::PINGREQ);
        }
        settle(&mut held, |h| h.counts.pongs == 2);

        // Broker side: 0 answers and closes (EOF), 1 resets, 2 sends a v5 DISCONNECT.
        servers[0].write_all(&mqtt::PINGRESP).unwrap();
        servers[0].shutdown(std::net::Shutdown::Both).unwrap();
        socket2::SockRef::from(&servers[1])
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(servers.remove(1));
        servers[1].write_all(&[0xE0, 1, 0x8D]).unwrap();
        settle(&mut held, |h| h.up() == 1);
        assert_eq!(held.counts.pongs, 3);
        let closed: Vec<(&str, u64)> = held
            .counts
            .closed
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(closed, [("disconnect_0x8d", 1), ("eof", 1), ("reset", 1)]);

        // The survivor gets a DISCONNECT at the end.
        held.disconnect_all();
        assert_eq!(read_n(&mut servers[2], 2), mqtt::DISCONNECT);
    }
}
