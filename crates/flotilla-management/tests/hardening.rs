//! The management endpoint's defences against a real server on 127.0.0.1 (real TCP, raw
//! requests where the exact bytes matter): no unauthenticated mutating endpoint beyond
//! loopback, the bearer token on every mutating request, the Host allow-list against DNS
//! rebinding, the header-read timeout against slowloris and idle keep-alive, and the
//! connection limit. Each test takes well under two seconds.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla_actor::ActorSystem;
use flotilla_cluster::{Cluster, MemberStatus};
use flotilla_core::{FlotillaConfig, ManagementSettings};
use flotilla_management::{Management, ManagementError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The longest any single step here may take before the test fails.
const STEP: Duration = Duration::from_secs(5);

async fn node(name: &str) -> (ActorSystem, Cluster) {
    let config = FlotillaConfig {
        remote: flotilla_remote::testing::fast_settings(),
        cluster: flotilla_cluster::testing::fast_settings(),
        ..FlotillaConfig::default()
    };
    let system = ActorSystem::builder(name)
        .config(config)
        .remote("127.0.0.1", 0)
        .build()
        .unwrap();
    let cluster = Cluster::start(&system).unwrap();
    (system, cluster)
}

fn settings() -> ManagementSettings {
    ManagementSettings {
        port: 0,
        ..ManagementSettings::default()
    }
}

async fn start(
    system: &ActorSystem,
    cluster: &Cluster,
    settings: ManagementSettings,
) -> Management {
    Management::builder(system, cluster)
        .settings(settings)
        .start()
        .await
        .unwrap()
}

/// Reads one answer (head and a `Content-Length` body) from `stream`: its status and body.
/// `None` when the server closes the connection (or resets it) before a whole answer.
async fn read_answer(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(STEP, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = tokio::time::timeout(STEP, stream.read(&mut chunk))
            .await
            .expect("a body in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string(),
    ))
}

/// Sends the raw `request` on a new connection and reads the answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream).await
}

