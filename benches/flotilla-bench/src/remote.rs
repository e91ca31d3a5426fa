//! `flotilla-remote-bench`: remoting between two OS processes on 127.0.0.1, against a raw tokio
//! TCP baseline measured in the same run.
//!
//! - **tell throughput**: one node sends N 100-byte messages to the other, which answers once it
//!   has counted all N; messages per second from the first send to that answer. No subject
//!   acknowledges anything before that answer; each is held back by its transport's own flow
//!   control: the raw baseline by TCP's, Erlang by its busy distribution port, Flotilla by its
//!   outbound queue (`Outbound::send_user_ref_waiting` waits for room where
//!   `send_user_ref` would drop the message to dead letters).
//! - **request-reply**: M sequential 100-byte requests, each answered by an echo; p50 and p99.
//!
//! - **first message**: from a new node's first send to the peer's echo: two TCP connections,
//!   each with its (TLS and) Flotilla handshake, then one round trip — what authentication adds
//!   happens here, once per link.
//!
//! Subjects: Flotilla remoting without credentials (`insecure`), with the cluster secret
//! (`secret`: every connection's handshake proves it, both ways), over mutual TLS with the secret
//! (`tls`), and two references:
//! - the baseline — length-prefixed 100-byte frames over one tokio `TcpStream`, written and read
//!   through 64 KiB buffers (batched both ways) by a counting or echoing server;
//! - Erlang/OTP distribution between two `erl` nodes (Debian's `erlang-base`), with the same
//!   protocol (`erlang/flotilla_dist_bench.erl`), over a private `epmd` on a free port.
//!
//! Every subject runs `--repeat` times, the subjects taking turns (each round starting with the next), and the table gives the
//! median of each figure with the range of throughputs: on a shared machine one run of a
//! subject can be twice as fast as the next.
//!
//! The Flotilla and raw peers are this same binary, started as a second process (`--peer`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use flotilla_core::{Address, RemoteSettings, TlsSettings};
use flotilla_remote::{Inbound, RemoteNode};
use flotilla_wire::{UserEnvelope, UserEnvelopeRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(about = "Flotilla remoting between two processes, against raw TCP")]
struct Opts {
    /// Messages in the throughput run.
    #[arg(long, default_value_t = 5_000_000)]
    messages: u32,
    /// Sequential request-reply rounds.
    #[arg(long, default_value_t = 20_000)]
    rounds: u32,
    /// Run as the peer process: `flotilla <port> <insecure|secret|tls> [tls-dir]` (the secret
    /// in `FLOTILLA_BENCH_SECRET`) or `raw <port>`.
    #[arg(long, num_args = 2..=4, value_names = ["KIND", "PORT", "MODE", "TLS_DIR"])]
    peer: Vec<String>,
    /// Leave out the Erlang distribution comparison (when `erl` is not installed).
    #[arg(long)]
    skip_erlang: bool,
    /// Runs of every subject (taking turns); the table gives medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Runs one subject alone and prints each run's figures, without ratios (for profiling):
    /// `raw`, `insecure`, `secret`, `tls` or `erlang`.
    #[arg(long, value_name = "SUBJECT")]
    only: Option<String>,
}

/// Both processes use mimalloc, as the `flotilla` binary does: remoting allocates on one thread
/// and frees on another for every message, which glibc's allocator serializes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: usize = 100;

fn tls_settings(dir: &std::path::Path, name: &str) -> TlsSettings {
    TlsSettings {
        certificate: dir.join(format!("{name}.crt")),
        private_key: dir.join(format!("{name}.key")),
        trusted_ca: dir.join("ca.crt"),
        reload_interval: Duration::from_secs(3600),
    }
}

/// A CA and two node certificates for 127.0.0.1 in `dir`.
fn make_certificates(dir: &std::path::Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    for name in ["client", "peer"] {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &ca)?;
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
    }
    Ok(())
}

/// The environment variable that hands the run's secret to the peer process.
const SECRET_VAR: &str = "FLOTILLA_BENCH_SECRET";

