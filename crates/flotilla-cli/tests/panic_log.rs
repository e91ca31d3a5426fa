//! The `flotilla` command's panic hook logs a panic at error level, with its message and where
//! it happened (a test binary of its own: the hook and the log subscriber are process-wide).

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_is_logged_at_error_level_with_its_message_and_place() {
    let captured = Captured::default();
    let writer = captured.clone();
    // The command logs at warn and above unless RUST_LOG says otherwise.
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap_or_else(|e| panic!("{e}"));
    flotilla_cli::panics::log_panics();

    let joined = std::thread::Builder::new()
        .name("doomed".into())
        .spawn(|| panic!("the answer was {}", 41))
        .unwrap_or_else(|e| panic!("{e}"))
        .join();
    assert!(joined.is_err(), "the thread panicked");
    let _ = std::panic::take_hook();

    let log = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    let line = log
        .lines()
        .find(|l| l.contains("the answer was 41"))
        .unwrap_or_else(|| panic!("no log line with the panic's message in:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("doomed"), "{line}");
    assert!(line.contains("panic_log.rs"), "{line}");
}
