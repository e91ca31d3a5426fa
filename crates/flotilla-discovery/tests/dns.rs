//! DNS discovery against a real DNS server (dnsmasq) on 127.0.0.1: A/AAAA records, SRV records
//! with targets that resolve and one that does not, a name that does not exist, and a name
//! server that does not answer.

use std::time::Duration;

use flotilla_core::{DiscoveryMethod, DiscoverySettings};
use flotilla_discovery::testing::{DnsServer, Record};
use flotilla_discovery::{ContactPoint, DiscoveryError, DnsDiscovery, ServiceDiscovery};

fn ip(name: &str, ip: &str) -> Record {
    Record::Ip {
        name: name.into(),
        ip: ip.parse().unwrap_or_else(|e| panic!("{e}")),
    }
}

fn srv(target: &str, port: u16) -> Record {
    Record::Srv {
        name: "_remoting._tcp.app.flotilla.test".into(),
        target: target.into(),
        port,
    }
}

async fn server() -> DnsServer {
    DnsServer::start(&[
        ip("app.flotilla.test", "127.0.0.11"),
        ip("app.flotilla.test", "127.0.0.12"),
        ip("app.flotilla.test", "::1"),
        ip("node-a.flotilla.test", "127.0.0.21"),
        ip("node-b.flotilla.test", "127.0.0.22"),
        srv("node-a.flotilla.test", 2552),
        srv("node-b.flotilla.test", 2553),
        srv("gone.flotilla.test", 2554),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn settings(dns: &str, service: &str, port_name: &str) -> DiscoverySettings {
    DiscoverySettings {
        method: DiscoveryMethod::Dns,
        service_name: service.into(),
        port_name: port_name.into(),
        nameservers: vec![dns.into()],
        resolve_timeout: Duration::from_secs(2),
        ..DiscoverySettings::default()
    }
}

fn point(host: &str, port: Option<u16>) -> ContactPoint {
    ContactPoint {
        host: host.into(),
        port,
    }
}

async fn lookup(s: &DiscoverySettings) -> Result<Vec<ContactPoint>, DiscoveryError> {
    let d = DnsDiscovery::new(s).unwrap_or_else(|e| panic!("{e}"));
    let mut points = d.lookup().await?;
    points.sort();
    Ok(points)
}

#[tokio::test]
async fn a_and_aaaa_records_are_contact_points_without_ports() {
    let dns = server().await;
    let got = lookup(&settings(&dns.address(), "app.flotilla.test", "")).await;
    assert_eq!(
        got,
        Ok(vec![
            point("127.0.0.11", None),
            point("127.0.0.12", None),
            point("::1", None)
        ])
    );
}

#[tokio::test]
async fn srv_records_give_each_target_with_its_port() {
    let dns = server().await;
    let s = settings(&dns.address(), "app.flotilla.test", "remoting");
    assert_eq!(
        DnsDiscovery::new(&s).map(|d| d.name().to_owned()),
        Ok("_remoting._tcp.app.flotilla.test".to_owned())
    );
    let got = lookup(&s).await;
    // A target that does not resolve stays a contact point by name.
    assert_eq!(
        got,
        Ok(vec![
            point("127.0.0.21", Some(2552)),
            point("127.0.0.22", Some(2553)),
            point("gone.flotilla.test", Some(2554)),
        ])
    );
}

#[tokio::test]
async fn a_name_that_does_not_exist_and_a_silent_server_are_errors() {
    let dns = server().await;
    let missing = lookup(&settings(&dns.address(), "nope.flotilla.test", "")).await;
    assert!(
        matches!(&missing, Err(DiscoveryError::Lookup { method: "dns", what, .. }) if what == "nope.flotilla.test"),
        "{missing:?}"
    );
    // Nobody listens on this port: the lookup fails within resolve-timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = silent
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let started = std::time::Instant::now();
    let got = lookup(&settings(&address, "app.flotilla.test", "")).await;
    assert!(matches!(got, Err(DiscoveryError::Lookup { .. })), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_settings_are_named() {
    let no_name = DiscoverySettings {
        method: DiscoveryMethod::Dns,
        ..DiscoverySettings::default()
    };
    assert!(matches!(
        DnsDiscovery::new(&no_name),
        Err(DiscoveryError::Config(_))
    ));
    let bad_ns = settings("localhost", "app", "");
    let err = DnsDiscovery::new(&bad_ns)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"localhost\" is not ip:port"), "{err}");
}
