//! An in-process Kubernetes API server that serves the Lease resource (feature `testing`).
//!
//! No real API server can run on every test machine, so this one implements what the backend
//! relies on, with the real semantics: `GET`, `LIST` (with an equality label selector), `POST`
//! (409 AlreadyExists if present) and `PUT` (409 Conflict unless the body's `resourceVersion` is
//! the stored one), a cluster-wide `resourceVersion` counter, and Kubernetes `Status` error
//! bodies. It can be paused — requests then wait, and are served when it resumes, like a stalled
//! API server — and a Lease can be taken over on the server side.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use flotilla_lease::LeaseName;
use flotilla_lease::backend::BoxFuture;

const BASE: &str = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";

#[derive(Default)]
struct Store {
    objects: BTreeMap<(String, String), Value>,
    version: u64,
    requests: u64,
    conflicts: u64,
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    paused: watch::Receiver<bool>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits while the server is paused.
    async fn gate(&self) {
        let mut paused = self.paused.clone();
        let _ = paused.wait_for(|p| !p).await;
        self.store().requests += 1;
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

fn not_found(name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("leases.coordination.k8s.io \"{name}\" not found"),
    )
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::try_from(SystemTime::now())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Stamps server-owned metadata onto a stored object.
fn stamp(object: &mut Value, ns: &str, version: u64, created: Option<&Value>) {
    object["apiVersion"] = json!("coordination.k8s.io/v1");
    object["kind"] = json!("Lease");
    let meta = &mut object["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    meta["namespace"] = json!(ns);
    meta["resourceVersion"] = json!(version.to_string());
    match created {
        Some(previous) => {
            meta["uid"] = previous["metadata"]["uid"].clone();
            meta["creationTimestamp"] = previous["metadata"]["creationTimestamp"].clone();
        }
        None => {
            meta["uid"] = json!(format!("lease-{version}"));
            meta["creationTimestamp"] = json!(now_rfc3339());
        }
    }
}

async fn list(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.gate().await;
    let store = s.store();
    let selector = q.get("labelSelector").and_then(|sel| sel.split_once('='));
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .map(|(_, v)| v.clone())
        .filter(|v| selector.is_none_or(|(k, want)| v["metadata"]["labels"][k] == json!(want)))
        .collect();
    Json(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
        "metadata": { "resourceVersion": store.version.to_string() },
        "items": items,
    }))
    .into_response()
}

async fn create(State(s): State<Shared>, Path(ns): Path<String>, body: String) -> Response {
    s.gate().await;
    let Ok(mut object) = serde_json::from_str::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "malformed body".into(),
        );
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "name required".into(),
        );
    };
    let mut store = s.store();
    let key = (ns.clone(), name.clone());
    if store.objects.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    store.version += 1;
    stamp(&mut object, &ns, store.version, None);
    store.objects.insert(key, object.clone());
    (StatusCode::CREATED, Json(object)).into_response()
}

async fn read(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    s.gate().await;
    match s.store().objects.get(&(ns, name.clone())) {
        Some(v) => Json(v.clone()).into_response(),
        None => not_found(&name),
    }
}

async fn replace(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: String,
) -> Response {
    s.gate().await;
    let Ok(mut object) = serde_json::from_str::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "malformed body".into(),
        );
    };
    if object["metadata"]["name"].as_str() != Some(name.as_str()) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name in the body does not match the URL".into(),
        );
    }
    let mut store = s.store();
    let key = (ns.clone(), name.clone());
    let Some(current) = store.objects.get(&key).cloned() else {
        return not_found(&name);
    };
    let sent = object["metadata"]["resourceVersion"].as_str();
    let stored = current["metadata"]["resourceVersion"].as_str();
    if sent.is_some() && sent != stored {
        store.conflicts += 1;
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the \
                 object has been modified; please apply your changes to the latest version and \
                 try again"
            ),
        );
    }
    store.version += 1;
    stamp(&mut object, &ns, store.version, Some(&current));
    store.objects.insert(key, object.clone());
    Json(object).into_response()
}

/// A running fake API server.
pub struct FakeApiServer {
    url: String,
    store: Arc<Mutex<Store>>,
    pause: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl FakeApiServer {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let store = Arc::new(Mutex::new(Store::default()));
        let (pause, paused) = watch::channel(false);
        let shared = Shared {
            store: Arc::clone(&store),
            paused,
        };
        let app = Router::new()
            .route(BASE, get(list).post(create))
            .route(&format!("{BASE}/{{name}}"), get(read).put(replace))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            store,
            pause,
            task,
        })
    }

    /// The server's URL, for `api-server`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests it has served.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// How many writes it refused with 409 Conflict for a stale resourceVersion.
    pub fn conflicts(&self) -> u64 {
        self.lock().conflicts
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives the Lease `name` in `ns` to `owner`, as another cluster would.
    pub fn take_over(&self, ns: &str, name: &str, owner: &str) -> Result<(), String> {
        let mut store = self.lock();
        store.version += 1;
        let version = store.version;
        let object = store
            .objects
            .get_mut(&(ns.to_owned(), name.to_owned()))
            .ok_or_else(|| format!("no Lease {ns}/{name}"))?;
        let spec = &mut object["spec"];
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0) + 1;
        spec["holderIdentity"] = json!(owner);
        spec["leaseTransitions"] = json!(transitions);
        spec["renewTime"] = json!(now_rfc3339());
        spec["acquireTime"] = json!(now_rfc3339());
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        Ok(())
    }
}

/// Requests wait while paused, and are served when resumed.
impl flotilla_lease::testing::Pausable for FakeApiServer {
    fn pause(&self) {
        let _ = self.pause.send(true);
    }

    fn resume(&self) {
        let _ = self.pause.send(false);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A [`flotilla_lease::testing::TakeOver`] for a backend served by a [`FakeApiServer`].
pub fn take_over<'a>(
    backend: &'a crate::KubernetesBackend,
    server: &'a FakeApiServer,
    lease: &'a LeaseName,
    owner: &'a str,
    _ttl: std::time::Duration,
) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(async move { server.take_over(backend.namespace(), lease.as_str(), owner) })
}
