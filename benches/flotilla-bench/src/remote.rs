//! `flotilla-remote-bench`: remoting between two OS processes on 127.0.0.1, against a raw tokio
//! TCP baseline measured in the same run.
//!
//! - **tell throughput**: one node sends N 100-byte messages to the other, which answers once it
//!   has counted all N; messages per second from the first send to that answer. Flotilla's
//!   sender keeps at most 2048 messages unacknowledged (the peer acknowledges every 512): user
//!   messages are at most once, and a sender that outruns the 3072-message outbound queue loses
//!   messages to dead letters, as in Akka. The raw baseline has TCP's own backpressure.
//! - **request-reply**: M sequential 100-byte requests, each answered by an echo; p50 and p99.
//!
//! Subjects: Flotilla remoting over TCP, Flotilla remoting over mutual TLS, and two references:
//! - the baseline — length-prefixed 100-byte frames over one tokio `TcpStream`, written and read
//!   through 64 KiB buffers (batched both ways) by a counting or echoing server;
//! - Erlang/OTP distribution between two `erl` nodes (Debian's `erlang-base`), with the same
//!   window, acknowledgements and echoes (`erlang/flotilla_dist_bench.erl`), over a private
//!   `epmd` on a free port.
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
    #[arg(long, default_value_t = 1_000_000)]
    messages: u32,
    /// Sequential request-reply rounds.
    #[arg(long, default_value_t = 20_000)]
    rounds: u32,
    /// Run as the peer process: `flotilla <port> [tls-dir]` or `raw <port>`.
    #[arg(long, num_args = 2..=3, value_names = ["KIND", "PORT", "TLS_DIR"])]
    peer: Vec<String>,
    /// Leave out the Erlang distribution comparison (when `erl` is not installed).
    #[arg(long)]
    skip_erlang: bool,
}

/// Both processes use mimalloc, as the `flotilla` binary does: remoting allocates on one thread
/// and frees on another for every message, which glibc's allocator serializes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: usize = 100;
/// Messages the throughput sender may have unacknowledged (below the outbound queue's 3072).
const WINDOW: u32 = 2048;
/// The peer acknowledges every this-many counted messages.
const ACK_EVERY: u64 = 512;

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

/// Default settings (two remoting threads), with or without TLS.
fn settings(tls: Option<TlsSettings>) -> RemoteSettings {
    RemoteSettings {
        tls,
        ..RemoteSettings::default()
    }
}

/// The Flotilla peer: a message with manifest "count" is counted, and every [`ACK_EVERY`] of them
/// acknowledged (user messages are at most once: a sender that outruns its outbound queue loses
/// messages, so the sender keeps at most [`WINDOW`] unacknowledged, as Akka's throughput
/// benchmarks do); "total" is answered with the count; anything else is echoed.
async fn flotilla_peer(port: u16, tls_dir: Option<String>) -> anyhow::Result<()> {
    let tls = tls_dir.map(|d| tls_settings(std::path::Path::new(&d), "peer"));
    let (node, mut inbound) =
        RemoteNode::start(&Address::remote("bench", "127.0.0.1", port)?, settings(tls))?;
    println!("ready");
    let mut counted: u64 = 0;
    while let Some(item) = inbound.recv().await {
        let Inbound::User { from, messages } = item else {
            continue;
        };
        for envelope in &messages {
            match envelope.manifest {
                "count" => {
                    counted += 1;
                    if counted.is_multiple_of(ACK_EVERY) {
                        let ack = UserEnvelopeRef {
                            manifest: "ack",
                            payload: &counted.to_be_bytes(),
                            ..envelope
                        };
                        node.send_user_ref(&from.address, ack)?;
                    }
                }
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
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn bench_flotilla(
    name: &'static str,
    opts: &Opts,
    tls: Option<&std::path::Path>,
) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let port_s = port.to_string();
    let mut args = vec!["flotilla", port_s.as_str()];
    let dir_s;
    if let Some(d) = tls {
        dir_s = d.display().to_string();
        args.push(&dir_s);
    }
    let _peer = spawn_peer(&args)?;
    let (node, mut inbound) = RemoteNode::start(
        &Address::remote("bench", "127.0.0.1", 0)?,
        settings(tls.map(|d| tls_settings(d, "client"))),
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
    // Warm up: associate.
    to.send_user_ref(env("echo", &[0; PAYLOAD]))?;
    reply().await?;

    let started = Instant::now();
    let mut acked: u32 = 0;
    for sent in 0..opts.messages {
        while sent - acked >= WINDOW {
            let ack = reply().await?;
            anyhow::ensure!(ack.manifest == "ack", "unexpected {}", ack.manifest);
            acked = u32::try_from(u64::from_be_bytes(ack.payload[..8].try_into()?))?;
        }
        to.send_user_ref(env("count", &[7; PAYLOAD]))?;
    }
    let total = u64::from(opts.messages).to_be_bytes();
    to.send_user_ref(UserEnvelopeRef {
        payload: &total,
        ..env("total", &[])
    })?;
    let done = loop {
        let r = reply().await?;
        if r.manifest != "ack" {
            break r;
        }
    };
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
    })
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if !opts.peer.is_empty() {
        let port: u16 = opts.peer[1].parse()?;
        return runtime.block_on(async {
            match opts.peer[0].as_str() {
                "flotilla" => flotilla_peer(port, opts.peer.get(2).cloned()).await,
                "raw" => raw_peer(port).await,
                other => anyhow::bail!("unknown peer kind {other}"),
            }
        });
    }
    let certs = tempfile::tempdir()?;
    make_certificates(certs.path())?;
    let mut figures = runtime.block_on(async {
        Ok::<_, anyhow::Error>(vec![
            bench_raw(&opts).await?,
            bench_flotilla("flotilla (TCP)", &opts, None).await?,
            bench_flotilla("flotilla (mutual TLS)", &opts, Some(certs.path())).await?,
        ])
    })?;
    let erlang = if opts.skip_erlang {
        None
    } else {
        let e = bench_erlang(&opts)?;
        figures.push(e);
        figures.last().map(|e| (e.throughput, e.p50))
    };
    let base = &figures[0];
    println!(
        "# Remoting between two processes on 127.0.0.1: {} x {PAYLOAD}-byte tells, {} sequential request-replies\n",
        opts.messages, opts.rounds
    );
    println!(
        "| subject | tell msgs/s | vs raw TCP | vs Erlang | rtt p50 | rtt p99 | p50 vs raw TCP | p50 vs Erlang |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for f in &figures {
        let (vs_erlang, p50_vs_erlang) = match erlang {
            Some((tput, p50)) => (
                format!("{:.2}x", f.throughput / tput),
                format!("{:.2}x", f.p50.as_secs_f64() / p50.as_secs_f64()),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {} | {:.0} | {:.2}x | {vs_erlang} | {:.1} µs | {:.1} µs | {:.2}x | {p50_vs_erlang} |",
            f.name,
            f.throughput,
            f.throughput / base.throughput,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.p50.as_secs_f64() / base.p50.as_secs_f64()
        );
    }
    Ok(())
}
