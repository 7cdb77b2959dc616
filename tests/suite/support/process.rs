//! authgate as deployed: the binary as its own process with its own config file, on fixed
//! loopback ports, ready when `/readyz` answers. The test can SIGKILL it (no graceful shutdown,
//! connections cut mid-check) and read its memory from `/proc/<pid>`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{free_port, merge_yaml};

pub struct AuthgateProcess {
    pub child: std::process::Child,
    pub grpc: SocketAddr,
    pub http_port: u16,
    dir: tempfile::TempDir,
}

impl AuthgateProcess {
    /// Starts `binary serve --config <yaml with listen ports added>`; panics with its log if it
    /// does not become ready.
    pub async fn start(binary: &Path, yaml: &str) -> AuthgateProcess {
        Self::start_with_config_and_env(binary, yaml, &[]).await
    }

    /// As [`Self::start`], with these environment variables too.
    pub async fn start_with_config_and_env(
        binary: &Path,
        yaml: &str,
        env: &[(&str, &str)],
    ) -> AuthgateProcess {
        let dir = tempfile::tempdir().unwrap();
        let (grpc_port, http_port) = (free_port(), free_port());
        let yaml = merge_yaml(
            yaml,
            &format!("listen: {{grpc: '127.0.0.1:{grpc_port}', http: '127.0.0.1:{http_port}'}}"),
        );
        let config = dir.path().join("authgate.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("authgate.log")).unwrap();
        let child = std::process::Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("AUTHGATE_CONFIG")
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        Self::ready(child, dir, grpc_port, http_port).await
    }

    /// Starts `binary serve` with no config file, only this environment (as a Deployment
    /// that sets variables and nothing else), on loopback ports it adds.
    pub async fn start_with_env(binary: &Path, env: &[(String, String)]) -> AuthgateProcess {
        let dir = tempfile::tempdir().unwrap();
        let (grpc_port, http_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("authgate.log")).unwrap();
        let child = std::process::Command::new(binary)
            .arg("serve")
            .env_remove("AUTHGATE_CONFIG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AUTHGATE_LISTEN__GRPC", format!("127.0.0.1:{grpc_port}"))
            .env("AUTHGATE_LISTEN__HTTP", format!("127.0.0.1:{http_port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        Self::ready(child, dir, grpc_port, http_port).await
    }

    /// Waits for `/readyz`; panics with the log if it never answers.
    async fn ready(
        mut child: std::process::Child,
        dir: tempfile::TempDir,
        grpc_port: u16,
        http_port: u16,
    ) -> AuthgateProcess {
        let ready = format!("http://127.0.0.1:{http_port}/readyz");
        for _ in 0..100 {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return AuthgateProcess {
                    child,
                    grpc: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
                    http_port,
                    dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "authgate did not become ready: {}",
            std::fs::read_to_string(dir.path().join("authgate.log")).unwrap_or_default()
        );
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("authgate.log")).unwrap_or_default()
    }
}

impl Drop for AuthgateProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
