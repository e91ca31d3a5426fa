//! The dashboard end to end, in headless Chromium driven over the DevTools protocol: the page of
//! one node of a three-node cluster (`flotilla node` processes) shows the three members Up,
//! the shard distribution and the associations; after another node is killed (`kill -9`) the
//! same page, refreshing itself, shows it unreachable, then removed and its association
//! quarantined (with its exact 64-bit UID). Screenshots before and after are kept in `target/test-artifacts/`.
//!
//! Every process is started here and ended here, by PID. Every wait is bounded.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use flotilla_cli::node::NodeProcess;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

fn start(seed: Option<&str>) -> NodeProcess {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
    NodeProcess::start_fast(
        binary,
        "dash",
        seed,
        &["--sharded-counters", "300", "--shards", "30"],
        LIMIT,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Headless Chromium, ended by PID when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on `url`, with the DevTools protocol on a free port.
    fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1400,1100",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium (Debian package chromium): {e}"));
        // "DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>"
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                    let port: u16 = rest.split('/').next().unwrap().parse().unwrap();
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(LIMIT)
            .expect("chromium did not say where DevTools listens");
        Self {
            child,
            _profile: profile,
            port,
        }
    }
}

/// A plain HTTP GET on 127.0.0.1 (DevTools' target list): the body, or nothing after 10 s.
/// DevTools keeps the connection open, so the body is read by its Content-Length.
async fn get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            bytes.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return Some(body.to_owned());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// One DevTools session with the dashboard's page.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    async fn attach(browser: &Browser, url: &str) -> Self {
        let deadline = Instant::now() + LIMIT;
        let ws_url = loop {
            let targets: Value =
                serde_json::from_str(&get(browser.port, "/json/list").await).unwrap_or(json!([]));
            let found = targets.as_array().and_then(|ts| {
                ts.iter()
                    .find(|t| {
                        t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                    })
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(u) = found {
                break u;
            }
            assert!(Instant::now() < deadline, "no page for {url}: {targets}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap();
        Self { ws, next: 1 }
    }

    /// Sends a DevTools command and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg.into())).await.unwrap();
        loop {
            let reply = tokio::time::timeout(LIMIT, self.ws.next())
                .await
                .expect("DevTools did not answer")
                .unwrap()
                .unwrap();
            let Message::Text(text) = reply else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// What the page shows: members as (address, status, reachable), associations as
    /// (remote, state), the shard rows' text, the event log's text.
    async fn view(&mut self) -> Value {
        self.eval(
            r#"JSON.stringify({
                members: [...document.querySelectorAll('#members tr[data-address]')]
                    .map(r => [...r.children].slice(0, 3).map(c => c.innerText)),
                associations: [...document.querySelectorAll('#associations tr')]
                    .map(r => [...r.children].slice(0, 3).map(c => c.innerText)),
                shards: document.querySelector('#shards').innerText,
                events: document.querySelector('#events').innerText,
                event_seqs: [...document.querySelectorAll('#events div')].map(d => Number(d.dataset.seq)),
                error: document.querySelector('#error').innerText,
            })"#,
        )
        .await
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or(Value::Null)
    }

    /// Waits until the page's view satisfies `want`; the view.
    async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let v = self.view().await;
            if want(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; it shows {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Saves a screenshot to `target/test-artifacts/<name>`; its path.
    async fn screenshot(&mut self, name: &str) -> std::path::PathBuf {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

/// The member rows as (address, status, reachable).
fn members(v: &Value) -> Vec<(String, String, String)> {
    v["members"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let c = |i: usize| r[i].as_str().unwrap_or_default().to_owned();
                    (c(0), c(1), c(2))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_crashed_member_go_unreachable_and_be_removed() {
    let mut a = start(None);
    let seed = a.address().to_owned();
    let mut b = start(Some(&seed));
    let mut c = start(Some(&seed));
    let (_, line) = a
        .wait_for(LIMIT, |l| l.starts_with("management "))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let url = line["management ".len()..].to_owned();
    for n in [&mut a, &mut b, &mut c] {
        n.wait_for(LIMIT, |l| l.starts_with("listening ")).unwrap();
    }
    let (b_address, c_address) = (b.address().to_owned(), c.address().to_owned());
    let c_uid = c.unique().split('#').nth(1).unwrap().to_owned();

    let browser = Browser::open(&format!("{url}/"));
    eprintln!("chromium's DevTools on port {}", browser.port);
    let mut page = Page::attach(&browser, &url).await;
    eprintln!("attached to the dashboard at {url}");
    let before = page
        .until("three members Up, each with shards", |v| {
            let m = members(v);
            m.len() == 3
                && m.iter().all(|(_, s, r)| s == "Up" && r == "yes")
                && [&seed, &b_address, &c_address].iter().all(|addr| {
                    v["shards"]
                        .as_str()
                        .is_some_and(|s| s.contains(addr.as_str()))
                })
        })
        .await;
    assert!(
        before["associations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[1] == "Active"),
        "{before:#}"
    );
    let shot = page.screenshot("dashboard-three-nodes.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    c.kill().unwrap();
    // The unreachable window lasts about two seconds with these fast settings; a page
    // refresh may fall either side of it, but the event log keeps it.
    let unreachable_event = format!("{c_address} is unreachable");
    page.until("the killed member unreachable", |v| {
        members(v)
            .iter()
            .any(|(addr, _, reachable)| *addr == c_address && reachable == "no")
            || v["events"]
                .as_str()
                .is_some_and(|e| e.contains(&unreachable_event))
    })
    .await;
    let after = page
        .until(
            "the killed member removed and its association quarantined",
            |v| {
                let m = members(v);
                m.len() == 2
                    && !m.iter().any(|(addr, _, _)| *addr == c_address)
                    && v["associations"].as_array().is_some_and(|rows| {
                        rows.iter().any(|r| {
                            r[0] == c_address.as_str()
                                && r[1] == "Quarantined"
                                && r[2] == c_uid.as_str()
                        })
                    })
            },
        )
        .await;
    let events = after["events"].as_str().unwrap_or_default();
    assert!(events.contains("unreachable"), "{events}");
    assert!(events.contains("removed"), "{events}");
    assert_eq!(after["error"], "", "{after:#}");
    // Each event once, newest first.
    let seqs: Vec<u64> = after["event_seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(seqs.len() > 3, "{after:#}");
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "the event log repeats or reorders events: {seqs:?}"
    );
    page.screenshot("dashboard-after-a-crash.png").await;
    drop(page);
    drop(browser);
    b.terminate().unwrap();
    a.terminate().unwrap();
    for n in [&mut a, &mut b] {
        n.wait_exit(LIMIT).unwrap();
    }
}
