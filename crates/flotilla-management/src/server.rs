//! The routes and their handlers. Bad input gets a 4xx with an [`ApiError`] body. Every
//! request first passes the [`guard`](crate::guard) layers: the Host allow-list, then the bearer
//! token for anything but GET and HEAD.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use flotilla_cluster::MemberStatus;
use flotilla_core::Address;

use crate::NodeView;
use crate::api::{
    Accepted, ApiError, AssociationInfo, Associations, Events, Health, LeaseInfo, Leases,
    MemberInfo, MemberOperation, Members, NodeShards, Operation, RegionInfo, ShardInfo, Shards,
    Status,
};

type View = State<Arc<NodeView>>;

/// How long `GET /cluster/shards` waits for each member's region.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// Every route the endpoint serves, as (method, path): the OpenAPI description lists exactly
/// these (a test checks it). Keep it next to the router.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/openapi.json"),
    ("get", "/status"),
    ("get", "/cluster/members"),
    ("put", "/cluster/members/{address}"),
    ("get", "/cluster/shards"),
    ("get", "/remote/associations"),
    ("get", "/leases"),
    ("get", "/events"),
    ("get", "/health/alive"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
];

pub(crate) fn router(view: Arc<NodeView>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/openapi.json", get(openapi))
        .route("/status", get(status))
        .route("/cluster/members", get(members))
        .route("/cluster/members/{address}", put(member_operation))
        .route("/cluster/shards", get(shards))
        .route("/remote/associations", get(associations))
        .route("/leases", get(leases_handler))
        .route("/events", get(events))
        .route("/health/alive", get(alive))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&view),
            crate::guard::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&view),
            crate::guard::check_host,
        ))
        .with_state(view)
}

/// An error answer: `status` with an [`ApiError`] body.
pub(crate) fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(ApiError { error: text.into() })).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (GET / is the dashboard; GET /openapi.json describes the API)",
    )
}

async fn method_not_allowed(method: axum::http::Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here (GET /openapi.json describes the API)"),
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

pub(crate) fn members_of(view: &NodeView, phis: &BTreeMap<String, f64>) -> Members {
    let snapshot = view.cluster.snapshot();
    let state = snapshot.state;
    let unreachable: BTreeSet<_> = state.unreachable.iter().map(|m| m.node.clone()).collect();
    Members {
        self_node: view.cluster.self_node().to_string(),
        leader: state.leader.as_ref().map(ToString::to_string),
        converged: state
            .members
            .iter()
            .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
            .all(|m| state.seen_by.contains(&m.node.address)),
        members: state
            .members
            .iter()
            .map(|m| MemberInfo {
                address: m.node.address.to_string(),
                uid: m.node.uid.to_string(),
                status: m.status.to_string(),
                reachable: !unreachable.contains(&m.node),
                roles: m.roles.iter().cloned().collect(),
                up_number: (m.up_number != u64::MAX).then_some(m.up_number),
                phi: phis
                    .get(&m.node.address.to_string())
                    .map(|p| if p.is_finite() { *p } else { f64::MAX }),
            })
            .collect(),
    }
}

async fn phis(view: &NodeView) -> BTreeMap<String, f64> {
    view.cluster
        .phi_values()
        .await
        .into_iter()
        .map(|(n, p)| (n.address.to_string(), p))
        .collect()
}

async fn members(State(view): View) -> Json<Members> {
    let phis = phis(&view).await;
    Json(members_of(&view, &phis))
}

/// `flotilla://sys@host:port`, or `sys@host:port`.
fn parse_address(text: &str) -> Result<Address, String> {
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("flotilla://{text}")
    };
    let address = full.parse::<Address>().map_err(|e| {
        format!("{text:?} is not a member address (flotilla://system@host:port): {e}")
    })?;
    if address.is_local() {
        return Err(format!(
            "{text:?} is not a member address: it has no host and port (flotilla://system@host:port)"
        ));
    }
    Ok(address)
}

