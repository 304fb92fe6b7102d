//! The whole cluster as real processes: two `throng distributor`s, three
//! `throng handler`s attached to both, one `throng agent` in front of the
//! handlers, and a `redis-server` when the test needs one. Also `throng pub`.

use std::process::Command;
use std::time::Duration;

use throng_codec::ProtocolVersion;
use throng_testkit::RedisServer;

use super::{
    Agent, Device, Distributor, Handler, THRONG, WAIT, free_addr, group_state, metric, random_ids,
    redis_conn, ring_of, spawn_handler, start_agent, start_distributor, start_handlers_at,
    start_redis, wait_until,
};

/// What a [`FullCluster`] runs with. In the flags, `{redis}` stands for the
/// Redis URL.
#[derive(Default)]
pub struct Setup {
    /// Start a `redis-server`; the distributors consume its downlink stream.
    pub redis: bool,
    pub handler_args: Vec<String>,
    pub distributor_args: Vec<String>,
}

pub struct FullCluster {
    pub distributors: Vec<Distributor>,
    pub handlers: Vec<Handler>,
    pub agent: Agent,
    pub redis: Option<RedisServer>,
    handler_args: Vec<String>,
    /// Last, so the processes are gone before their logs are.
    pub dir: tempfile::TempDir,
}

impl FullCluster {
    pub fn start(setup: Setup) -> FullCluster {
        let dir = tempfile::tempdir().unwrap();
        let redis = setup.redis.then(start_redis);
        let url = redis.as_ref().map(RedisServer::url).unwrap_or_default();
        let fill = |args: &[String]| -> Vec<String> {
            args.iter().map(|a| a.replace("{redis}", &url)).collect()
        };
        // The distributors only use the handlers' ids (the ring), so planned
        // addresses do even if a handler has to move to other ports.
        let planned: Vec<_> = (0..3).map(|_| (free_addr(), free_addr())).collect();
        let handler_spec = planned
            .iter()
            .enumerate()
            .map(|(i, (handoff, _))| format!("h{i}={handoff}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut distributor_args = fill(&setup.distributor_args);
        if redis.is_some() {
            distributor_args.extend(["--redis-url".into(), url.clone()]);
        }
        let distributors: Vec<Distributor> = ["d0", "d1"]
            .iter()
            .map(|id| start_distributor(dir.path(), id, &handler_spec, &distributor_args))
            .collect();
        let mut handler_args = vec![
            "--distributors".to_owned(),
            distributors
                .iter()
                .map(|d| format!("{}={}", d.id, d.grpc))
                .collect::<Vec<_>>()
                .join(","),
        ];
        handler_args.extend(fill(&setup.handler_args));
        let args: Vec<&str> = handler_args.iter().map(String::as_str).collect();
        let handlers = start_handlers_at(dir.path(), &planned, &args);
        let agent = start_agent(dir.path(), "agent", &handlers, &[], false);
        let cluster = FullCluster {
            distributors,
            handlers,
            agent,
            redis,
            handler_args,
            dir,
        };
        cluster.wait_attached();
        if let Some(redis) = &cluster.redis {
            // The group starts at `$`: entries added before it exists are not read.
            let mut conn = redis_conn(redis);
            wait_until("the downlink consumer group exists", WAIT, || {
                group_state(&mut conn).is_some()
            });
        }
        cluster
    }

    /// A connection to the cluster's Redis.
    pub fn redis_conn(&self) -> redis::Connection {
        redis_conn(self.redis.as_ref().expect("started with redis"))
    }

    /// Every handler attached to every distributor, as both sides count it.
    pub fn wait_attached(&self) {
        wait_until("every handler attached to every distributor", WAIT, || {
            self.handlers
                .iter()
                .all(|h| metric(h.admin, "throng_handler_distributors") == 2.0)
                && self.distributors.iter().all(|d| d.handlers() == 3.0)
        });
    }

    pub fn handler(&self, id: &str) -> &Handler {
        self.handlers
            .iter()
            .find(|h| h.id == id)
            .unwrap_or_else(|| panic!("no handler {id}"))
    }

    pub fn distributor(&self, id: &str) -> &Distributor {
        self.distributors
            .iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no distributor {id}"))
    }

    /// The handler owning `client_id` (the ring every process computes).
    pub fn owner(&self, client_id: &str) -> String {
        ring_of(&self.handlers)
            .owner(client_id)
            .expect("a member")
            .id
            .to_string()
    }

    /// `n` fresh client ids owned by `handler`.
    pub fn ids_on(&self, handler: &str, prefix: &str, n: usize) -> Vec<String> {
        let ring = ring_of(&self.handlers);
        let ids: Vec<String> = random_ids(prefix, 64 * n)
            .into_iter()
            .filter(|id| &*ring.owner(id).unwrap().id == handler)
            .take(n)
            .collect();
        assert_eq!(ids.len(), n, "not enough ids on {handler}");
        ids
    }

    /// One fresh client id owned by `handler`.
    pub fn id_on(&self, handler: &str, prefix: &str) -> String {
        self.ids_on(handler, prefix, 1).remove(0)
    }

    /// A device connected through the agent with a clean session.
    pub fn connect(&self, id: &str, version: ProtocolVersion) -> Device {
        Device::connect(self.agent.mqtt, id, version)
    }

    /// Kills handler `id` (SIGKILL), starts it again on the same addresses and
    /// flags, and waits until it is attached to both distributors again.
    pub fn restart_handler(&mut self, id: &str) {
        let index = self.handlers.iter().position(|h| h.id == id).unwrap();
        let (handoff, admin) = (self.handlers[index].handoff, self.handlers[index].admin);
        self.handlers[index].process.kill_hard();
        let args: Vec<&str> = self.handler_args.iter().map(String::as_str).collect();
        let mut restarted = spawn_handler(self.dir.path(), id, handoff, admin, false, &args);
        restarted.wait_up();
        self.handlers[index] = restarted;
        self.wait_attached();
    }
}

/// Runs `throng pub --grpc <grpc> <args>`: (exit status success, stdout).
pub fn throng_pub(grpc: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let output = Command::new(THRONG)
        .arg("pub")
        .arg("--grpc")
        .arg(grpc.to_string())
        .args(["--timeout", "10s"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.code().is_some(),
        "throng pub killed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), stdout)
}

/// Runs `throng pub` and expects its outcome line to start with `outcome`.
pub fn throng_pub_expect(grpc: std::net::SocketAddr, args: &[&str], outcome: &str) -> String {
    let (ok, stdout) = throng_pub(grpc, args);
    assert!(
        stdout.starts_with(&format!("{outcome} ")),
        "throng pub {args:?}: expected {outcome}, got {stdout:?}"
    );
    assert_eq!(
        ok,
        matches!(outcome, "accepted" | "queued"),
        "exit status of throng pub {args:?} ({stdout:?})"
    );
    stdout
}

/// How long a negative check (nothing more arrives) listens after a ping round trip.
pub const QUIET: Duration = Duration::from_millis(300);
