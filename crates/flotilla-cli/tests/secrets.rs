//! No secret is ever printed: two `flotilla node` processes on 127.0.0.1, configured with
//! distinctive secrets — the cluster's `remote.secret` and the etcd password in the
//! configuration file, the management token in the environment — with their shard leases in a
//! real etcd that has authentication on. Everything they print is captured (stdout, and their
//! log on stderr at debug level), and so is every answer of their management endpoints: every
//! route, refused operations (no token, a wrong token, a bad address), and `/leases` failing once
//! etcd is gone; so are a third node's output when etcd refuses its wrong password, and the
//! operator commands' output. None of it may contain a secret. The same for a node whose leases
//! are in Azure Blob Storage (Azurite) with a SAS token, before and after the service goes away.
//!
//! Every process is started here and ended here, by PID. Every wait is bounded.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla::lease_azure::testing::AzuriteServer;
use flotilla::lease_etcd::testing::EtcdServer;
use flotilla_cli::node::NodeProcess;

const LIMIT: Duration = Duration::from_secs(60);

/// The cluster's shared secret (remoting), in the configuration file.
const REMOTE_SECRET: &str = "remote-secret-Q7vX2mN9pL4wJ6";
/// The management endpoint's bearer token, in the environment.
const MANAGEMENT_TOKEN: &str = "mgmt-token-K8sD3fR6tY1uB0";
/// The etcd password, in the configuration file.
const ETCD_PASSWORD: &str = "etcd-pw-H5jW2cV9bN7eM4";
/// A wrong etcd password, which etcd refuses.
const WRONG_ETCD_PASSWORD: &str = "wrong-etcd-pw-Z3xQ8mL1sA";
/// A wrong bearer token, which the endpoint refuses.
const WRONG_TOKEN: &str = "wrong-token-P4gT7kR2vC9";

const SECRETS: [&str; 5] = [
    REMOTE_SECRET,
    MANAGEMENT_TOKEN,
    ETCD_PASSWORD,
    WRONG_ETCD_PASSWORD,
    WRONG_TOKEN,
];

fn config(endpoint: &str, password: &str) -> String {
    format!(
        r#"
[remote]
secret = "{REMOTE_SECRET}"

[lease]
backend = "etcd"

[lease.etcd]
endpoints = ["{endpoint}"]
user = "root"
password = "{password}"
request-timeout = "1s"
connect-timeout = "1s"

[sharding]
use-lease = true
"#
    )
}

/// `flotilla node` with the configuration file `config`, its log (debug level) going to
/// `log`; no secret is an argument.
fn node_command(config: &Path, log: &Path, seed: Option<&str>) -> (Command, Stdio) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args(["node", "--system", "secrets", "--port", "0", "--fast"]);
    cmd.args(["--management-port", "0", "--sharded-counters", "20"]);
    cmd.args(["--shards", "4"]);
    cmd.arg("--config").arg(config);
    if let Some(seed) = seed {
        cmd.args(["--seed", seed]);
    }
    cmd.env("FLOTILLA__MANAGEMENT__TOKEN", MANAGEMENT_TOKEN)
        .env("RUST_LOG", "debug")
        .env_remove("FLOTILLA_ENDPOINT");
    let log = std::fs::File::create(log).unwrap();
    (cmd, log.into())
}

