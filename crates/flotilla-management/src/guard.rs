//! What every request passes before a handler sees it, as two router layers (outermost first):
//!
//! 1. [`check_host`]: the `Host` header (and an absolute-form request target's authority) must
//!    name an IP address, `localhost`, the bound `hostname` or one of `allowed-hosts`; anything
//!    else is answered 421. This defeats DNS rebinding: a web page on `evil.example` whose name
//!    is rebound to 127.0.0.1 can make the victim's browser connect here, but the browser still
//!    sends `Host: evil.example`. IP-literal hosts are always allowed, because a rebinding attack
//!    needs a domain name (the browser's same-origin policy keys on it); an origin that *is* an
//!    IP address cannot be rebound. A request without `Host` (HTTP/1.0) is let through.
//! 2. [`require_token`]: with a token configured, every request but `GET` and `HEAD` needs
//!    `Authorization: Bearer <token>`, whatever its route, so a mutating route added later is
//!    covered without remembering to check.
//!
//! Refusals are counted (`flotilla_management_requests_refused_total{reason}`) and logged at
//! debug at most, with the offending header escaped, so a flood of them floods no log.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::NodeView;
use crate::server::error;

/// The most characters of a refused `Host` header written to the debug log.
const LOGGED_HOST_CHARS: usize = 80;

/// Which names the `Host` header may carry (IP literals are always allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPolicy {
    /// Lower case, without a trailing dot.
    names: BTreeSet<String>,
}

/// What the host part of an authority (`host[:port]`) is.
#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    /// An IPv4 address or a bracketed IPv6 address.
    Ip,
    /// Anything else: a name to look up in the policy.
    Name(&'a str),
}

impl HostPolicy {
    /// `localhost`, the bind `hostname` (when it is a name) and the `allowed-hosts`.
    pub(crate) fn new(hostname: &str, allowed: &[String]) -> Self {
        let names = std::iter::once("localhost")
            .chain(std::iter::once(hostname))
            .chain(allowed.iter().map(String::as_str))
            .map(normalise)
            .filter(|n| !n.is_empty() && n.parse::<IpAddr>().is_err())
            .collect();
        Self { names }
    }

    /// Whether a request naming `authority` (a `Host` header's value) is answered.
    pub(crate) fn allows(&self, authority: &str) -> bool {
        match host_of(authority) {
            Some(Host::Ip) => true,
            Some(Host::Name(name)) => self.names.contains(&normalise(name)),
            None => false,
        }
    }
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of `host[:port]` or `[v6][:port]`; `None` when it is malformed.
fn host_of(authority: &str) -> Option<Host<'_>> {
    let port_ok = |port: &str| port.is_empty() || port.parse::<u16>().is_ok();
    if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<Ipv6Addr>().ok()?;
        return match after.strip_prefix(':') {
            Some(port) if port_ok(port) => Some(Host::Ip),
            None if after.is_empty() => Some(Host::Ip),
            _ => None,
        };
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port_ok(port) => host,
        Some(_) => return None,
        None => authority,
    };
    if host.is_empty() || host.contains(':') {
        return None; // an unbracketed IPv6 address, or worse
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Some(Host::Ip);
    }
    Some(Host::Name(host))
}

/// Printable ASCII as is, everything else escaped, at most [`LOGGED_HOST_CHARS`] characters.
fn escaped(raw: &[u8]) -> String {
    let mut out: String = raw.escape_ascii().to_string();
    if out.len() > LOGGED_HOST_CHARS {
        out.truncate(LOGGED_HOST_CHARS);
        out.push('…');
    }
    out
}

/// Why a request's host was refused, for the log; `None` when it is allowed.
fn refused_host(policy: &HostPolicy, request: &Request) -> Option<String> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Some("more than one Host header".into());
    }
    if let Some(value) = first {
        let allowed = value.to_str().is_ok_and(|v| policy.allows(v));
        if !allowed {
            return Some(format!("Host \"{}\"", escaped(value.as_bytes())));
        }
    }
    if let Some(authority) = request.uri().authority()
        && !policy.allows(authority.as_str())
    {
        return Some(format!(
            "request target authority \"{}\"",
            escaped(authority.as_str().as_bytes())
        ));
    }
    None
}

/// Layer 1: answers 421 to a request for a host this endpoint does not serve.
pub(crate) async fn check_host(
    State(view): State<Arc<NodeView>>,
    request: Request,
    next: Next,
) -> Response {
    match refused_host(&view.hosts, &request) {
        None => next.run(request).await,
        Some(why) => {
            metrics::counter!("flotilla_management_requests_refused_total", "reason" => "host")
                .increment(1);
            tracing::debug!("management endpoint: refused a request for {why}");
            error(
                StatusCode::MISDIRECTED_REQUEST,
                "this endpoint does not serve that Host (use its IP address, localhost, or a name \
                 in management.allowed-hosts)",
            )
        }
    }
}

/// Whether `headers` carry the bearer token (always, when none is configured).
pub(crate) fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// Compares the SHA-256 digests of the two, every byte: the time taken says nothing about
/// where they differ, nor about the token's length (a plain comparison stops at a length
/// mismatch).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Layer 2: answers 401 to a request that may change something and lacks the token.
pub(crate) async fn require_token(
    State(view): State<Arc<NodeView>>,
    request: Request,
    next: Next,
) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if safe || authorized(view.token.as_deref(), request.headers()) {
        return next.run(request).await;
    }
    metrics::counter!("flotilla_management_requests_refused_total", "reason" => "token")
        .increment(1);
    tracing::debug!(
        "management endpoint: refused {} {} without the bearer token",
        request.method(),
        request.uri().path()
    );
    error(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs Authorization: Bearer <management.token>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_the_bind_name_and_allowed_names_are_served() {
        let policy = HostPolicy::new("Node-1.internal.", &["Flotilla.Example.com".into()]);
        for host in [
            "127.0.0.1",
            "127.0.0.1:8558",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:8558",
            "[fe80::1]:",
            "localhost",
            "LOCALHOST:8558",
            "localhost.:8558",
            "node-1.internal:8558",
            "flotilla.example.com",
            "flotilla.example.com.:443",
        ] {
            assert!(policy.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8558",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "::1",
            "[::1",
            "[not-an-ip]:80",
            "[::1]x",
            "127.0.0.1:port",
            "127.0.0.1:99999",
            ":8558",
            "",
            "0x7f.1",
        ] {
            assert!(!policy.allows(host), "{host}");
        }
    }

    #[test]
    fn an_ip_bind_address_adds_no_name() {
        let policy = HostPolicy::new("0.0.0.0", &[]);
        assert_eq!(
            policy.names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["localhost"]
        );
        assert!(!policy.allows("evil.example"));
    }

    #[test]
    fn logged_hosts_are_escaped_and_short() {
        assert_eq!(escaped(b"evil.example:8558"), "evil.example:8558");
        assert_eq!(escaped(b"a\tb\x1b[31m\xff"), "a\\tb\\x1b[31m\\xff");
        let long = escaped(&[b'a'; 500]);
        assert_eq!(long.chars().count(), LOGGED_HOST_CHARS + 1);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        let mut headers = HeaderMap::new();
        assert!(authorized(None, &headers));
        assert!(!authorized(Some("secret"), &headers));
        headers.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(authorized(Some("secret"), &headers));
        assert!(!authorized(Some("other"), &headers));
    }
}
