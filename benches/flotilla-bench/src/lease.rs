//! `flotilla-lease-bench`: what a lease costs on each backend, measured in one run on one machine
//! against the in-memory backend as the baseline.
//!
//! For each backend (each server started on 127.0.0.1 by the same harness the tests use):
//! - **acquire + release**: a [`Lease`](flotilla_lease::Lease) acquired and released through the
//!   holder, `--iterations` times in sequence; median and 99th percentile.
//! - **renewal**: one backend renewal of a held lease, `--iterations` times; median and p99. A
//!   holder pays this once per heartbeat interval per lease.
//! - **takeover after a crash**: a holder acquires with TTL `--ttl` and stops renewing; another
//!   owner tries every 50 ms. Reported: the time until it gets the lease, as a multiple of the TTL
//!   (1.00x is the ideal; below 1.00x would be a safety bug).
//!
//! Latencies are also given as a ratio to the in-memory backend's figure from the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use flotilla_core::LeaseSettings;
use flotilla_lease::backend::BackendReply;
use flotilla_lease::{
    AcquireOutcome, LeaseBackend, LeaseClient, LeaseName, MemoryBackend, OwnerId,
};
use flotilla_lease_azure::testing::AzuriteServer;
use flotilla_lease_azure::{AzureBackend, AzureSettings};
use flotilla_lease_etcd::testing::EtcdServer;
use flotilla_lease_etcd::{EtcdBackend, EtcdSettings};
use flotilla_lease_kubernetes::testing::FakeApiServer;
use flotilla_lease_kubernetes::{KubernetesBackend, KubernetesSettings};

#[derive(Parser, Debug)]
#[command(about = "Flotilla lease backends: acquire/release and renewal latency, crash takeover")]
struct Opts {
    /// Sequential operations per latency figure.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// TTL of the crash-takeover measurement (etcd rounds up to whole seconds, at least 2 s).
    #[arg(long, default_value = "3s", value_parser = humantime_duration)]
    ttl: Duration,
    /// Crash-takeover runs per backend (the median is reported).
    #[arg(long, default_value_t = 3)]
    takeovers: usize,
    /// Backends to measure (memory is always measured: it is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "etcd,azure,kubernetes")]
    backends: Vec<String>,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|e| format!("{s:?}: {e}"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("{s:?}: use a number of s or ms")),
    }
}

struct Figures {
    name: &'static str,
    acquire_release: (Duration, Duration),
    renew: (Duration, Duration),
    takeover: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or_default()
    };
    (at(0.5), at(0.99))
}

async fn measure(
    name: &'static str,
    backend: Arc<dyn LeaseBackend>,
    opts: &Opts,
) -> anyhow::Result<Figures> {
    // Lease names from the backend's first word: "azure (Azurite)" → "azure".
    let slug = name.split(' ').next().unwrap_or("backend");
    let settings = LeaseSettings::new(Duration::from_secs(30), Duration::from_secs(5))?;
    let client = LeaseClient::new(Arc::clone(&backend), settings, OwnerId::new("bench-a")?)?;
    let lease = client.lease(LeaseName::new(&format!("bench-{slug}"))?)?;
    let mut samples = Vec::with_capacity(opts.iterations);
    for _ in 0..opts.iterations {
        let started = Instant::now();
        let AcquireOutcome::Granted { .. } = lease.acquire(|_| {}).await else {
            anyhow::bail!("{name}: acquire was not granted");
        };
        lease.release().await;
        samples.push(started.elapsed());
    }
    let acquire_release = percentiles(samples);
    client.shutdown().await;

    let owner = OwnerId::new("bench-renew")?;
    let renewed = LeaseName::new(&format!("bench-renew-{slug}"))?;
    let BackendReply::Granted { token } = backend
        .acquire(&renewed, &owner, Duration::from_secs(30))
        .await
    else {
        anyhow::bail!("{name}: raw acquire was not granted");
    };
    let mut samples = Vec::with_capacity(opts.iterations);
    for _ in 0..opts.iterations {
        let started = Instant::now();
        let reply = backend
            .renew(&renewed, &owner, Duration::from_secs(30), token)
            .await;
        anyhow::ensure!(reply == BackendReply::Renewed, "{name}: renew: {reply:?}");
        samples.push(started.elapsed());
    }
    let renew = percentiles(samples);
    backend.release(&renewed, &owner, Some(token)).await;

    let mut takeovers = Vec::with_capacity(opts.takeovers);
    for run in 0..opts.takeovers {
        takeovers.push(takeover(slug, &*backend, opts.ttl, run).await?);
    }
    takeovers.sort_unstable();
    Ok(Figures {
        name,
        acquire_release,
        renew,
        takeover: takeovers[takeovers.len() / 2],
    })
}

