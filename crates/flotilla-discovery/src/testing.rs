//! Servers to test discovery against (feature `testing`): a real DNS server, and an in-process
//! Kubernetes API server that lists pods.
//!
//! - [`DnsServer`] runs `dnsmasq` (Debian's `dnsmasq-base`; `$DNSMASQ_BIN` or
//!   `/usr/sbin/dnsmasq`) on a free port of 127.0.0.1, answering only from the records it is
//!   given (A, AAAA and SRV), over UDP and TCP.
//! - [`FakeKubernetes`] serves `GET /api/v1/namespaces/{ns}/pods` with the API server's
//!   documented semantics for what discovery relies on: a `PodList`, the `labelSelector`
//!   parameter with the whole documented grammar (`=`, `==`, `!=`, `in`, `notin`, exists, `!`
//!   does-not-exist; comma-separated requirements all must hold), 400 with a `Status` body for
//!   a selector that does not parse, and namespaces kept apart. No real API server can run on
//!   every test machine, so this one stands in for it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// A DNS record for [`DnsServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An A or AAAA record.
    Ip {
        /// The name.
        name: String,
        /// Its address.
        ip: IpAddr,
    },
    /// An SRV record (priority and weight 0).
    Srv {
        /// `_<port-name>._<protocol>.<service>`.
        name: String,
        /// The target host name.
        target: String,
        /// The port.
        port: u16,
    },
}

/// A running `dnsmasq`; stopped when dropped.
#[derive(Debug)]
pub struct DnsServer {
    child: tokio::process::Child,
    port: u16,
}

impl DnsServer {
    /// Starts `dnsmasq` with exactly these records and waits until it answers.
    pub async fn start(records: &[Record]) -> std::io::Result<Self> {
        let bin = std::env::var("DNSMASQ_BIN").unwrap_or_else(|_| "/usr/sbin/dnsmasq".into());
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--cache-size=0",
        ])
        .arg(format!("--port={port}"));
        for r in records {
            match r {
                Record::Ip { name, ip } => cmd.arg(format!("--host-record={name},{ip}")),
                Record::Srv { name, target, port } => {
                    cmd.arg(format!("--srv-host={name},{target},{port},0,0"))
                }
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot run {bin} (Debian package dnsmasq-base): {e}"),
            )
        })?;
        let mut server = Self { child, port };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits until a query over UDP gets an answer (any answer).
    async fn wait_ready(&mut self) -> std::io::Result<()> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        // A query for "ready." type A, class IN.
        let query = [
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, b'r',
            b'e', b'a', b'd', b'y', 0x00, 0x00, 0x01, 0x00, 0x01,
        ];
        let mut buf = [0u8; 512];
        for _ in 0..50 {
            if let Some(status) = self.child.try_wait()? {
                return Err(std::io::Error::other(format!("dnsmasq exited: {status}")));
            }
            socket.send_to(&query, ("127.0.0.1", self.port)).await?;
            let answer =
                tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await;
            if matches!(answer, Ok(Ok(_))) {
                return Ok(());
            }
        }
        Err(std::io::Error::other("dnsmasq did not answer within 5 s"))
    }

    /// `127.0.0.1:<port>`, for `nameservers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

#[derive(Default)]
struct Pods {
    /// (namespace, name) → pod object.
    pods: BTreeMap<(String, String), Value>,
    requests: u64,
}

type Shared = Arc<Mutex<Pods>>;

fn lock(s: &Shared) -> MutexGuard<'_, Pods> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One pod for [`FakeKubernetes::add_pod`].
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// `status.podIP` (none before it is scheduled).
    pub ip: Option<String>,
    /// `status.phase`: Pending, Running, Succeeded, Failed, Unknown.
    pub phase: String,
    /// Named container ports.
    pub ports: Vec<(String, u16)>,
    /// Whether `metadata.deletionTimestamp` is set (the pod is terminating).
    pub deleting: bool,
}

impl PodSpec {
    /// A Running pod with an IP and these labels.
    pub fn running(name: &str, ip: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ip: Some(ip.into()),
            phase: "Running".into(),
            ports: Vec::new(),
            deleting: false,
        }
    }
}

