//! A hostile client against real `flotilla node` processes with default security settings (a
//! cluster secret; mutual TLS in the certificate scenario): each attack must leave every node
//! with its identity and its cluster — no member downed, removed, quarantined or unreachable, no
//! node stopped.
//!
//! The client knows what an attacker on the network could know (the nodes' addresses, even their
//! UIDs) but not the cluster secret or a certificate for the nodes' host. Every process is started
//! and ended here, by PID; every wait is bounded.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::time::Duration;

use flotilla_cli::node::NodeProcess;
use flotilla_core::{Address, UniqueAddress};
use flotilla_remote::handshake::{Opening, decoder, initiate};
use flotilla_remote::io::read_frame;
use flotilla_wire::handshake::{Challenge, Claim, HandshakeReply, Hello};
use flotilla_wire::{FrameDecoder, HandshakeRefusal, Kind, Lane, QuarantineNotice, WireAddress};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(60);

/// Lines a node prints when something happened to a member or to itself.
const HARM: [&str; 7] = [
    "event MemberDowned",
    "event MemberRemoved",
    "event MemberLeft",
    "event MemberExited",
    "event UnreachableMember",
    "quarantined ",
    "shutdown ",
];

struct Cluster {
    nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// Two nodes, both Up, started with `extra` arguments.
    fn start(extra: &[&str]) -> Self {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
        let first = NodeProcess::start_fast(binary, "procs", None, extra, LIMIT)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let seed = first.address().to_owned();
        let second = NodeProcess::start_fast(binary, "procs", Some(&seed), extra, LIMIT)
            .unwrap_or_else(|e| panic!("{e:#}"));
        Self::up(vec![first, second])
    }

    /// `nodes`, once each has seen every one Up.
    fn up(mut nodes: Vec<NodeProcess>) -> Self {
        let uniques: Vec<String> = nodes.iter().map(|n| n.unique().to_owned()).collect();
        for node in &mut nodes {
            for u in &uniques {
                let want = format!("event MemberUp {u}");
                if let Err(e) = node.wait_for(LIMIT, |l| l == want) {
                    panic!("{e:#}");
                }
            }
        }
        Self { nodes }
    }

    fn unique(&self, i: usize) -> UniqueAddress {
        let text = self.nodes[i].unique();
        let (address, uid) = text.rsplit_once('#').unwrap();
        UniqueAddress {
            address: address.parse().unwrap(),
            uid: uid.parse().unwrap(),
        }
    }

    fn port(&self, i: usize) -> u16 {
        self.unique(i).address.port().unwrap()
    }

    /// Waits `settle` (longer than the fast failure detection and downing), then checks that
    /// every node still runs as the incarnation it started as and saw no harm.
    fn unharmed(&mut self, settle: Duration, attack: &str) {
        std::thread::sleep(settle);
        for node in &mut self.nodes {
            assert!(
                !node.has_exited(),
                "{attack}: node {} stopped",
                node.unique()
            );
            let unique = node.unique().to_owned();
            for (_, line) in node.lines() {
                assert!(
                    !HARM.iter().any(|h| line.starts_with(h)),
                    "{attack}: node {unique} printed {line:?}"
                );
            }
        }
    }
}

fn frame<T: serde::Serialize>(kind: Kind, pdu: &T) -> Vec<u8> {
    let mut out = Vec::new();
    flotilla_wire::pdu::encode(kind, pdu, 1 << 16, &mut out).unwrap();
    out
}

fn wire(a: &Address) -> WireAddress {
    flotilla_remote::convert::to_wire(a).unwrap()
}

/// Writes `bytes`, then reads what the node answers until it closes (or 5 s pass).
async fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> Vec<flotilla_wire::Frame> {
    let _ = stream.write_all(bytes).await;
    let mut frames = Vec::new();
    let mut d = FrameDecoder::new(1 << 16);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(f) = read_frame(stream, &mut d).await {
            frames.push(f);
        }
    })
    .await;
    frames
}

