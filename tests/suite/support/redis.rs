//! A real Redis (`redis-server` from Debian, installed by `scripts/setup-test-peers.sh`) on a
//! free loopback port, with append-only persistence in a temp dir so a restart keeps its data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("authgate-redis-")
            .tempdir()
            .expect("tempdir");
        let mut redis = Redis {
            child: None,
            port: super::free_port(),
            dir,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install the test peers with scripts/setup-test-peers.sh")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "redis-server did not listen on port {} within 10s",
            self.port
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- Sentinel and Cluster ---------------------------------------------------------------------

/// One redis-server process (plain, replica, sentinel or cluster node), killed on drop. Its log
/// goes to a file in the topology's temp dir, shown by the topology's `logs()` on failure.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    log: std::path::PathBuf,
}

impl RedisProcess {
    /// Starts `redis-server` with `args` (the first may be a config file) and waits until it
    /// listens. `dir` is its working directory (persistence, `nodes.conf`).
    async fn start(dir: &std::path::Path, port: u16, args: &[String]) -> RedisProcess {
        std::fs::create_dir_all(dir).expect("process dir");
        let log = dir.join(format!("redis-{port}.log"));
        let child = Command::new("redis-server")
            .args(args)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install the test peers with scripts/setup-test-peers.sh")
            });
        let mut process = RedisProcess {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = process.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "redis-server {args:?} on port {port} exited with {status}:\n{}",
                    process.log_text()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not listen on port {port} within 10s");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no goodbye to replicas or sentinels.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process hangs with its sockets open (connections are accepted by the kernel
    /// and never answered), like a frozen VM or a partition.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisProcess::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("process running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {}", child.id());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs one command on the server at `port` over a fresh connection.
pub async fn command<T: ::redis::FromRedisValue>(
    port: u16,
    cmd: &::redis::Cmd,
) -> ::redis::RedisResult<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

/// `INFO <section>` of the server at `port`, as `field -> value`.
pub async fn info(port: u16, section: &str) -> std::collections::HashMap<String, String> {
    let text: String = command(port, ::redis::cmd("INFO").arg(section))
        .await
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Polls `check` every 50 ms until it holds; panics with `what` (and `logs`) after `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, logs: impl Fn() -> String, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {within:?}\n{}", logs());
}

/// What to start behind Sentinel.
#[derive(Debug, Clone, Copy)]
pub struct SentinelOptions {
    /// A replica of the master (needed for a failover).
    pub replica: bool,
    /// How many sentinels (quorum: a majority).
    pub sentinels: usize,
    /// `down-after-milliseconds`: how long the master must not answer to be down.
    pub down_after: Duration,
}

impl Default for SentinelOptions {
    fn default() -> Self {
        SentinelOptions {
            replica: false,
            sentinels: 1,
            down_after: Duration::from_millis(1000),
        }
    }
}

/// A master (persisting every write, `appendfsync always`), an optional replica, and sentinels
/// monitoring the master as [`RedisSentinel::MASTER_NAME`], all on free loopback ports.
pub struct RedisSentinel {
    pub master: RedisProcess,
    pub replica: Option<RedisProcess>,
    pub sentinels: Vec<RedisProcess>,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub const MASTER_NAME: &'static str = "authgate-test";

    /// One master, one sentinel.
    pub async fn start() -> RedisSentinel {
        Self::start_with(SentinelOptions::default()).await
    }

    /// Returns once the replica (if any) is in sync and every sentinel knows the master, the
    /// replica and the other sentinels, so that a failover can start at once.
    pub async fn start_with(options: SentinelOptions) -> RedisSentinel {
        let dir = tempfile::Builder::new()
            .prefix("authgate-sentinel-")
            .tempdir()
            .expect("tempdir");
        let data_args = |extra: &[String]| {
            let mut args: Vec<String> = [
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend_from_slice(extra);
            args
        };
        let master_port = super::free_port();
        let master =
            RedisProcess::start(&dir.path().join("master"), master_port, &data_args(&[])).await;
        let replica = if options.replica {
            let replica = RedisProcess::start(
                &dir.path().join("replica"),
                super::free_port(),
                &data_args(&[
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    master_port.to_string(),
                ]),
            )
            .await;
            Some(replica)
        } else {
            None
        };

        let quorum = options.sentinels / 2 + 1;
        let mut sentinels = Vec::new();
        for i in 0..options.sentinels {
            let sentinel_dir = dir.path().join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&sentinel_dir).expect("sentinel dir");
            // Sentinel rewrites its config file: each needs its own, writable.
            let conf = sentinel_dir.join("sentinel.conf");
            let name = Self::MASTER_NAME;
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
                     sentinel down-after-milliseconds {name} {}\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n",
                    options.down_after.as_millis()
                ),
            )
            .expect("sentinel.conf");
            let args = vec![conf.display().to_string(), "--sentinel".into()];
            sentinels.push(RedisProcess::start(&sentinel_dir, super::free_port(), &args).await);
        }
        let topology = RedisSentinel {
            master,
            replica,
            sentinels,
            dir,
        };
        topology.wait_ready(options).await;
        topology
    }

    async fn wait_ready(&self, options: SentinelOptions) {
        let logs = || self.logs();
        if let Some(replica) = &self.replica {
            let port = replica.port;
            wait_until(
                Duration::from_secs(15),
                "replica in sync with the master",
                logs,
                || async move {
                    info(port, "replication").await.get("master_link_status")
                        == Some(&"up".to_string())
                },
            )
            .await;
        }
        let name = Self::MASTER_NAME;
        for sentinel in &self.sentinels {
            let port = sentinel.port;
            let master = self.master.port;
            wait_until(
                Duration::from_secs(15),
                &format!("sentinel {port} knows the master, replica and other sentinels"),
                logs,
                || async move {
                    let addr: Option<(String, u16)> = command(
                        port,
                        ::redis::cmd("SENTINEL")
                            .arg("get-master-addr-by-name")
                            .arg(name),
                    )
                    .await
                    .ok()
                    .flatten();
                    let replicas: Vec<::redis::Value> =
                        command(port, ::redis::cmd("SENTINEL").arg("replicas").arg(name))
                            .await
                            .unwrap_or_default();
                    let others: Vec<::redis::Value> =
                        command(port, ::redis::cmd("SENTINEL").arg("sentinels").arg(name))
                            .await
                            .unwrap_or_default();
                    addr.map(|(_, p)| p) == Some(master)
                        && replicas.len() == usize::from(options.replica)
                        && others.len() == options.sentinels - 1
                },
            )
            .await;
        }
    }

    /// `host:port` of each sentinel, as `session.redis_sentinel.nodes` takes them.
    pub fn nodes(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisProcess::addr).collect()
    }

    /// The master's port according to the first live sentinel that answers.
    pub async fn master_port(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let addr: ::redis::RedisResult<Option<(String, u16)>> = command(
                sentinel.port,
                ::redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(Self::MASTER_NAME),
            )
            .await;
            if let Ok(addr) = addr {
                return addr.map(|(_, port)| port);
            }
        }
        None
    }

    /// Waits until the replica has every write the master has acknowledged so far.
    pub async fn wait_replicated(&self) {
        let replica = self.replica.as_ref().expect("started with a replica").port;
        let master = self.master.port;
        let offset = |port: u16, field: &'static str| async move {
            info(port, "replication")
                .await
                .get(field)
                .and_then(|v| v.parse::<u64>().ok())
        };
        let target = offset(master, "master_repl_offset")
            .await
            .expect("master reports its replication offset");
        wait_until(
            Duration::from_secs(10),
            "replica caught up with the master",
            || self.logs(),
            || async move { offset(replica, "slave_repl_offset").await >= Some(target) },
        )
        .await;
    }

    /// Every process's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let all = std::iter::once(&self.master)
            .chain(self.replica.iter())
            .chain(self.sentinels.iter());
        for p in all {
            out.push_str(&format!("---- port {} ----\n{}\n", p.port, p.log_text()));
        }
        out
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A Redis Cluster of masters without replicas, created with `redis-cli --cluster create`, all
/// 16384 slots assigned and `cluster_state:ok` on every node.
pub struct RedisCluster {
    pub nodes: Vec<RedisProcess>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Three masters.
    pub async fn start() -> RedisCluster {
        Self::start_with(3).await
    }

    pub async fn start_with(masters: usize) -> RedisCluster {
        let dir = tempfile::Builder::new()
            .prefix("authgate-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut nodes = Vec::new();
        for i in 0..masters {
            // The cluster bus port is set explicitly: the default (port + 10000) may be taken or
            // beyond 65535 for a port from the ephemeral range.
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                "--cluster-port",
                &super::free_port().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let node_dir = dir.path().join(format!("node-{i}"));
            nodes.push(RedisProcess::start(&node_dir, super::free_port(), &args).await);
        }
        let cluster = RedisCluster { nodes, dir };
        let output = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes.iter().map(RedisProcess::addr))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}): install the test peers with scripts/setup-test-peers.sh")
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            cluster.logs()
        );
        for node in &cluster.nodes {
            let port = node.port;
            wait_until(
                Duration::from_secs(20),
                &format!("cluster_state:ok on node {port}"),
                || cluster.logs(),
                || async move {
                    let text: String = command(port, ::redis::cmd("CLUSTER").arg("INFO"))
                        .await
                        .unwrap_or_default();
                    text.contains("cluster_state:ok")
                        && text.contains(&format!("cluster_known_nodes:{masters}"))
                        && text.contains("cluster_slots_assigned:16384")
                },
            )
            .await;
        }
        cluster
    }

    /// `redis://127.0.0.1:port` of each node, as `session.redis_cluster_nodes` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProcess::url).collect()
    }

    /// The keys the node at `port` holds.
    pub async fn keys_on(&self, port: u16) -> Vec<String> {
        command(port, ::redis::cmd("KEYS").arg("*"))
            .await
            .expect("KEYS on a cluster node")
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.nodes {
            out.push_str(&format!("---- port {} ----\n{}\n", p.port, p.log_text()));
        }
        out
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