/// Whether the server closes `stream` (end of stream or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // an answer (408, say) before the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_beyond_loopback_without_a_token_refuses_to_start() {
    let (system, cluster) = node("open").await;
    // Only the check runs: it refuses before anything is bound.
    let refused = Management::builder(&system, &cluster)
        .settings(ManagementSettings {
            hostname: "0.0.0.0".into(),
            ..settings()
        })
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ManagementError::Unprotected { .. }),
        "{refused}"
    );
    let text = refused.to_string();
    for fix in [
        "management.token",
        "FLOTILLA__MANAGEMENT__TOKEN",
        "management.hostname = \"127.0.0.1\"",
        "management.insecure = true",
    ] {
        assert!(text.contains(fix), "{fix} is not in: {text}");
    }
    // Settings given in code are checked too.
    let zero = Management::builder(&system, &cluster)
        .settings(ManagementSettings {
            max_connections: 0,
            ..settings()
        })
        .start()
        .await
        .unwrap_err();
    assert!(matches!(zero, ManagementError::Settings(_)), "{zero}");
    system.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_requests_need_the_token_and_reads_do_not() {
    let (system, cluster) = node("token").await;
    cluster.join(cluster.self_address().clone());
    let management = start(
        &system,
        &cluster,
        ManagementSettings {
            token: Some("s3cret".into()),
            ..settings()
        },
    )
    .await;
    let deadline = Instant::now() + STEP;
    while cluster.self_member().map(|m| m.status) != Some(MemberStatus::Up) {
        assert!(Instant::now() < deadline, "the node did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = management.url();
    let me = flotilla_management::client::percent_encode(&cluster.self_address().to_string());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(STEP).build().unwrap();
    let leave = |token: Option<&str>| {
        let mut r = http
            .put(format!("{url}/cluster/members/{me}"))
            .json(&serde_json::json!({"operation": "leave"}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(leave(None).await.unwrap().status().as_u16(), 401);
    assert_eq!(leave(Some("wrong")).await.unwrap().status().as_u16(), 401);
    assert_eq!(leave(Some("s3cret")).await.unwrap().status().as_u16(), 202);
    // Any other non-GET request needs the token as well, before routing; GET does not.
    let post = http.post(format!("{url}/status")).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 401);
    let get = http.get(format!("{url}/status")).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 200);
    management.stop();
    system.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_without_a_token_mutating_requests_stay_open() {
    let (system, cluster) = node("loopback").await;
    let management = start(&system, &cluster, settings()).await;
    let body = r#"{"operation":"down"}"#;
    let request = format!(
        "PUT /cluster/members/s%40127.0.0.1%3A1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(management.local_addr(), request.as_bytes()).await;
    assert_eq!(
        answer.map(|a| a.0),
        Some(404),
        "past the token check: no such member"
    );
    management.stop();
    system.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_another_host_are_refused() {
    let (system, cluster) = node("rebinding").await;
    let management = start(
        &system,
        &cluster,
        ManagementSettings {
            allowed_hosts: vec!["flotilla.test".into()],
            ..settings()
        },
    )
    .await;
    let addr = management.local_addr();
    let port = addr.port();
    let get = |host: Option<String>| {
        let mut request = b"GET /health/alive HTTP/1.1\r\nConnection: close\r\n".to_vec();
        if let Some(h) = host {
            request.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        async move { raw(addr, &request).await.map(|a| a.0) }
    };
    for served in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("Flotilla.Test:{port}"),
        "127.0.0.1".to_owned(),
    ] {
        assert_eq!(get(Some(served.clone())).await, Some(200), "{served}");
    }
    for refused in [
        "evil.example:8558".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
    ] {
        assert_eq!(get(Some(refused.clone())).await, Some(421), "{refused}");
    }
    // HTTP/1.0 without a Host is served; a Host with bytes outside ASCII is refused.
    let old = raw(addr, b"GET /health/alive HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.map(|a| a.0), Some(200));
    let odd = raw(
        addr,
        b"GET /health/alive HTTP/1.1\r\nHost: evil\xff\tx.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(odd.map(|a| a.0), Some(421));
    // So is an absolute-form target naming another host, and two Host headers.
    let absolute = raw(
        addr,
        b"GET http://evil.example/health/alive HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(absolute.map(|a| a.0), Some(421));
    let twice = raw(
        addr,
        b"GET /health/alive HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(twice.map(|a| a.0), Some(421));
    // The refusal is a JSON error, and it is counted.
    let (status, body) = raw(
        addr,
        b"GET /status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 421);
    let error: flotilla_management::api::ApiError = serde_json::from_str(&body).unwrap();
    assert!(error.error.contains("allowed-hosts"), "{}", error.error);
    let (_, metrics) = raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        metrics.contains("flotilla_management_requests_refused_total{reason=\"host\"}"),
        "{metrics}"
    );
    management.stop();
    system.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_starve_the_others() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    const MARGIN: Duration = Duration::from_millis(1500);
    let (system, cluster) = node("slowloris").await;
    let management = start(
        &system,
        &cluster,
        ManagementSettings {
            header_read_timeout: TIMEOUT,
            max_connections: 512,
            ..settings()
        },
    )
    .await;
    let addr = management.local_addr();
    // 200 connections that start a request line and stall.
    let began = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health/al").await.unwrap();
        stalled.push(s);
    }
    // A legitimate request is answered meanwhile.
    let asked = Instant::now();
    let answer = raw(
        addr,
        b"GET /health/alive HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.map(|a| a.0), Some(200));
    assert!(asked.elapsed() < TIMEOUT + MARGIN, "{:?}", asked.elapsed());
    // Every stalled connection is closed once its header-read timeout has run out.
    let deadline = began + TIMEOUT + MARGIN;
    for (i, s) in stalled.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left).await,
            "stalled connection {i} is open"
        );
    }
    // A kept-alive connection that goes idle after an answer is closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health/alive HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut idle).await.map(|a| a.0), Some(200));
    let idle_since = Instant::now();
    assert!(closed_within(&mut idle, TIMEOUT + MARGIN).await);
    assert!(idle_since.elapsed() >= TIMEOUT - Duration::from_millis(50));
    management.stop();
    system.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (system, cluster) = node("limit").await;
    let management = start(
        &system,
        &cluster,
        ManagementSettings {
            max_connections: 3,
            header_read_timeout: Duration::from_secs(3),
            ..settings()
        },
    )
    .await;
    let addr = management.local_addr();
    let alive = b"GET /health/alive HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    // Three kept-alive connections, each answered once, hold every place.
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(alive).await.unwrap();
        assert_eq!(read_answer(&mut s).await.map(|a| a.0), Some(200));
        holders.push(s);
    }
    // A fourth is closed without an answer, long before the header-read timeout.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let _ = fourth.write_all(alive).await; // may already be reset
    let asked = Instant::now();
    assert!(closed_within(&mut fourth, Duration::from_secs(1)).await);
    assert!(asked.elapsed() < Duration::from_secs(1));
    // The holders are still served.
    holders[0].write_all(alive).await.unwrap();
    assert_eq!(read_answer(&mut holders[0]).await.map(|a| a.0), Some(200));
    // A place freed is a place taken again; the drop was counted.
    drop(holders.pop());
    let deadline = Instant::now() + STEP;
    let metrics = loop {
        let answer = raw(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        if let Some((200, body)) = answer {
            break body;
        }
        assert!(Instant::now() < deadline, "no place was freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metrics.contains("flotilla_management_connections_dropped_total{reason=\"limit\"}"),
        "{metrics}"
    );
    management.stop();
    system.terminate().await;
}