/// The old attack: read a member's UID from the node's handshake answer, claim that member's
/// address and UID — or its address with a new UID, as a restarted member would — and send a
/// quarantine notice and a Join. Without the secret the node answers with a nonce and a proof
/// that name no one, refuses the claim, and takes nothing that follows.
#[test]
fn forged_claims_quarantine_notices_and_joins_change_nothing() {
    let mut cluster = Cluster::start(&[]);
    let (a, b) = (cluster.unique(0), cluster.unique(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for claimed_uid in [b.uid, b.uid ^ 1] {
            let mut s = TcpStream::connect(("127.0.0.1", cluster.port(0)))
                .await
                .unwrap();
            s.write_all(&frame(Kind::Handshake, &Hello::new(rand::random())))
                .await
                .unwrap();
            let mut d = FrameDecoder::new(1 << 16);
            let answer = read_frame(&mut s, &mut d).await.unwrap();
            // Nothing about the node in its answer to a stranger.
            let uid = postcard::to_stdvec(&a.uid).unwrap();
            assert!(!answer.body.windows(uid.len()).any(|w| w == uid));
            assert!(!answer.body.windows(5).any(|w| w == b"procs"));
            let challenge: Challenge =
                flotilla_wire::pdu::decode(answer.kind, &answer.body).unwrap();
            assert!(matches!(
                challenge,
                Challenge::Challenge { proof: Some(_), .. }
            ));
            // A claim to be b (or b restarted) with a made-up proof, then what the old attack sent.
            let claim = Claim {
                from: flotilla_remote::convert::to_wire_unique(&UniqueAddress {
                    address: b.address.clone(),
                    uid: claimed_uid,
                })
                .unwrap(),
                to: wire(&a.address),
                lane: Lane::Control,
                link: 1,
                proof: Some(rand::random()),
            };
            let mut bytes = frame(Kind::Handshake, &claim);
            bytes.extend(frame(
                Kind::QuarantineNotice,
                &QuarantineNotice {
                    from: claim.from.clone(),
                    to_uid: a.uid,
                    reason: "forged".into(),
                },
            ));
            let join = flotilla_wire::ClusterPdu::InitJoin {
                from: claim.from.clone(),
            };
            let mut cluster_frame = Vec::new();
            flotilla_wire::frame::encode(
                Kind::Cluster,
                &flotilla_wire::encode_cluster(&join).unwrap(),
                1 << 16,
                &mut cluster_frame,
            )
            .unwrap();
            bytes.extend(cluster_frame);
            let answers = exchange(&mut s, &bytes).await;
            let reply: HandshakeReply =
                flotilla_wire::pdu::decode(answers[0].kind, &answers[0].body).unwrap();
            assert_eq!(
                reply,
                HandshakeReply::Refused(HandshakeRefusal::WrongSecret)
            );
            assert_eq!(answers.len(), 1, "then the connection closed");
        }
        // The same frames without any handshake: not a Flotilla peer.
        let mut s = TcpStream::connect(("127.0.0.1", cluster.port(1)))
            .await
            .unwrap();
        let notice = QuarantineNotice {
            from: flotilla_remote::convert::to_wire_unique(&a).unwrap(),
            to_uid: b.uid,
            reason: "forged".into(),
        };
        let answers = exchange(&mut s, &frame(Kind::QuarantineNotice, &notice)).await;
        assert!(answers.len() <= 1, "{answers:?}");
    });
    cluster.unharmed(Duration::from_secs(4), "forged claims");
}

/// Bytes a connecting node wrote, recorded on their way: a real node's hello and claim, proved
/// with the secret for the nonces of that connection.
struct Recorder {
    inner: TcpStream,
    written: Vec<u8>,
}

impl tokio::io::AsyncRead for Recorder {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            let n = *n;
            self.written.extend_from_slice(&buf[..n]);
        }
        polled
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A handshake recorded from a connection that succeeded, replayed byte for byte on new
/// connections — to the same node and to the other one — is refused: the node's nonce is new.
#[test]
fn a_recorded_handshake_replays_nowhere() {
    let mut cluster = Cluster::start(&[]);
    let a = cluster.unique(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A real handshake with the secret, as a node at an unused address would make it.
        let me = UniqueAddress {
            address: Address::remote("procs", "127.0.0.1", 9).unwrap(),
            uid: 77,
        };
        let inner = TcpStream::connect(("127.0.0.1", cluster.port(0)))
            .await
            .unwrap();
        let mut recorder = Recorder {
            inner,
            written: Vec::new(),
        };
        let secrets =
            flotilla_proto::handshake::Secrets::new([flotilla_remote::testing::secret()]).unwrap();
        let answered = initiate(
            &mut recorder,
            &mut decoder(),
            &me,
            &a.address,
            Some(secrets),
            Opening {
                lane: Lane::Control,
                link: 5,
            },
        )
        .await
        .unwrap();
        assert_eq!(answered, a, "the recorded handshake was a good one");
        let recorded = recorder.written.clone();
        drop(recorder);
        for port in [cluster.port(0), cluster.port(1)] {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let answers = exchange(&mut s, &recorded).await;
            let last = answers.last().unwrap();
            let reply: HandshakeReply = flotilla_wire::pdu::decode(last.kind, &last.body).unwrap();
            assert!(
                matches!(
                    reply,
                    HandshakeReply::Refused(HandshakeRefusal::WrongSecret)
                ),
                "{reply:?}"
            );
        }
    });
    cluster.unharmed(Duration::from_secs(3), "replayed handshake");
}

