//! A real etcd server on 127.0.0.1 for tests and benchmarks (feature `testing`).
//!
//! Each [`EtcdServer`] is its own single-member cluster: `etcd` from the PATH (Debian's
//! `etcd-server`), free ports, a temporary data directory. It can serve TLS (with certificates
//! it makes itself), be paused (SIGSTOP), resumed and restarted with its data, and it is killed
//! by PID when dropped — also when a test panics.

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
    options: ServerOptions,
    /// The certificate files, when it serves TLS.
    tls: Option<crate::EtcdTls>,
}

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Hosts it also listens on for clients, beside 127.0.0.1 (addresses of this machine, such as
    /// the host end of a network namespace's link), on the same port.
    pub also_on: Vec<std::net::IpAddr>,
    /// Serve clients over TLS, with a certificate authority, a server certificate for
    /// 127.0.0.1 and a client certificate made for the occasion.
    pub tls: bool,
    /// With `tls`: require clients to present a certificate the authority signed
    /// (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// More command-line arguments for `etcd`, such as `--auth-token-ttl=1`.
    pub args: Vec<String>,
}

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate into `dir`.
fn make_certificates(dir: &std::path::Path) -> Result<crate::EtcdTls, ServerError> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let bad = |e: rcgen::Error| std::io::Error::other(format!("making certificates: {e}"));
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(bad)?).map_err(bad)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    for (name, subject) in [("server", "127.0.0.1"), ("client", "flotilla")] {
        let key = KeyPair::generate().map_err(bad)?;
        let cert = CertificateParams::new(vec![subject.to_owned()])
            .map_err(bad)?
            .signed_by(&key, &ca)
            .map_err(bad)?;
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem())?;
    }
    Ok(crate::EtcdTls {
        ca_file: Some(dir.join("ca.pem")),
        cert_file: Some(dir.join("client.pem")),
        key_file: Some(dir.join("client-key.pem")),
        server_name: None,
    })
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
        Self::start_with(ServerOptions::default()).await
    }

    /// As [`EtcdServer::start`], also listening for clients on `hosts` (addresses of this
    /// machine, such as the host end of a network namespace's link), on the same port.
    pub async fn start_also_on(hosts: Vec<std::net::IpAddr>) -> Result<Self, ServerError> {
        Self::start_with(ServerOptions {
            also_on: hosts,
            ..ServerOptions::default()
        })
        .await
    }

    /// Starts a server run as `options` say and waits until it answers.
    pub async fn start_with(options: ServerOptions) -> Result<Self, ServerError> {
        let data = tempfile::Builder::new()
            .prefix("flotilla-etcd-")
            .tempdir()?;
        let tls = if options.tls {
            Some(make_certificates(data.path())?)
        } else {
            None
        };
        let mut server = Self {
            child: None,
            data,
            client_port: free_port()?,
            peer_port: free_port()?,
            options,
            tls,
        };
        server.spawn().await?;
        Ok(server)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client URL, `http://127.0.0.1:<port>` (`https://` when it serves TLS).
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    /// The client URL at `host` (127.0.0.1 or one of the hosts given to
    /// [`EtcdServer::start_also_on`]).
    pub fn endpoint_at(&self, host: std::net::IpAddr) -> String {
        format!("{}://{host}:{}", self.scheme(), self.client_port)
    }

    /// The files a client needs for this server's TLS (the authority, and a client certificate
    /// it signed), when it serves TLS.
    pub fn client_tls(&self) -> Option<&crate::EtcdTls> {
        self.tls.as_ref()
    }

    /// Client settings for this server: its endpoint, and its TLS files when it serves TLS.
    pub fn client_settings(&self) -> crate::EtcdSettings {
        crate::EtcdSettings {
            tls: self.tls.clone(),
            ..crate::EtcdSettings::new([self.endpoint()])
        }
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
            .chain(self.options.also_on.iter().map(|h| self.endpoint_at(*h)))
            .collect();
        let clients = clients.join(",");
        let mut command = Command::new(&bin);
        if self.tls.is_some() {
            let dir = self.data.path();
            command
                .arg(format!("--cert-file={}", dir.join("server.pem").display()))
                .arg(format!(
                    "--key-file={}",
                    dir.join("server-key.pem").display()
                ));
            // etcd asks every client for a certificate as soon as it has a trusted authority
            // for them, with or without --client-cert-auth: both, or neither.
            if self.options.client_cert_auth {
                command
                    .arg(format!(
                        "--trusted-ca-file={}",
                        dir.join("ca.pem").display()
                    ))
                    .arg("--client-cert-auth");
            }
        }
        let child = command
            .args(&self.options.args)
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
            let settings = crate::EtcdSettings {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(1),
                ..self.client_settings()
            };
            match crate::Client::connect(&settings).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
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

    /// Turns authentication on, with `user` (password `password`) as root: from then on every
    /// client must authenticate.
    pub async fn enable_auth(&self, user: &str, password: &str) -> Result<(), crate::EtcdError> {
        use crate::api::etcdserverpb::{
            AuthEnableRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
            auth_client::AuthClient,
        };
        let client = crate::Client::connect(&self.client_settings()).await?;
        let mut auth = AuthClient::new(client.channel());
        let refused = |s: tonic::Status| crate::EtcdError::Refused {
            code: s.code(),
            message: s.message().to_owned(),
        };
        auth.user_add(AuthUserAddRequest {
            name: user.into(),
            password: password.into(),
            ..AuthUserAddRequest::default()
        })
        .await
        .map_err(refused)?;
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: user.into(),
            role: "root".into(),
        })
        .await
        .map_err(refused)?;
        auth.auth_enable(AuthEnableRequest {})
            .await
            .map_err(refused)?;
        Ok(())
    }

    /// Freezes the server (SIGSTOP): its connections stay open, requests hang.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