/// This run's cluster secret: drawn by the bench, handed to its peers in their environment
/// (never on a command line).
fn run_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        std::env::var(SECRET_VAR).unwrap_or_else(|_| flotilla_remote::testing::random_secret())
    })
}

/// Default settings (two remoting threads): without credentials, with the run's secret, or with
/// the secret and mutual TLS.
fn settings(mode: &str, tls: Option<TlsSettings>) -> anyhow::Result<RemoteSettings> {
    let secret = || Ok::<_, anyhow::Error>(run_secret().to_owned());
    Ok(match mode {
        "insecure" => RemoteSettings {
            insecure: true,
            ..RemoteSettings::default()
        },
        "secret" => RemoteSettings {
            secret: Some(secret()?),
            ..RemoteSettings::default()
        },
        "tls" => RemoteSettings {
            secret: Some(secret()?),
            tls,
            ..RemoteSettings::default()
        },
        other => anyhow::bail!("unknown mode {other:?}: insecure, secret or tls"),
    })
}

/// The Flotilla peer: a message with manifest "count" is counted; "total" is answered with the
/// count; anything else is echoed.
async fn flotilla_peer(port: u16, mode: &str, tls_dir: Option<String>) -> anyhow::Result<()> {
    let tls = tls_dir.map(|d| tls_settings(std::path::Path::new(&d), "peer"));
    let (node, mut inbound) = RemoteNode::start(
        &Address::remote("bench", "127.0.0.1", port)?,
        settings(mode, tls)?,
    )?;
    println!("ready");
    let mut counted: u64 = 0;
    while let Some(item) = inbound.recv().await {
        let Inbound::User { from, messages } = item else {
            continue;
        };
        for envelope in &messages {
            match envelope.manifest {
                "count" => counted += 1,
                "total" => {
                    let want = u64::from_be_bytes(envelope.payload[..8].try_into()?);
                    // Everything before "total" on the same connection has arrived (FIFO).
                    anyhow::ensure!(counted == want, "counted {counted}, expected {want}");
                    let reply = UserEnvelopeRef {
                        manifest: "done",
                        payload: &counted.to_be_bytes(),
                        ..envelope
                    };
                    counted = 0;
                    node.send_user_ref(&from.address, reply)?;
                }
                _ => node.send_user_ref(&from.address, envelope)?,
            }
        }
    }
    Ok(())
}

/// The raw peer: frames are `u32 length | body`; a body of 100 bytes is counted, an 8-byte body
/// announces the total and is answered with the count, a 101-byte body is echoed.
async fn raw_peer(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let mut r = BufReader::with_capacity(64 * 1024, r);
            let mut w = BufWriter::new(w);
            let mut counted: u64 = 0;
            let mut body = vec![0u8; 1024];
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes(len) as usize;
                if r.read_exact(&mut body[..len]).await.is_err() {
                    return;
                }
                match len {
                    PAYLOAD => counted += 1,
                    8 => {
                        let _ = w.write_all(&8u32.to_be_bytes()).await;
                        let _ = w.write_all(&counted.to_be_bytes()).await;
                        let _ = w.flush().await;
                        counted = 0;
                    }
                    _ => {
                        let _ = w.write_all(&(len as u32).to_be_bytes()).await;
                        let _ = w.write_all(&body[..len]).await;
                        let _ = w.flush().await;
                    }
                }
            }
        });
    }
}

/// A child process, killed (by its PID) and reaped when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with its output piped and waits for it to print `ready`.
fn spawn_ready(command: &mut Command) -> anyhow::Result<Peer> {
    let mut child = Peer(command.stdout(Stdio::piped()).spawn()?);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().context("peer stdout")?),
        &mut line,
    )?;
    anyhow::ensure!(line.trim() == "ready", "the peer said {line:?}");
    Ok(child)
}