/// 2000 connections that never say anything, held open, do not keep a new node out: it joins,
/// and the cluster is untouched. (The node keeps at most `max-handshakes-in-progress` of them.)
#[test]
fn two_thousand_idle_connections_keep_no_one_out() {
    let mut cluster = Cluster::start(&[]);
    let (port, seed) = (cluster.port(0), cluster.nodes[0].address().to_owned());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idle = rt.block_on(async {
        let mut idle = Vec::new();
        for _ in 0..2000 {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => idle.push(s),
                Err(e) => panic!("connection {} refused: {e}", idle.len()),
            }
        }
        idle
    });
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
    let mut third = NodeProcess::start_fast(binary, "procs", Some(&seed), &[], LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let want = format!("event MemberUp {}", third.unique());
    if let Err(e) = third.wait_for(LIMIT, |l| l == want) {
        panic!("a new node could not join past 2000 idle connections: {e:#}");
    }
    drop(idle);
    cluster.nodes.push(third);
    cluster.unharmed(Duration::from_secs(3), "idle connections");
}

/// Slow HTTP requests at the management endpoint (headers never finished) are cut off after
/// `header-read-timeout`; the endpoint then answers, and the cluster never noticed.
#[test]
fn slow_http_requests_are_cut_off_and_the_node_stays() {
    let mut cluster = Cluster::start(&[]);
    let endpoint = cluster.nodes[0]
        .wait_for(LIMIT, |l| l.starts_with("management "))
        .unwrap()
        .1["management http://".len()..]
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut slow = Vec::new();
        for _ in 0..200 {
            if let Ok(mut s) = TcpStream::connect(endpoint.as_str()).await {
                let _ = s
                    .write_all(b"GET /cluster/members HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    .await;
                slow.push(s);
            }
        }
        // Default header-read-timeout is 10 s: within it plus a margin, a request is served.
        let served = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(mut s) = TcpStream::connect(endpoint.as_str()).await {
                    let frames = exchange_http(&mut s).await;
                    if frames.starts_with("HTTP/1.1 200") {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        assert!(served.is_ok(), "the endpoint never answered again");
        drop(slow);
    });
    cluster.unharmed(Duration::from_secs(1), "slow HTTP requests");
}

async fn exchange_http(s: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let _ = s
        .write_all(b"GET /cluster/members HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// With mutual TLS alone (no secret), a client holding a certificate from the cluster's own CA —
/// but for another host — cannot claim a node's address: the accepting node checks the
/// certificate against the host claimed, after the TLS handshake that the CA lets through.
#[test]
fn a_certificate_for_another_host_cannot_claim_a_members_address() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    flotilla_cli::certs::create(&flotilla_cli::certs::CertsOptions {
        out: certs.clone(),
        hosts: vec!["127.0.0.1".into(), "10.9.9.9".into()],
        days: 1,
        force: false,
    })
    .unwrap();
    let config = dir.path().join("node.toml");
    let tls_only = flotilla_cli::certs::config_snippet(&certs, "127.0.0.1")
        .lines()
        .filter(|l| !l.starts_with("secret-file"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, tls_only).unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
    let start = |seed: Option<&str>| {
        let mut cmd = std::process::Command::new(binary);
        cmd.args(["node", "--system", "procs", "--port", "0", "--fast"]);
        cmd.args(["--management-port", "0"])
            .arg("--config")
            .arg(&config);
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        NodeProcess::spawn(cmd, LIMIT).unwrap_or_else(|e| panic!("{e:#}"))
    };
    let first = start(None);
    let seed = first.address().to_owned();
    let mut cluster = Cluster::up(vec![first, start(Some(&seed))]);
    let (a, b) = (cluster.unique(0), cluster.unique(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let hostile = flotilla_core::TlsSettings {
            certificate: certs.join("10.9.9.9.crt"),
            private_key: certs.join("10.9.9.9.key"),
            trusted_ca: certs.join("ca.crt"),
            reload_interval: Duration::from_secs(60),
        };
        let configs = flotilla_remote::tls::load(&hostile).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", cluster.port(0)))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(configs.client)
            .connect(name, tcp)
            .await
            .expect("the CA's certificate passes TLS");
        // b's address with a new UID: a restarted b, as far as the claim goes.
        let claimed = UniqueAddress {
            address: b.address.clone(),
            uid: b.uid ^ 1,
        };
        let err = initiate(
            &mut tls,
            &mut decoder(),
            &claimed,
            &a.address,
            None,
            Opening {
                lane: Lane::Control,
                link: 3,
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                flotilla_remote::handshake::HandshakeError::RefusedByPeer(
                    HandshakeRefusal::NotAuthorized { .. }
                )
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not valid for that host"), "{err}");
    });
    cluster.unharmed(Duration::from_secs(4), "certificate for another host");
}
