//! A throwaway `redis-server` per test, on a free port, killed on drop (no
//! persistence: a restart starts empty).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port. A port picked free can be taken by another
    /// test's server before ours binds it; then ours exits and the other answers
    /// our PING, so the server is only ours once it reports our child's pid.
    pub async fn start() -> Self {
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut server = Self { port, child: None };
            if server.try_spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 20 free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Stops the server (all data is lost: no persistence) and waits for exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers PING.
    pub async fn spawn(&mut self) {
        assert!(
            self.try_spawn().await,
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// Spawns the server and waits until it answers as our child; false when the
    /// port turned out to belong to someone else.
    async fn try_spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                // Exited: the port was not free after all.
                self.child = None;
                return false;
            }
            if let Ok(mut c) = self.client().get_multiplexed_async_connection().await {
                let info: redis::RedisResult<String> =
                    redis::cmd("INFO").arg("server").query_async(&mut c).await;
                if let Ok(info) = info {
                    if info
                        .lines()
                        .any(|l| l.trim() == format!("process_id:{pid}"))
                    {
                        return true;
                    }
                    // Another test's server answers on this port.
                    self.stop();
                    return false;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