fn spawn_peer(args: &[&str]) -> anyhow::Result<Peer> {
    spawn_ready(
        Command::new(std::env::current_exe()?)
            .arg("--peer")
            .args(args)
            .env(SECRET_VAR, run_secret())
            .stderr(Stdio::inherit()),
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Figures {
    name: &'static str,
    throughput: f64,
    p50: Duration,
    p99: Duration,
    /// From a new node's first send to its answer (connections, handshakes, one round trip).
    first: Option<Duration>,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn bench_flotilla(
    name: &'static str,
    opts: &Opts,
    mode: &str,
    tls: Option<&std::path::Path>,
) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let port_s = port.to_string();
    let mut args = vec!["flotilla", port_s.as_str(), mode];
    let dir_s;
    if let Some(d) = tls {
        dir_s = d.display().to_string();
        args.push(&dir_s);
    }
    let _peer = spawn_peer(&args)?;
    let (node, mut inbound) = RemoteNode::start(
        &Address::remote("bench", "127.0.0.1", 0)?,
        settings(mode, tls.map(|d| tls_settings(d, "client")))?,
    )?;
    let to = node.outbound(&Address::remote("bench", "127.0.0.1", port)?)?;
    // Borrowed envelopes: the caller allocates nothing per message.
    let env = |manifest: &'static str, payload: &'static [u8]| UserEnvelopeRef {
        recipient: "/user/bench",
        sender: None,
        manifest,
        payload,
    };
    let mut reply = async || -> anyhow::Result<UserEnvelope> {
        loop {
            match inbound.recv_one().await.context("remoting stopped")? {
                Inbound::User { messages, .. } => {
                    return messages
                        .first()
                        .map(UserEnvelopeRef::to_envelope)
                        .context("an empty batch");
                }
                Inbound::DeadLetter { reason, .. } => anyhow::bail!("dead letter: {reason}"),
                _ => {}
            }
        }
    };
    // Warm up: associate (both connections and their handshakes), timed.
    let first = Instant::now();
    to.send_user_ref(env("echo", &[0; PAYLOAD]))?;
    reply().await?;
    let first = first.elapsed();

    let started = Instant::now();
    for _ in 0..opts.messages {
        // Waits while the outbound queue is full rather than losing the message.
        to.send_user_ref_waiting(env("count", &[7; PAYLOAD]))
            .await?;
    }
    let total = u64::from(opts.messages).to_be_bytes();
    to.send_user_ref_waiting(UserEnvelopeRef {
        payload: &total,
        ..env("total", &[])
    })
    .await?;
    let done = reply().await?;
    let took = started.elapsed();
    anyhow::ensure!(done.manifest == "done", "unexpected {}", done.manifest);

    let mut rtts = Vec::with_capacity(opts.rounds as usize);
    for _ in 0..opts.rounds {
        let t = Instant::now();
        to.send_user_ref(env("echo", &[1; PAYLOAD]))?;
        reply().await?;
        rtts.push(t.elapsed());
    }
    rtts.sort_unstable();
    Ok(Figures {
        name,
        throughput: f64::from(opts.messages) / took.as_secs_f64(),
        p50: percentile(&rtts, 0.5),
        p99: percentile(&rtts, 0.99),
        first: Some(first),
    })
}

async fn bench_raw(opts: &Opts) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let _peer = spawn_peer(&["raw", &port.to_string()])?;
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut r, w) = stream.into_split();
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let body = [7u8; PAYLOAD];
    // Warm up the connection and the peer, as the Flotilla subjects do.
    w.write_all(&((PAYLOAD + 1) as u32).to_be_bytes()).await?;
    w.write_all(&[1u8; PAYLOAD + 1]).await?;
    w.flush().await?;
    r.read_exact(&mut [0u8; PAYLOAD + 1 + 4]).await?;
    let started = Instant::now();
    for _ in 0..opts.messages {
        w.write_all(&(PAYLOAD as u32).to_be_bytes()).await?;
        w.write_all(&body).await?;
    }
    w.write_all(&8u32.to_be_bytes()).await?;
    w.write_all(&u64::from(opts.messages).to_be_bytes()).await?;
    w.flush().await?;
    let mut answer = [0u8; 12];
    r.read_exact(&mut answer).await?;
    let took = started.elapsed();
    let mut rtts = Vec::with_capacity(opts.rounds as usize);
    let echo = [1u8; PAYLOAD + 1];
    let mut back = [0u8; PAYLOAD + 1 + 4];
    for _ in 0..opts.rounds {
        let t = Instant::now();
        w.write_all(&((PAYLOAD + 1) as u32).to_be_bytes()).await?;
        w.write_all(&echo).await?;
        w.flush().await?;
        r.read_exact(&mut back).await?;
        rtts.push(t.elapsed());
    }
    rtts.sort_unstable();
    Ok(Figures {
        name: "raw tokio TCP (baseline)",
        throughput: f64::from(opts.messages) / took.as_secs_f64(),
        p50: percentile(&rtts, 0.5),
        p99: percentile(&rtts, 0.99),
        first: None,
    })
}

