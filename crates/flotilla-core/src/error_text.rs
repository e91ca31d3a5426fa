//! An error in words, with its causes.

/// `e`'s text followed by each cause's that adds something (`: `-separated): many errors say
/// only "error sending request" or "transport error" themselves, and the reason is below.
///
/// ```
/// let e = std::io::Error::other(std::fmt::Error);
/// assert_eq!(flotilla_core::error_chain(&e), "an error occurred when formatting an argument");
/// ```
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