/// `PUT /cluster/members/{address}`; the token was checked by [`crate::guard::require_token`].
async fn member_operation(
    State(view): View,
    address: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Result<Json<MemberOperation>, JsonRejection>,
) -> Response {
    let address = match address {
        Ok(Path(a)) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the member address in the path is not valid: {}",
                    e.body_text()
                ),
            );
        }
    };
    let address = match parse_address(&address) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let op = match body {
        Ok(Json(op)) => op.operation,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be {{\"operation\": \"leave\"}} or {{\"operation\": \"down\"}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    let known = view
        .cluster
        .state()
        .members
        .iter()
        .any(|m| m.node.address == address);
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            format!("{address} is not a member of the cluster"),
        );
    }
    let message = match op {
        Operation::Leave => {
            view.cluster.leave(address.clone());
            format!("{address} is asked to leave")
        }
        Operation::Down => {
            view.cluster.down(address.clone());
            format!("{address} is declared down")
        }
    };
    tracing::info!("management API: {message}");
    view.events.push("operator", message.clone());
    (StatusCode::ACCEPTED, Json(Accepted { message })).into_response()
}

pub(crate) async fn regions(view: &NodeView, with_cluster: bool) -> Vec<RegionInfo> {
    let mut out = Vec::new();
    for r in &view.regions {
        let st = r.state().await;
        let cluster = if with_cluster {
            r.cluster_stats(STATS_TIMEOUT)
                .await
                .into_iter()
                .map(|(address, (shards, entities))| NodeShards {
                    address,
                    shards,
                    entities,
                })
                .collect()
        } else {
            Vec::new()
        };
        out.push(RegionInfo {
            type_name: r.type_name().to_owned(),
            registered: st.registered,
            coordinator: st.coordinator,
            held_messages: st.held,
            shards: st
                .shards
                .iter()
                .map(|(id, e)| ShardInfo {
                    id: id.clone(),
                    entities: e.len(),
                })
                .collect(),
            cluster,
        });
    }
    out
}

async fn shards(State(view): View) -> Json<Shards> {
    Json(Shards {
        regions: regions(&view, true).await,
    })
}

pub(crate) async fn associations_of(view: &NodeView) -> Associations {
    let now = std::time::Instant::now();
    Associations {
        associations: view
            .system
            .associations()
            .await
            .into_iter()
            .map(|a| AssociationInfo {
                remote: a.remote.to_string(),
                state: a.state.to_string(),
                uid: a.uid.map(|u| u.to_string()),
                since_ms: u64::try_from(now.saturating_duration_since(a.since).as_millis())
                    .unwrap_or(u64::MAX),
                cause: a.last_cause.as_ref().map(ToString::to_string),
                quarantined: a.quarantined.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

async fn associations(State(view): View) -> Json<Associations> {
    Json(associations_of(&view).await)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The backend's leases, zombies flagged; an error text when the backend does not answer.
pub(crate) async fn leases(view: &NodeView) -> Result<Leases, String> {
    let Some(backend) = &view.leases else {
        return Ok(Leases {
            backend: None,
            leases: Vec::new(),
            zombies: 0,
        });
    };
    let records = tokio::time::timeout(backend.request_timeout(), backend.list())
        .await
        .map_err(|_| {
            format!(
                "the {} lease backend did not answer in time",
                backend.kind()
            )
        })?
        .map_err(|e| format!("the {} lease backend failed: {e}", backend.kind()))?;
    // Owner ids of the current members: their addresses (the default), and this node's own
    // configured owner id.
    let mut members: BTreeSet<String> = view
        .cluster
        .state()
        .members
        .iter()
        .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
        .map(|m| m.node.address.to_string())
        .collect();
    if let Ok(own) =
        flotilla_lease::OwnerId::for_node(&view.system.config().lease, view.cluster.self_address())
    {
        members.insert(own.to_string());
    }
    let zombie_names: BTreeSet<String> = flotilla_lease::zombies(&records, &members)
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    let now = SystemTime::now();
    let leases: Vec<LeaseInfo> = records
        .iter()
        .map(|r| LeaseInfo {
            name: r.name.to_string(),
            owner: r.owner.clone(),
            token: r.token.0,
            age_ms: r
                .acquired_at
                .and_then(|t| now.duration_since(t).ok())
                .map(millis),
            expires_in_ms: r.expires_in.map(millis),
            zombie: zombie_names.contains(&r.name.to_string()),
        })
        .collect();
    Ok(Leases {
        backend: Some(backend.kind().to_owned()),
        zombies: zombie_names.len(),
        leases,
    })
}

async fn leases_handler(State(view): View) -> Response {
    match leases(&view).await {
        Ok(l) => Json(l).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

#[derive(serde::Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

async fn events(
    State(view): View,
    query: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(After { after })) => Json(Events {
            events: view.events.after(after),
        })
        .into_response(),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("after must be a sequence number: {}", e.body_text()),
        ),
    }
}

async fn alive(State(view): View) -> Response {
    if view.system.is_terminated() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                ok: false,
                reason: "the actor system has terminated".into(),
            }),
        )
            .into_response();
    }
    Json(Health {
        ok: true,
        reason: "the actor system is running".into(),
    })
    .into_response()
}