const ERLANG_SOURCE: &str = include_str!("../erlang/flotilla_dist_bench.erl");

/// Erlang/OTP distribution: compiles the benchmark module, starts a private `epmd`, the peer
/// node and the driver node, and reads the driver's `result` line.
fn bench_erlang(opts: &Opts) -> anyhow::Result<Figures> {
    let missing = "Erlang/OTP is needed for the comparison (apt-get install erlang-base), or pass --skip-erlang";
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("flotilla_dist_bench.erl");
    std::fs::write(&source, ERLANG_SOURCE)?;
    let status = Command::new("erlc")
        .arg("-o")
        .arg(dir.path())
        .arg(&source)
        .status()
        .context(missing)?;
    anyhow::ensure!(status.success(), "erlc failed on the benchmark module");

    let epmd_port = free_port()?;
    let _epmd = Peer(
        Command::new("epmd")
            .args(["-port", &epmd_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(missing)?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", epmd_port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "epmd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let erl = |name: &str| {
        let mut c = Command::new("erl");
        c.env("ERL_EPMD_PORT", epmd_port.to_string())
            .args([
                "-noshell",
                "-start_epmd",
                "false",
                "-setcookie",
                "flotilla_bench",
            ])
            .args(["-name", name, "-pa"])
            .arg(dir.path());
        c
    };
    let tag = std::process::id();
    let peer_name = format!("peer{tag}@127.0.0.1");
    let _peer = spawn_ready(erl(&peer_name).args(["-run", "flotilla_dist_bench", "peer"]))?;
    let out = erl(&format!("driver{tag}@127.0.0.1"))
        .args(["-run", "flotilla_dist_bench", "driver", &peer_name])
        .args([opts.messages.to_string(), opts.rounds.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let result = text
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .with_context(|| format!("the Erlang driver printed no result: {text}"))?;
    let f: Vec<u64> = result
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [n, nanos, p50, p99] = f[..] else {
        anyhow::bail!("unexpected result line {result:?}");
    };
    Ok(Figures {
        name: "Erlang/OTP distribution",
        throughput: n as f64 / (nanos as f64 / 1e9),
        p50: Duration::from_nanos(p50),
        p99: Duration::from_nanos(p99),
        first: None,
    })
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    // Remoting's warnings (a refused handshake, a lost link) on stderr, both processes';
    // RUST_LOG for more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if !opts.peer.is_empty() {
        let port: u16 = opts.peer[1].parse()?;
        return runtime.block_on(async {
            match opts.peer[0].as_str() {
                "flotilla" => {
                    let mode = opts.peer.get(2).context("no mode")?;
                    flotilla_peer(port, mode, opts.peer.get(3).cloned()).await
                }
                "raw" => raw_peer(port).await,
                other => anyhow::bail!("unknown peer kind {other}"),
            }
        });
    }
    let certs = tempfile::tempdir()?;
    make_certificates(certs.path())?;
    let all = ["raw", "insecure", "secret", "tls", "erlang"];
    let subjects: Vec<&str> = match &opts.only {
        Some(one) => {
            anyhow::ensure!(
                all.contains(&one.as_str()),
                "unknown subject {one:?}: raw, insecure, secret, tls or erlang"
            );
            vec![one.as_str()]
        }
        None if opts.skip_erlang => all[..4].to_vec(),
        None => all.to_vec(),
    };
    let run = |subject: &str| -> anyhow::Result<Figures> {
        match subject {
            "raw" => runtime.block_on(bench_raw(&opts)),
            "insecure" => runtime.block_on(bench_flotilla(
                "flotilla (TCP, insecure)",
                &opts,
                "insecure",
                None,
            )),
            "secret" => runtime.block_on(bench_flotilla(
                "flotilla (TCP, secret)",
                &opts,
                "secret",
                None,
            )),
            "tls" => runtime.block_on(bench_flotilla(
                "flotilla (mutual TLS, secret)",
                &opts,
                "tls",
                Some(certs.path()),
            )),
            _ => bench_erlang(&opts),
        }
    };
    let mut runs: Vec<Vec<Figures>> = subjects.iter().map(|_| Vec::new()).collect();
    for round in 1..=opts.repeat.max(1) {
        // Each round starts with the next subject, so that none always runs first or last (a
        // subject's place in the round showed as a bias of 10% on this machine).
        let mut order: Vec<usize> = (0..subjects.len()).collect();
        order.rotate_left((round - 1) % subjects.len().max(1));
        for i in order {
            let (subject, figures) = (subjects[i], &mut runs[i]);
            let f = run(subject)?;
            eprintln!(
                "run {round}/{}: {}: {:.0} msgs/s, rtt p50 {:.1} µs, p99 {:.1} µs",
                opts.repeat.max(1),
                f.name,
                f.throughput,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6
            );
            figures.push(f);
        }
    }
    if opts.only.is_some() {
        return Ok(());
    }
    let medians: Vec<Median> = runs.iter().map(|r| Median::of(r)).collect();
    let base = &medians[0];
    let erlang = subjects
        .iter()
        .position(|s| *s == "erlang")
        .map(|i| (medians[i].throughput, medians[i].p50));
    let insecure = subjects
        .iter()
        .position(|s| *s == "insecure")
        .map(|i| (medians[i].throughput, medians[i].p50));
    println!(
        "# Remoting between two processes on 127.0.0.1: {} x {PAYLOAD}-byte tells, {} sequential request-replies; medians of {} runs\n",
        opts.messages,
        opts.rounds,
        opts.repeat.max(1)
    );
    println!(
        "| subject | tell msgs/s | (range) | vs raw TCP | vs insecure | vs Erlang | rtt p50 | rtt p99 | p50 vs raw TCP | p50 vs insecure | p50 vs Erlang | first message |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for f in &medians {
        let (vs_erlang, p50_vs_erlang) = match erlang {
            Some((tput, p50)) => (
                format!("{:.2}x", f.throughput / tput),
                format!("{:.2}x", f.p50.as_secs_f64() / p50.as_secs_f64()),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let (vs_insecure, p50_vs_insecure) = match insecure {
            Some((tput, p50)) => (
                format!("{:.3}x", f.throughput / tput),
                format!("{:.3}x", f.p50.as_secs_f64() / p50.as_secs_f64()),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let first = f.first.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
        );
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.2}x | {vs_insecure} | {vs_erlang} | {:.1} µs | {:.1} µs | {:.2}x | {p50_vs_insecure} | {p50_vs_erlang} | {first} |",
            f.name,
            f.throughput,
            f.throughput_min,
            f.throughput_max,
            f.throughput / base.throughput,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.p50.as_secs_f64() / base.p50.as_secs_f64()
        );
    }
    Ok(())
}

/// The median of each figure over a subject's runs.
struct Median {
    name: &'static str,
    throughput: f64,
    throughput_min: f64,
    throughput_max: f64,
    p50: Duration,
    p99: Duration,
    first: Option<Duration>,
}

impl Median {
    fn of(runs: &[Figures]) -> Self {
        fn mid<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            v[v.len() / 2]
        }
        let tputs: Vec<f64> = runs.iter().map(|f| f.throughput).collect();
        Self {
            name: runs[0].name,
            throughput: mid(tputs.clone()),
            throughput_min: tputs.iter().copied().fold(f64::INFINITY, f64::min),
            throughput_max: tputs.iter().copied().fold(0.0, f64::max),
            p50: mid(runs.iter().map(|f| f.p50).collect()),
            p99: mid(runs.iter().map(|f| f.p99).collect()),
            first: runs
                .iter()
                .map(|f| f.first)
                .collect::<Option<Vec<_>>>()
                .map(mid),
        }
    }
}
