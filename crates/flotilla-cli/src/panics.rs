//! Panics, logged: the `flotilla` command replaces the default panic hook (which prints a
//! multi-line report to stderr, outside the log) with one that logs each panic as one line at
//! error level, with the thread, where it happened and its message.
//!
//! A panic inside an actor is a failure its supervisor handles and logs too (at warn when it
//! restarts or resumes the actor, at error when it stops it, with the actor's path); this line
//! says where in the code it happened. A panic message is not a secret: it carries no setting's
//! value unless code puts one there, and Flotilla's code does not.

/// Installs the hook (process-wide; the last one installed wins).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let message = message(info.payload());
        tracing::error!(%location, thread, "panic in thread {thread} at {location}: {message}");
    }));
}

/// A panic payload's text (`panic!` gives a `&str` or a `String`).
fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic with a non-string payload")
}
