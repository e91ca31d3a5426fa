//! Error texts without secrets.
//!
//! A request URL carries the SAS token in its query string, and reqwest writes the URL into an
//! error's text (`error sending request for url (…?sv=…&sig=…)`). Every error this crate builds
//! goes through here, so that neither a SAS token nor an account key ever reaches an error, a
//! log line or the management API's answer.

use reqwest::Url;

/// A URL as it may be shown: scheme, host, port and path only — no user name, password, query
/// string or fragment.
pub(crate) fn url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // Both only fail for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// A reqwest error in words, with its causes (its own text is only "error sending request"),
/// and without the request's URL.
pub(crate) fn reqwest_error(e: reqwest::Error) -> String {
    flotilla_core::error_chain(&e.without_url())
}

/// `text` with every occurrence of a secret replaced: each `sig=` value, and each of `secrets`
/// (the SAS token as configured, say) — in case a cause below reqwest quoted a URL after all.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "<redacted>");
    }
    let mut scrubbed = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("sig=") {
        scrubbed.push_str(&rest[..i + "sig=".len()]);
        rest = &rest[i + "sig=".len()..];
        let end = rest
            .find(|c: char| c == '&' || c == ')' || c == '"' || c.is_whitespace())
            .unwrap_or(rest.len());
        if end > 0 {
            scrubbed.push_str("<redacted>");
        }
        rest = &rest[end..];
    }
    scrubbed.push_str(rest);
    scrubbed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_has_no_credentials_query_or_fragment() {
        let u = Url::parse("https://user:pw@acme.blob.core.windows.net/leases/x?sv=1&sig=abc#f")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url(&u), "https://acme.blob.core.windows.net/leases/x");
    }

    #[test]
    fn signatures_and_named_secrets_are_scrubbed() {
        assert_eq!(
            scrub(
                "for url (http://h/c?sv=1&sig=AbC%2B%3D&se=2) and sig=x",
                &["sv=1"]
            ),
            "for url (http://h/c?<redacted>&sig=<redacted>&se=2) and sig=<redacted>"
        );
        assert_eq!(scrub("nothing here", &[""]), "nothing here");
    }
}
