//! The checked-in OpenAPI description (`openapi.json`) against the code and the server: its
//! schemas are the API types' own, it lists exactly the routes the server serves, and a real
//! node answers every documented request with a documented status and a body its schema
//! accepts. `FLOTILLA_BLESS_OPENAPI=1` rewrites the file's schemas from the types.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::collections::BTreeSet;

use flotilla_cluster::MemberStatus;
use flotilla_lease::MemoryBackend;
use flotilla_management::{OPENAPI, ROUTES, api};
use serde_json::Value;

mod common;
use common::{LIMIT, Msg, eventually, node};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn description() -> Value {
    serde_json::from_str(OPENAPI).unwrap()
}

#[test]
fn the_schemas_are_the_api_types_own() {
    let generated = Value::Object(api::schemas());
    let mut doc = description();
    if std::env::var_os("FLOTILLA_BLESS_OPENAPI").is_some() {
        doc["components"]["schemas"] = generated;
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        std::fs::write(PATH, text).unwrap();
        return;
    }
    assert_eq!(
        doc["components"]["schemas"], generated,
        "openapi.json's schemas differ from the API types: run this test with FLOTILLA_BLESS_OPENAPI=1 and review the change"
    );
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn exactly_the_served_routes_are_described() {
    let doc = description();
    let described: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(described, served);
    // Every reference points at a schema that exists.
    let schemas = doc["components"]["schemas"].as_object().unwrap().clone();
    let text = OPENAPI;
    for (i, _) in text.match_indices("#/components/schemas/") {
        let name: String = text[i + "#/components/schemas/".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        assert!(schemas.contains_key(&name), "no schema {name}");
    }
}

/// The documented response of `method path` for `status`: its media type and schema.
fn documented(doc: &Value, method: &str, path: &str, status: u16) -> (String, Value) {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which is not documented"
    );
    let (media, content) = response["content"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    (media.clone(), content["schema"].clone())
}

/// Checks one answer against the description.
async fn check(doc: &Value, method: &str, path: &str, response: reqwest::Response) -> u16 {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.unwrap();
    let (media, schema) = documented(doc, method, path, status);
    assert!(
        content_type.starts_with(&media),
        "{method} {path}: {content_type} is not the documented {media}"
    );
    if media == "application/json" {
        let value: Value = serde_json::from_str(&body).unwrap();
        // The schema with the document's components, so that its references resolve.
        let mut root = schema;
        if let Value::Object(m) = &mut root {
            m.insert("components".into(), doc["components"].clone());
        }
        let validator = jsonschema::draft202012::new(&root).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} ({status}): the body does not match its schema: {errors:#?}\n{body}"
        );
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_every_request_as_described() {
    let doc = description();
    let backend = MemoryBackend::new();
    let a = node(&backend).await;
    a.cluster.join(a.cluster.self_address().clone());
    let management = common::management(&a, &backend, "s3cret").await;
    let url = management.url();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(LIMIT).build().unwrap();
    eventually("ready", async || {
        let up = a
            .cluster
            .state()
            .members
            .iter()
            .any(|m| m.status == MemberStatus::Up);
        let ready = http
            .get(format!("{url}/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        (up && ready).then_some(())
    })
    .await;
    for i in 0..20 {
        a.region.entity_ref(&format!("e{i}")).tell(Msg::Add(1));
    }
    eventually("a lease is held", async || {
        use flotilla_lease::LeaseBackend as _;
        (!backend.list().await.unwrap().is_empty()).then_some(())
    })
    .await;

    // Every GET without parameters, and /events with and without a good `after`.
    for (method, path) in ROUTES {
        if *method != "get" {
            continue;
        }
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(check(&doc, "get", path, r).await, 200, "GET {path}");
    }
    let r = http
        .get(format!("{url}/events?after=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "get", "/events", r).await, 200);
    let r = http
        .get(format!("{url}/events?after=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "get", "/events", r).await, 400);

    // The member operation's refusals, then an accepted leave.
    let op = "/cluster/members/{address}";
    let me = flotilla_management::client::percent_encode(&a.cluster.self_address().to_string());
    let member = |address: &str| format!("{url}/cluster/members/{address}");
    let leave = serde_json::json!({"operation": "leave"});
    let r = http.put(member(&me)).json(&leave).send().await.unwrap();
    assert_eq!(check(&doc, "put", op, r).await, 401, "no token");
    let r = http
        .put(member(&me))
        .bearer_auth("s3cret")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{\"operation\": \"explode\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "put", op, r).await, 400, "bad operation");
    let r = http
        .put(member("not-an-address"))
        .bearer_auth("s3cret")
        .json(&leave)
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "put", op, r).await, 400, "bad address");
    let stranger = flotilla_management::client::percent_encode("flotilla://mgmt@127.0.0.1:1");
    let r = http
        .put(member(&stranger))
        .bearer_auth("s3cret")
        .json(&leave)
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "put", op, r).await, 404, "not a member");
    let r = http
        .put(member(&me))
        .bearer_auth("s3cret")
        .json(&leave)
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "put", op, r).await, 202, "leave");
    management.stop();
}

#[test]
fn the_check_refuses_a_body_its_schema_does_not_describe() {
    let doc = description();
    let (_, schema) = documented(&doc, "get", "/cluster/members", 200);
    let mut root = schema;
    if let Value::Object(m) = &mut root {
        m.insert("components".into(), doc["components"].clone());
    }
    let validator = jsonschema::draft202012::new(&root).unwrap();
    let good = serde_json::json!({"self": "a", "leader": null, "converged": true, "members": [
        {"address": "flotilla://s@h:1", "uid": "1", "status": "Up", "reachable": true, "roles": [],
         "up_number": 1, "phi": null}
    ]});
    assert!(validator.is_valid(&good));
    let mut bad = good;
    bad["members"][0]["uid"] = serde_json::json!(1);
    assert!(!validator.is_valid(&bad), "a nested reference is checked");
}