fn start(config: &Path, log: &Path, seed: Option<&str>) -> NodeProcess {
    let (cmd, stderr) = node_command(config, log, seed);
    NodeProcess::spawn_with_stderr(cmd, LIMIT, stderr).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `host:port` of the node's management endpoint.
fn endpoint(node: &mut NodeProcess) -> String {
    let (_, line) = node
        .wait_for(LIMIT, |l| l.starts_with("management "))
        .unwrap_or_else(|e| panic!("{e:#}"));
    line.trim_start_matches("management http://").to_owned()
}

/// One HTTP/1.1 request; the whole answer (status line, headers, body) as text.
fn http(endpoint: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(endpoint).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Runs `flotilla <args>` with the management token in the environment; its stdout and stderr.
fn flotilla(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("FLOTILLA__MANAGEMENT__TOKEN", MANAGEMENT_TOKEN)
        .env_remove("FLOTILLA_ENDPOINT")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every GET route of the management API, as listed by the crate.
fn get_routes() -> Vec<String> {
    flotilla::management::ROUTES
        .iter()
        .filter(|(method, _)| *method == "get")
        .map(|(_, path)| (*path).to_owned())
        .chain(["/events?after=0".to_owned(), "/no/such/route".to_owned()])
        .collect()
}

#[test]
fn no_secret_is_printed_in_logs_output_or_management_answers() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut etcd = runtime.block_on(EtcdServer::start()).unwrap();
    runtime
        .block_on(etcd.enable_auth("root", ETCD_PASSWORD))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("node.toml");
    std::fs::write(&good, config(&etcd.endpoint(), ETCD_PASSWORD)).unwrap();
    let logs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| dir.path().join(format!("node-{n}.log")))
        .collect();
    // Everything printed or answered, to be searched at the end.
    let mut printed: Vec<(String, String)> = Vec::new();

    let mut a = start(&good, &logs[0], None);
    let seed = a.address().to_owned();
    let mut b = start(&good, &logs[1], Some(&seed));
    for node in [&mut a, &mut b] {
        node.wait_for(LIMIT, |l| {
            l.starts_with("event MemberUp") && l.contains(&seed)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let (ea, eb) = (endpoint(&mut a), endpoint(&mut b));
    // The shards hold their leases in etcd, with the password.
    until("leases held in etcd", || {
        let answer = http(&ea, "GET", "/leases", None, "");
        status(&answer) == 200 && answer.contains("secrets-shard-counter")
    });

    for e in [&ea, &eb] {
        for path in get_routes() {
            let answer = http(e, "GET", &path, None, "");
            printed.push((format!("GET {path}"), answer));
        }
    }
    let member = format!(
        "/cluster/members/{}",
        b.address().trim_start_matches("flotilla://")
    );
    let leave = r#"{"operation": "leave"}"#;
    let refused = [
        ("no token", http(&ea, "PUT", &member, None, leave)),
        (
            "a wrong token",
            http(&ea, "PUT", &member, Some(WRONG_TOKEN), leave),
        ),
        (
            "a bad address",
            http(
                &ea,
                "PUT",
                "/cluster/members/not-an-address",
                Some(MANAGEMENT_TOKEN),
                leave,
            ),
        ),
    ];
    for (what, answer) in refused {
        assert!(
            (400..500).contains(&status(&answer)),
            "{what}: refused, got {answer}"
        );
        printed.push((format!("PUT with {what}"), answer));
    }
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{MANAGEMENT_TOKEN}\n")).unwrap();
    let token_file = token_file.display().to_string();
    for args in [
        vec!["status", "--endpoint", &ea],
        vec!["leave", "not-an-address", "--endpoint", &ea],
        vec![
            "down",
            "not-an-address",
            "--endpoint",
            &ea,
            "--token-file",
            &token_file,
        ],
    ] {
        let out = flotilla(&args);
        assert!(args[0] == "status" || out.contains("400"), "{out}");
        printed.push((format!("flotilla {args:?}"), out));
    }

    // A node with a wrong etcd password: refused at start.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, config(&etcd.endpoint(), WRONG_ETCD_PASSWORD)).unwrap();
    let (mut cmd, stderr) = node_command(&wrong, &logs[2], Some(&seed));
    let mut c = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let exit = loop {
        if let Some(status) = c.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("a node with a wrong etcd password did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!exit.success(), "a wrong etcd password stops the node");
    let mut out = String::new();
    if let Some(mut stdout) = c.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    printed.push(("the refused node's stdout".into(), out));
    let refused_log = std::fs::read_to_string(&logs[2]).unwrap();
    assert!(
        refused_log.contains("authentication failed"),
        "the refusal says why: {refused_log}"
    );

    // etcd goes away: /leases answers 502 with the backend's error.
    etcd.kill();
    let answer = http(&ea, "GET", "/leases", None, "");
    assert_eq!(status(&answer), 502, "{answer}");
    printed.push(("GET /leases without etcd".into(), answer));
    printed.push((
        "flotilla leases without etcd".into(),
        flotilla(&["leases", "--node", &ea]),
    ));

    // Both leave; their logs then hold the lease failures and the shutdown too.
    for node in [&mut b, &mut a] {
        node.terminate().unwrap_or_else(|e| panic!("{e:#}"));
        node.wait_exit(LIMIT).unwrap_or_else(|e| panic!("{e:#}"));
    }
    for (name, node) in [("a", &mut a), ("b", &mut b)] {
        let lines: Vec<String> = node.lines().iter().map(|(_, l)| l.clone()).collect();
        assert!(
            lines.iter().any(|l| l.starts_with("shutdown ")),
            "{lines:?}"
        );
        printed.push((format!("node {name}'s stdout"), lines.join("\n")));
    }
    for (i, log) in logs.iter().enumerate() {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("DEBUG"), "node {i} logged at debug level");
        printed.push((format!("{}", log.display()), text));
    }

    for (what, text) in &printed {
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{what} shows the secret {secret:?}:\n{text}"
            );
        }
    }
}

/// Azure Blob Storage with a SAS token (in the environment, `--lease-azure`): the token rides in
/// every request's URL, and no log line, output or `/leases` answer shows it — also not once the
/// service is gone and every request fails.
#[test]
fn no_sas_token_is_printed_when_azure_fails() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let azurite = runtime.block_on(AzuriteServer::start()).unwrap();
    let sas = azurite.sas_connection_string();
    let signature = sas.rsplit_once("sig=").unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[remote]\nsecret = \"{REMOTE_SECRET}\"\n[lease.azure]\nrequest-timeout = \"1s\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("node.log");
    let (mut cmd, stderr) = node_command(&config, &log, None);
    cmd.arg("--lease-azure")
        .env("FLOTILLA__LEASE__AZURE__CONNECTION_STRING", &sas);
    let mut node =
        NodeProcess::spawn_with_stderr(cmd, LIMIT, stderr).unwrap_or_else(|e| panic!("{e:#}"));
    let e = endpoint(&mut node);
    until("leases held in Azure", || {
        let answer = http(&e, "GET", "/leases", None, "");
        status(&answer) == 200
            && answer.contains("\"backend\":\"azure\"")
            && answer.contains("secrets-shard-counter")
    });
    let mut printed = vec![(
        "GET /leases".to_owned(),
        http(&e, "GET", "/leases", None, ""),
    )];

    drop(azurite);
    let answer = http(&e, "GET", "/leases", None, "");
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(answer.contains("Azure request failed"), "{answer}");
    printed.push(("GET /leases without Azure".into(), answer));
    // Renewals fail for a while, and are logged.
    std::thread::sleep(Duration::from_secs(3));
    node.terminate().unwrap_or_else(|e| panic!("{e:#}"));
    node.wait_exit(LIMIT).unwrap_or_else(|e| panic!("{e:#}"));
    let lines: Vec<String> = node.lines().iter().map(|(_, l)| l.clone()).collect();
    printed.push(("stdout".into(), lines.join("\n")));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("DEBUG"), "logged at debug level");
    printed.push(("log".into(), log));

    for (what, text) in &printed {
        for secret in [signature.as_str(), "sig=", REMOTE_SECRET] {
            assert!(
                !text.contains(secret),
                "{what} shows the secret {secret:?}:\n{text}"
            );
        }
    }
}
