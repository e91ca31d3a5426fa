//! A real etcd server on 127.0.0.1 for tests and benchmarks (feature `testing`).
//!
//! Each [`EtcdServer`] is its own single-member cluster: `etcd` from the PATH (Debian's
//! `etcd-server`), free ports, a temporary data directory. It can be paused (SIGSTOP), resumed
//! and restarted with its data, and it is killed by PID when dropped — also when a test panics.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running etcd server.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Hosts it also listens on for clients, beside 127.0.0.1.
    also_on: Vec<std::net::IpAddr>,
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Something on the way failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `etcd` did not answer in time.
    #[error("etcd did not become ready within {0:?}: {1}")]
    NotReady(Duration, String),
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts a server and waits until it answers. Needs `etcd` on the PATH (or in `$ETCD_BIN`).
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_also_on(Vec::new()).await
    }

    /// As [`EtcdServer::start`], also listening for clients on `hosts` (addresses of this
    /// machine, such as the host end of a network namespace's link), on the same port.
    pub async fn start_also_on(hosts: Vec<std::net::IpAddr>) -> Result<Self, ServerError> {
        let mut server = Self {
            child: None,
            data: tempfile::Builder::new()
                .prefix("flotilla-etcd-")
                .tempdir()?,
            client_port: free_port()?,
            peer_port: free_port()?,
            also_on: hosts,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client URL at `host` (127.0.0.1 or one of the hosts given to
    /// [`EtcdServer::start_also_on`]).
    pub fn endpoint_at(&self, host: std::net::IpAddr) -> String {
        format!("http://{host}:{}", self.client_port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    async fn spawn(&mut self) -> Result<(), ServerError> {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let clients: Vec<String> = std::iter::once(self.endpoint())
            .chain(self.also_on.iter().map(|h| self.endpoint_at(*h)))
            .collect();
        let clients = clients.join(",");
        let child = Command::new(&bin)
            .arg("--name=flotilla-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={clients}"))
            .arg(format!("--advertise-client-urls={clients}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=flotilla-test={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run {bin:?}: {e}")))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20)).await
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), ServerError> {
        let started = Instant::now();
        let mut last = String::from("no attempt");
        while started.elapsed() < within {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(ServerError::NotReady(
                    within,
                    format!("etcd exited: {status}"),
                ));
            }
            let connect = etcd_client::Client::connect([self.endpoint()], None);
            match tokio::time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(mut client)) => match client.status().await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                },
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "connect timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ServerError::NotReady(within, last))
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.resume_child(&child);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn resume_child(&self, child: &Child) {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }

    /// Starts the server again on the same ports and data (after [`EtcdServer::kill`]).
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.spawn().await
    }
}

/// SIGSTOP and SIGCONT.
impl flotilla_lease::testing::Pausable for EtcdServer {
    fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Gives `lease` to `owner` on the server side, as another cluster or an operator would:
/// deletes the key and creates it again for `owner`, on a fresh etcd lease of `ttl`.
pub fn take_over<'a>(
    backend: &'a crate::EtcdBackend,
    _server: &'a EtcdServer,
    lease: &'a flotilla_lease::LeaseName,
    owner: &'a str,
    ttl: Duration,
) -> flotilla_lease::backend::BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        take_over_now(backend, lease, owner, ttl)
            .await
            .map_err(|e| e.to_string())
    })
}

async fn take_over_now(
    backend: &crate::EtcdBackend,
    lease: &flotilla_lease::LeaseName,
    owner: &str,
    ttl: Duration,
) -> Result<(), etcd_client::Error> {
    let mut client = backend.client.clone();
    let key = backend.key(lease);
    client.delete(key.clone(), None).await?;
    let grant = client.lease_grant(crate::ttl_secs(ttl), None).await?.id();
    let value = serde_json::json!({ "owner": owner, "acquired_at_unix_ms": 0 }).to_string();
    client
        .put(
            key,
            value,
            Some(etcd_client::PutOptions::new().with_lease(grant)),
        )
        .await?;
    Ok(())
}
