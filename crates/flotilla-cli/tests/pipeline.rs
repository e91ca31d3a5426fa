//! The supervised-pipeline walkthrough, as a library call and as `flotilla pipeline`.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_cli::pipeline::{DemoOptions, Narrator, run};

#[tokio::test(start_paused = true)]
async fn the_pipeline_restarts_the_parser_loses_nothing_and_shuts_down_cleanly() {
    let narrator = Narrator::default();
    let summary = run(DemoOptions::default(), narrator.clone()).await.unwrap();
    assert_eq!(summary.numbers, 5);
    assert_eq!(summary.total, 7 + 11 + 5 + 13 + 2);
    assert_eq!(
        summary.parser_incarnations, 4,
        "three failures, three restarts"
    );
    assert_eq!(
        summary.dead_letters, 1,
        "only the message sent after termination"
    );
    assert!(summary.shutdown.report.is_clean());
    let lines = narrator.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("parser   crashed: panicked")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("saw flotilla://demo/user/parser stop")),
        "{lines:#?}"
    );
}

fn flotilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
}

#[test]
fn the_cli_pipeline_runs_to_completion() {
    let out = flotilla()
        .args(["pipeline", "--pace-ms", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("summary: 5 numbers summed to 38; the parser ran as 4 incarnations"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every task finished in time; every actor has stopped"),
        "{stdout}"
    );
}

#[test]
fn sigterm_runs_coordinated_shutdown_and_exits_cleanly() {
    let mut child = flotilla()
        .args(["pipeline", "--pace-ms", "1", "--hold"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("running until SIGTERM") {
        assert!(
            Instant::now() < deadline,
            "the demo never got ready: {seen}"
        );
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("the demo exited early: {seen}");
        }
        seen.push_str(&line);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{rest}");
    assert!(
        rest.contains("coordinated shutdown (the process received SIGTERM)"),
        "{rest}"
    );
    assert!(rest.contains("every actor has stopped"), "{rest}");
}
