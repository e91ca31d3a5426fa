//! The body of the `management` fuzz target (`fuzz/fuzz_targets/management.rs`), here so that
//! the corpus replay test runs exactly the same code on every test run.
//!
//! An input is one HTTP request to the real router of a real node (a one-node actor system with
//! remoting on 127.0.0.1, not joined, and an in-memory lease backend), without a socket: the
//! first byte picks the method, the second whether the bearer token and a JSON content type are
//! sent, then the path up to a newline, then the body. The router must answer every request
//! without a panic, with no 5xx but the documented ones (503 from `/health/*`, 502 from
//! `/leases`), and every 4xx must carry a JSON [`ApiError`](crate::api::ApiError).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, header};
use tower::ServiceExt as _;

use crate::{EventLog, NodeView, server};

/// The token the harness's node requires for mutating requests.
pub const TOKEN: &str = "fuzz-token";

/// A node and its router, built once and asked many times.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _system: flotilla_actor::ActorSystem,
}

impl Harness {
    /// Starts the node. Panics if it cannot (no runtime, no free port): a broken harness.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("no runtime: {e}"));
        // As Management::start does: /metrics needs the recorder.
        crate::install_recorder();
        let (system, router) = runtime.block_on(async {
            // A node alone on 127.0.0.1 that no peer ever reaches: explicitly without
            // remoting credentials.
            let config = flotilla_core::FlotillaConfig {
                remote: flotilla_core::RemoteSettings {
                    insecure: true,
                    ..flotilla_core::RemoteSettings::default()
                },
                ..flotilla_core::FlotillaConfig::default()
            };
            let system = flotilla_actor::ActorSystem::builder("fuzz")
                .config(config)
                .remote("127.0.0.1", 0)
                .build()
                .unwrap_or_else(|e| panic!("no actor system: {e}"));
            let cluster = flotilla_cluster::Cluster::start(&system)
                .unwrap_or_else(|e| panic!("no cluster: {e}"));
            let view = Arc::new(NodeView {
                system: system.clone(),
                cluster,
                regions: Vec::new(),
                leases: Some(Arc::new(flotilla_lease::MemoryBackend::new())),
                token: Some(TOKEN.into()),
                hosts: crate::guard::HostPolicy::new("127.0.0.1", &[]),
                events: EventLog::new(100),
            });
            (system, server::router(view))
        });
        Self {
            runtime,
            router,
            _system: system,
        }
    }

    /// Sends one request made from `data` (see the module docs); panics only if a property
    /// breaks.
    pub fn request(&self, data: &[u8]) {
        let [method, flags, rest @ ..] = data else {
            return;
        };
        let method = match method % 5 {
            0 => Method::GET,
            1 => Method::PUT,
            2 => Method::POST,
            3 => Method::DELETE,
            _ => Method::HEAD,
        };
        let (path, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let path = String::from_utf8_lossy(path);
        let path = if path.starts_with('/') {
            path.into_owned()
        } else {
            format!("/{path}")
        };
        let mut request = Request::builder().method(method.clone()).uri(&path);
        if flags & 1 == 1 {
            request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        if flags & 2 == 2 {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let Ok(request) = request.body(Body::from(body.to_vec())) else {
            return; // not a request a client could send (a bad URI)
        };
        let router = self.router.clone();
        let (status, bytes) = self.runtime.block_on(async move {
            let Ok(response) = router.oneshot(request).await;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            (status, bytes)
        });
        let allowed_5xx = (path.starts_with("/health/") && status.as_u16() == 503)
            || (path.starts_with("/leases") && status.as_u16() == 502);
        assert!(
            !status.is_server_error() || allowed_5xx,
            "{method} {path} answered {status}"
        );
        if status.is_client_error() && method != Method::HEAD {
            let parsed: Result<crate::api::ApiError, _> = serde_json::from_slice(&bytes);
            assert!(
                parsed.is_ok(),
                "{method} {path} answered {status} without a JSON error: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
