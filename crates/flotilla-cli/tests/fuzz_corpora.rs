//! Replays the fuzz corpora of the gossip, configuration, management and handshake targets
//! (`fuzz/corpus/<target>`) through the targets' own code on every test run, and keeps each
//! corpus's seed inputs (`seed-*`) as the code below writes them (`FLOTILLA_WRITE_SEEDS=1`
//! rewrites them). The frames corpus is replayed by flotilla-wire's own test.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Writes the seeds if asked, checks they are in the corpus, and runs every input.
fn replay(target: &str, seeds: &[Vec<u8>], run: impl Fn(&[u8])) {
    let dir = corpus(target);
    if std::env::var_os("FLOTILLA_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
    for (i, seed) in seeds.iter().enumerate() {
        let kept = std::fs::read(dir.join(format!("seed-{i}"))).unwrap_or_else(|e| {
            panic!("{target}/seed-{i}: {e} (FLOTILLA_WRITE_SEEDS=1 writes the seeds)")
        });
        assert_eq!(
            &kept, seed,
            "{target}/seed-{i} changed: FLOTILLA_WRITE_SEEDS=1 rewrites the seeds"
        );
    }
    let mut replayed = 0;
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus at {}: {e}", dir.display()));
    for entry in entries.flatten() {
        run(&std::fs::read(entry.path()).unwrap());
        replayed += 1;
    }
    assert!(replayed >= seeds.len(), "only {replayed} {target} inputs");
}

#[test]
fn the_gossip_corpus_replays() {
    replay(
        "gossip",
        &gossip_seeds(),
        flotilla::cluster::fuzzing::gossip,
    );
}

#[test]
fn the_handshake_corpus_replays() {
    replay(
        "handshake",
        &flotilla::proto::handshake::fuzzing::seed_inputs(),
        flotilla::proto::handshake::fuzzing::handshake,
    );
}

#[test]
fn the_config_corpus_replays() {
    replay("config", &config_seeds(), flotilla::core::fuzzing::config);
}

#[test]
fn the_management_corpus_replays() {
    let harness = flotilla::management::fuzzing::Harness::new();
    replay("management", &management_seeds(), |data| {
        harness.request(data)
    });
}

/// Documents that reach every section, values of every kind, and environment overrides.
fn config_seeds() -> Vec<Vec<u8>> {
    let doc = include_str!("../../../docs/configuration.md");
    let mut out: Vec<Vec<u8>> = Vec::new();
    // The documentation's TOML examples.
    for block in doc.split("```toml\n").skip(1) {
        out.push(block.split("```").next().unwrap().as_bytes().to_vec());
    }
    out.push(
        b"[cluster.failure-detector]\nthreshold = 12.5\n\n[remote.tls]\ncertificate = \"a\"\nprivate-key = \"b\"\ntrusted-ca = \"c\"\n"
            .to_vec(),
    );
    out.push(
        b"[sharding]\nnumber-of-shards = 10\n---\nSHARDING__USE_LEASE=true\nCLUSTER__SPLIT_BRAIN_RESOLVER__STABLE_AFTER=5s\nMANAGEMENT__PORT=9000\n"
            .to_vec(),
    );
    out.push(b"[coordinated-shutdown.phases.cluster-leave]\ntimeout = \"1m 30s\"\n[lease]\nowner = \"x\"\nsafety-margin = \"1s\"\n".to_vec());
    out
}

/// Every kind of message of a short simulated cluster life, encoded.
fn gossip_seeds() -> Vec<Vec<u8>> {
    flotilla::cluster::fuzzing::seed_messages()
}

/// Requests to every route, good and bad: method byte, flags byte (1 token, 2 JSON), path,
/// newline, body.
fn management_seeds() -> Vec<Vec<u8>> {
    let request = |method: u8, flags: u8, path: &str, body: &str| {
        let mut v = vec![method, flags];
        v.extend_from_slice(path.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(body.as_bytes());
        v
    };
    let member = "/cluster/members/flotilla%3A%2F%2Ffuzz%40127.0.0.1%3A2552";
    let mut out = Vec::new();
    for (_, path) in flotilla::management::ROUTES {
        out.push(request(0, 0, path, ""));
    }
    out.push(request(0, 0, "/events?after=3", ""));
    out.push(request(0, 0, "/events?after=-1", ""));
    out.push(request(1, 3, member, "{\"operation\": \"leave\"}"));
    out.push(request(1, 3, member, "{\"operation\": \"down\"}"));
    out.push(request(1, 1, member, "{\"operation\": \"leave\"}"));
    out.push(request(1, 2, member, "{\"operation\": \"leave\"}"));
    out.push(request(1, 3, "/cluster/members/fuzz@127.0.0.1", "{}"));
    out.push(request(1, 3, member, "[1, 2"));
    out.push(request(2, 0, "/status", ""));
    out.push(request(3, 0, "/no/such/route", ""));
    // Found by the fuzzer: a bad percent-encoding in the path got a plain-text 400.
    out.push(request(
        1,
        3,
        "/cluster/members/flotilla%3A%2%F2Ffuzz%40127.0.0.1%3A2552",
        "{\"operation\": \"leave\"}",
    ));
    out
}
