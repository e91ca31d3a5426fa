//! The etcd API code under `src/api/` is what the definitions under `proto/` generate: compiled
//! again here with protox (a protobuf compiler in Rust, so no `protoc` is needed) and compared.
//! `FLOTILLA_REGENERATE=1` writes the fresh code instead of comparing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The generated files kept, one per protobuf package the client uses.
const KEPT: &[&str] = &["etcdserverpb.rs", "mvccpb.rs", "authpb.rs"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(into: &Path) {
    let proto = crate_dir().join("proto");
    let fds = protox::compile(
        [
            "etcd/api/etcdserverpb/rpc.proto",
            "etcd/api/mvccpb/kv.proto",
            "etcd/api/authpb/auth.proto",
        ],
        [&proto],
    )
    .unwrap_or_else(|e| panic!("compiling the etcd definitions: {e:?}"));
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(into)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating Rust from the etcd definitions: {e}"));
}

#[test]
fn generated_api_matches_the_definitions() {
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let checked_in = crate_dir().join("src/api");
    let regenerate = std::env::var_os("FLOTILLA_REGENERATE").is_some();
    let mut stale = Vec::new();
    for name in KEPT {
        let new = std::fs::read_to_string(fresh.path().join(name))
            .unwrap_or_else(|e| panic!("{name} was not generated: {e}"));
        let path = checked_in.join(name);
        if regenerate {
            std::fs::write(&path, &new).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(new.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "the checked-in etcd API code differs from what proto/ generates: {stale:?}; \
         run `FLOTILLA_REGENERATE=1 cargo test -p flotilla-etcd --test generated` and commit"
    );
}