/// A holder takes the lease and "crashes"; how long until another owner gets it?
async fn takeover(
    name: &str,
    backend: &dyn LeaseBackend,
    ttl: Duration,
    run: usize,
) -> anyhow::Result<Duration> {
    let lease = LeaseName::new(&format!("bench-crash-{name}-{run}"))?;
    let reply = backend
        .acquire(&lease, &OwnerId::new("crashed")?, ttl)
        .await;
    anyhow::ensure!(
        matches!(reply, BackendReply::Granted { .. }),
        "{name}: {reply:?}"
    );
    let crashed = Instant::now();
    let survivor = OwnerId::new("survivor")?;
    loop {
        if let BackendReply::Granted { .. } = backend.acquire(&lease, &survivor, ttl).await {
            return Ok(crashed.elapsed());
        }
        anyhow::ensure!(
            crashed.elapsed() < ttl * 4,
            "{name}: the crashed holder's lease never became free"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.2} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.3} ms", d.as_secs_f64() * 1e3)
    }
}

fn ratio(d: Duration, base: Duration) -> String {
    if base.is_zero() {
        return "-".into();
    }
    format!("{:.1}x", d.as_secs_f64() / base.as_secs_f64())
}

/// Prints one latency table: median, p99, and the median's ratio to the first (in-memory) row.
fn latency_table(title: &str, figures: &[Figures], pick: fn(&Figures) -> (Duration, Duration)) {
    let base = figures.first().map_or(Duration::ZERO, |f| pick(f).0);
    println!("{title}\n");
    println!("| backend | median | p99 | median vs memory |");
    println!("| --- | ---: | ---: | ---: |");
    for f in figures {
        let (median, p99) = pick(f);
        println!(
            "| {} | {} | {} | {} |",
            f.name,
            ms(median),
            ms(p99),
            ratio(median, base)
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    let mut figures = vec![measure("memory", Arc::new(MemoryBackend::new()), &opts).await?];
    // Servers stay up until the end of the run; each is killed by PID when dropped.
    let mut _etcd = None;
    let mut _azurite = None;
    let mut _kubernetes = None;
    for backend in &opts.backends {
        match backend.as_str() {
            "etcd" => {
                let server = EtcdServer::start().await.context("starting etcd")?;
                let b = EtcdBackend::connect(EtcdSettings::new([server.endpoint()])).await?;
                figures.push(measure("etcd", Arc::new(b), &opts).await?);
                _etcd = Some(server);
            }
            "azure" => {
                let server = AzuriteServer::start().await.context("starting Azurite")?;
                let b = AzureBackend::connect(AzureSettings {
                    connection_string: server.connection_string(),
                    ..AzureSettings::default()
                })
                .await?;
                figures.push(measure("azure (Azurite)", Arc::new(b), &opts).await?);
                _azurite = Some(server);
            }
            "kubernetes" => {
                let server = FakeApiServer::start().await?;
                let b = KubernetesBackend::connect(KubernetesSettings {
                    api_server: Some(server.url().to_owned()),
                    namespace: Some("bench".into()),
                    ..KubernetesSettings::default()
                })
                .await?;
                figures.push(measure("kubernetes (in-repo API server)", Arc::new(b), &opts).await?);
                _kubernetes = Some(server);
            }
            other => anyhow::bail!("unknown backend {other:?}: use etcd, azure, kubernetes"),
        }
    }
    println!(
        "# Lease backends: {} sequential operations per latency figure, takeover TTL {:?} (median of {})\n",
        opts.iterations, opts.ttl, opts.takeovers
    );
    latency_table("## acquire + release (through the holder)", &figures, |f| {
        f.acquire_release
    });
    latency_table("\n## renewal (one backend call)", &figures, |f| f.renew);
    println!("\n## takeover of a crashed holder's lease\n");
    println!("| backend | time until another owner holds it | vs TTL |");
    println!("| --- | ---: | ---: |");
    for f in &figures {
        println!(
            "| {} | {} | {:.2}x |",
            f.name,
            ms(f.takeover),
            f.takeover.as_secs_f64() / opts.ttl.as_secs_f64()
        );
    }
    Ok(())
}