pub(crate) async fn readiness(view: &NodeView) -> Health {
    let status = view.cluster.self_member().map(|m| m.status);
    if status != Some(MemberStatus::Up) {
        return Health {
            ok: false,
            reason: match status {
                Some(s) => format!("this node is {s}, not Up"),
                None => "this node has not joined a cluster yet".into(),
            },
        };
    }
    for r in &view.regions {
        if !r.state().await.registered {
            return Health {
                ok: false,
                reason: format!(
                    "the {} shard region is not registered with its coordinator yet",
                    r.type_name()
                ),
            };
        }
    }
    Health {
        ok: true,
        reason: format!("Up, with {} shard region(s) registered", view.regions.len()),
    }
}

async fn ready(State(view): View) -> Response {
    let health = readiness(&view).await;
    let code = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health)).into_response()
}

async fn status(State(view): View) -> Json<Status> {
    let state = view.cluster.state();
    let mut by_status = BTreeMap::new();
    for m in &state.members {
        *by_status.entry(m.status.to_string()).or_insert(0) += 1;
    }
    let regions = regions(&view, false).await;
    let mut by_state = BTreeMap::new();
    for a in associations_of(&view).await.associations {
        *by_state.entry(a.state).or_insert(0) += 1;
    }
    Json(Status {
        self_node: view.cluster.self_node().to_string(),
        status: view.cluster.self_member().map(|m| m.status.to_string()),
        leader: state.leader.as_ref().map(ToString::to_string),
        members_by_status: by_status,
        unreachable: state.unreachable.len(),
        shards: regions.iter().map(|r| r.shards.len()).sum(),
        entities: regions
            .iter()
            .flat_map(|r| r.shards.iter().map(|s| s.entities))
            .sum(),
        associations_by_state: by_state,
        ready: readiness(&view).await.ok,
    })
}

async fn metrics(State(view): View) -> Response {
    match crate::prometheus::render(&view).await {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process; Flotilla's metrics go there",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_taken_with_or_without_the_scheme_and_bad_ones_are_refused() {
        assert_eq!(
            parse_address("sys@127.0.0.1:2552").map(|a| a.to_string()),
            Ok("flotilla://sys@127.0.0.1:2552".to_owned())
        );
        assert!(parse_address("flotilla://sys@127.0.0.1:2552").is_ok());
        assert!(parse_address("not an address").is_err());
        assert!(
            parse_address("just-a-system").is_err(),
            "a local address is no member"
        );
        assert!(parse_address("").is_err());
    }
}