/// An in-process Kubernetes API server that lists pods. See the [module docs](self).
pub struct FakeKubernetes {
    url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeKubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubernetes")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubernetes {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Shared::default();
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(list))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, shared, task })
    }

    /// The server's URL, for `api-server`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests it has served.
    pub fn requests(&self) -> u64 {
        lock(&self.shared).requests
    }

    /// Adds (or replaces) a pod in namespace `ns`.
    pub fn add_pod(&self, ns: &str, pod: &PodSpec) {
        let labels: serde_json::Map<String, Value> = pod
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let ports: Vec<Value> = pod
            .ports
            .iter()
            .map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"}))
            .collect();
        let mut metadata = json!({"name": pod.name, "namespace": ns, "labels": labels});
        if pod.deleting {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let mut status = json!({"phase": pod.phase});
        if let Some(ip) = &pod.ip {
            status["podIP"] = json!(ip);
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "app", "ports": ports}]},
            "status": status,
        });
        lock(&self.shared)
            .pods
            .insert((ns.to_owned(), pod.name.clone()), object);
    }

    /// Removes a pod.
    pub fn remove_pod(&self, ns: &str, name: &str) {
        lock(&self.shared)
            .pods
            .remove(&(ns.to_owned(), name.to_owned()));
    }
}

async fn list(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let selector = match query.get("labelSelector").map(|s| Selector::parse(s)) {
        None => Selector::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("unable to parse requirement: {e}"),
                "reason": "BadRequest", "code": 400,
            });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let mut pods = lock(&shared);
    pods.requests += 1;
    let items: Vec<Value> = pods
        .pods
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .filter(|(_, pod)| selector.matches(&labels_of(pod)))
        .map(|(_, pod)| pod.clone())
        .collect();
    Json(json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": pods.requests.to_string()},
        "items": items,
    }))
    .into_response()
}

fn labels_of(pod: &Value) -> BTreeMap<String, String> {
    pod["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A Kubernetes label selector: every requirement must hold. The empty selector selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses the documented grammar: comma-separated requirements, each `key=value`,
    /// `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` or `!key`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty requirement in {text:?}"));
            }
            requirements.push(requirement(part)?);
        }
        Ok(Self(requirements))
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            // As documented: != and notin also select objects without the key.
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced ')' in {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in {text:?}"));
    }
    if !text.trim().is_empty() {
        parts.push(&text[start..]);
    }
    Ok(parts)
}

fn valid_key(k: &str) -> Result<String, String> {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(k.to_owned())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

fn valid_value(v: &str) -> Result<String, String> {
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("invalid label value {v:?}"))
    }
}

fn values(set: &str) -> Result<Vec<String>, String> {
    let inner = set
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesized set of values, got {set:?}"))?;
    inner.split(',').map(|v| valid_value(v.trim())).collect()
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(valid_key(key.trim())?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            valid_key(k.trim())?,
            valid_value(v.trim())?,
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(
            valid_key(k.trim())?,
            valid_value(v.trim())?,
        ));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = valid_key(words.next().unwrap_or_default().trim())?;
    let rest = words.next().map(str::trim).unwrap_or_default();
    if rest.is_empty() {
        return Ok(Requirement::Exists(key));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(key, values(set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(key, values(set)?));
    }
    Err(format!("unknown operator in {part:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_documented_selector_grammar() {
        let pod = labels(&[("app", "shop"), ("tier", "backend"), ("env", "prod")]);
        let cases = [
            ("", true),
            ("app=shop", true),
            ("app==shop", true),
            ("app=cart", false),
            ("app!=cart", true),
            ("missing!=x", true),
            ("env in (prod, qa)", true),
            ("env in (qa)", false),
            ("env notin (qa,dev)", true),
            ("missing notin (qa)", true),
            ("missing in (qa)", false),
            ("tier", true),
            ("missing", false),
            ("!missing", true),
            ("!tier", false),
            ("app=shop,env in (prod),!canary", true),
            ("app=shop,tier=frontend", false),
        ];
        for (text, expected) in cases {
            let s = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.matches(&pod), expected, "{text}");
        }
        for bad in [
            "app=shop,",
            "env in (prod",
            "env in prod",
            "a b c",
            "=x",
            "app=sh op",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
