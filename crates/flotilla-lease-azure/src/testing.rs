//! Azurite on 127.0.0.1 for tests and benchmarks (feature `testing`).
//!
//! Each [`AzuriteServer`] is Azurite's blob service (npm `azurite`, installed under the
//! repository's `.cache/azurite` by `scripts/install-test-deps.sh`, or `$AZURITE_BIN`) on a free
//! port, in memory, without telemetry. It can be paused (SIGSTOP) and resumed, and it is killed by
//! PID when dropped — also when a test panics.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::auth::{DEV_ACCOUNT, DEV_KEY};

/// A running Azurite blob service.
#[derive(Debug)]
pub struct AzuriteServer {
    child: Option<Child>,
    port: u16,
    workdir: PathBuf,
}

fn azurite_bin() -> PathBuf {
    std::env::var_os("AZURITE_BIN").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/azurite/node_modules/.bin/azurite-blob")
        },
        PathBuf::from,
    )
}

impl AzuriteServer {
    /// Starts Azurite and waits until it answers.
    pub async fn start() -> std::io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let workdir =
            std::env::temp_dir().join(format!("flotilla-azurite-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&workdir)?;
        let bin = azurite_bin();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .args(["--inMemoryPersistence", "--disableTelemetry", "--silent"])
            .current_dir(&workdir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}); run scripts/install-test-deps.sh",
                        bin.display()
                    ),
                )
            })?;
        let mut server = Self {
            child: Some(child),
            port,
            workdir,
        };
        server.wait_ready(Duration::from_secs(30)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, within: Duration) -> std::io::Result<()> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(std::io::Error::other(format!("azurite exited: {status}")));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(std::io::Error::other(format!(
            "azurite did not listen within {within:?}"
        )))
    }

    /// The blob endpoint, `http://127.0.0.1:<port>/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    /// A connection string for the well-known development account.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};\
             BlobEndpoint={};",
            self.blob_endpoint()
        )
    }

    /// A connection string with an account SAS token of the development account (blob
    /// service; service, container and object; read, write, delete, list, add, create and
    /// update; valid until 2099), signed with its well-known key, as the Azure portal would
    /// make one.
    pub fn sas_connection_string(&self) -> String {
        format!(
            "BlobEndpoint={};SharedAccessSignature={}",
            self.blob_endpoint(),
            account_sas(DEV_ACCOUNT, DEV_KEY)
        )
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

/// An account SAS token (the query string, without `?`) signed with `key_base64`, as "Create an
/// account SAS" of the Azure Storage REST API describes it for service versions from 2020-12-06.
fn account_sas(account: &str, key_base64: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use hmac::{Hmac, Mac};
    let (permissions, services, resource_types) = ("rwdlacu", "b", "sco");
    let expiry = "2099-01-01T00:00:00Z";
    // Account, permissions, services, resource types, start, expiry, IP range, protocol,
    // version, encryption scope, and a final newline.
    let to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n\n{expiry}\n\n\n{}\n\n",
        crate::API_VERSION
    );
    let key = BASE64.decode(key_base64).unwrap_or_default();
    #[allow(clippy::expect_used)] // reason: HMAC accepts keys of any length; this cannot fail
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    let encode = |s: &str| {
        s.replace('%', "%25")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
            .replace(':', "%3A")
    };
    format!(
        "sv={}&ss={services}&srt={resource_types}&sp={permissions}&se={}&sig={}",
        crate::API_VERSION,
        encode(expiry),
        encode(&signature)
    )
}

/// SIGSTOP and SIGCONT.
impl flotilla_lease::testing::Pausable for AzuriteServer {
    fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        self.signal(Signal::SIGCONT);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// Gives `lease` to `owner` on the service side, as another cluster would: overwrites the
/// record unconditionally with a higher token.
pub fn take_over<'a>(
    backend: &'a crate::AzureBackend,
    _server: &'a AzuriteServer,
    lease: &'a flotilla_lease::LeaseName,
    owner: &'a str,
    ttl: Duration,
) -> flotilla_lease::backend::BoxFuture<'a, Result<(), String>> {
    Box::pin(take_over_now(backend, lease, owner, ttl))
}

async fn take_over_now(
    backend: &crate::AzureBackend,
    lease: &flotilla_lease::LeaseName,
    owner: &str,
    ttl: Duration,
) -> Result<(), String> {
    let token = backend
        .read(lease)
        .await
        .map_err(|crate::Failure(e)| e)?
        .map_or(1, |r| r.record.token + 1);
    let record = crate::Record {
        owner: owner.to_owned(),
        token,
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        acquired_at_unix_ms: 0,
    };
    let body = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    let response = backend
        .send(
            reqwest::Method::PUT,
            Some(lease.as_str()),
            &[],
            &[("content-type", "application/json")],
            Some(body),
        )
        .await
        .map_err(|crate::Failure(e)| e)?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("take-over write answered {}", response.status()))
    }
}
