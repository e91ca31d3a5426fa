//! Mutual TLS between nodes: certificates made on the fly by a test CA.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::path::Path;
use std::time::Duration;

use common::{fast_settings, next};
use flotilla_core::{Address, TlsSettings};
use flotilla_proto::association::StateName;
use flotilla_remote::{Inbound, RemoteNode, StartError};
use flotilla_wire::UserEnvelope;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA that signs node certificates for 127.0.0.1.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Writes `<name>.crt`, `<name>.key` and `ca.crt` into `dir`; returns the settings.
    fn node_files(&self, dir: &Path, name: &str) -> TlsSettings {
        self.node_files_for(dir, name, "127.0.0.1")
    }

    /// As [`Ca::node_files`], with a certificate valid for `host` only.
    fn node_files_for(&self, dir: &Path, name: &str, host: &str) -> TlsSettings {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .signed_by(&key, &self.0)
            .unwrap();
        let settings = TlsSettings {
            certificate: dir.join(format!("{name}.crt")),
            private_key: dir.join(format!("{name}.key")),
            trusted_ca: dir.join(format!("{name}-ca.crt")),
            reload_interval: Duration::from_millis(200),
        };
        std::fs::write(&settings.certificate, cert.pem()).unwrap();
        std::fs::write(&settings.private_key, key.serialize_pem()).unwrap();
        std::fs::write(&settings.trusted_ca, self.0.pem()).unwrap();
        settings
    }
}

fn start(tls: TlsSettings) -> (RemoteNode, flotilla_remote::InboundReceiver) {
    let settings = flotilla_core::RemoteSettings {
        tls: Some(tls),
        ..fast_settings()
    };
    RemoteNode::start(&Address::remote("sim", "127.0.0.1", 0).unwrap(), settings).unwrap()
}

/// The cause of the next association that gates.
async fn gated(rx: &mut flotilla_remote::InboundReceiver) -> String {
    next(rx, |x| match x {
        Inbound::Association {
            to: StateName::Gated,
            cause,
            ..
        } => Some(cause),
        _ => None,
    })
    .await
}

fn hello() -> UserEnvelope {
    UserEnvelope {
        recipient: "/user/x".into(),
        sender: None,
        manifest: "m".into(),
        payload: b"over tls".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_certificates_from_the_trusted_ca_associate_and_others_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (a, _a_in) = start(ca.node_files(dir.path(), "a"));
    let (b, mut b_in) = start(ca.node_files(dir.path(), "b"));
    a.send_user(&b.local().address, hello()).unwrap();
    let got = next(&mut b_in, |x| match x {
        Inbound::User { messages, .. } => Some(common::only(&messages)),
        _ => None,
    })
    .await;
    assert_eq!(got.payload, b"over tls");

    // A node whose certificate comes from another CA cannot associate with b.
    let stranger_ca = Ca::new();
    let (c, mut c_in) = start(stranger_ca.node_files(dir.path(), "c"));
    c.send_user(&b.local().address, hello()).unwrap();
    let cause = gated(&mut c_in).await;
    assert!(cause.contains("TLS"), "{cause}");

    // A node without TLS at all cannot either.
    let (plain, mut plain_in) = RemoteNode::start(
        &Address::remote("sim", "127.0.0.1", 0).unwrap(),
        fast_settings(),
    )
    .unwrap();
    plain.send_user(&b.local().address, hello()).unwrap();
    next(&mut plain_in, |x| match x {
        Inbound::Association {
            to: StateName::Gated,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    // Nothing from the stranger or the plaintext node reached b.
    while let Ok(item) = b_in.try_recv() {
        assert!(!matches!(item, Inbound::User { .. }), "{item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (b, mut b_in) = start(ca.node_files(dir.path(), "b"));
    // c starts with a stranger's certificate: refused.
    let (c, mut c_in) = start(Ca::new().node_files(dir.path(), "c"));
    c.send_user(&b.local().address, hello()).unwrap();
    next(&mut c_in, |x| match x {
        Inbound::Association {
            to: StateName::Gated,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    // The operator installs a certificate from the right CA in c's files.
    std::thread::sleep(Duration::from_millis(20)); // a new modification time
    ca.node_files(dir.path(), "c");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await; // reload and gate
        c.send_user(&b.local().address, hello()).unwrap();
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let Some(Inbound::User { .. }) = b_in.recv().await {
                    return;
                }
            }
        })
        .await;
        if got.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never used"
        );
    }
}

#[test]
fn unreadable_or_wrong_files_are_refused_at_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Ca::new().node_files(dir.path(), "a");
    std::fs::write(&settings.private_key, "not a key").unwrap();
    let err = RemoteNode::start(
        &Address::remote("sim", "127.0.0.1", 0).unwrap(),
        flotilla_core::RemoteSettings {
            tls: Some(settings.clone()),
            ..fast_settings()
        },
    )
    .unwrap_err();
    assert!(matches!(err, StartError::Tls(_)), "{err}");
    assert!(err.to_string().contains("a.key"), "{err}");
    settings.certificate = dir.path().join("missing.crt");
    let err = RemoteNode::start(
        &Address::remote("sim", "127.0.0.1", 0).unwrap(),
        flotilla_core::RemoteSettings {
            tls: Some(settings),
            ..fast_settings()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");
}

/// A certificate from the trusted CA proves only the host it names: a node at 127.0.0.1 with a
/// certificate for another host cannot claim 127.0.0.1's addresses, in either direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_cannot_claim_this_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    // TLS alone (no secret): the certificate is the only proof.
    let tls_only = |tls| flotilla_core::RemoteSettings {
        tls: Some(tls),
        secret: None,
        ..fast_settings()
    };
    let sim = Address::remote("sim", "127.0.0.1", 0).unwrap();
    let (a, mut a_in) = RemoteNode::start(&sim, tls_only(ca.node_files(dir.path(), "a"))).unwrap();
    let (m, mut m_in) = RemoteNode::start(
        &sim,
        tls_only(ca.node_files_for(dir.path(), "m", "10.9.9.9")),
    )
    .unwrap();
    // m connects to a: a refuses m's claim to be at 127.0.0.1.
    m.send_user(&a.local().address, hello()).unwrap();
    let cause = gated(&mut m_in).await;
    assert!(cause.contains("not valid for that host"), "{cause}");
    // a connects to m: m's certificate does not name 127.0.0.1, so the TLS handshake fails.
    a.send_user(&m.local().address, hello()).unwrap();
    let cause = gated(&mut a_in).await;
    assert!(cause.contains("TLS"), "{cause}");
    for rx in [&mut a_in, &mut m_in] {
        while let Ok(item) = rx.try_recv() {
            assert!(!matches!(item, Inbound::User { .. }), "{item:?}");
        }
    }
}

#[test]
fn a_node_without_credentials_refuses_to_start_unless_insecure() {
    let sim = Address::remote("sim", "127.0.0.1", 0).unwrap();
    let bare = flotilla_core::RemoteSettings {
        secret: None,
        ..fast_settings()
    };
    let err = RemoteNode::start(&sim, bare.clone()).unwrap_err();
    assert!(matches!(err, StartError::NoCredentials { .. }), "{err}");
    let text = err.to_string();
    for hint in [
        "flotilla certs",
        "--insecure",
        "remote.insecure",
        "secret-file",
    ] {
        assert!(text.contains(hint), "{hint}: {text}");
    }
    let insecure = flotilla_core::RemoteSettings {
        insecure: true,
        ..bare
    };
    RemoteNode::start(&sim, insecure).unwrap().0.shutdown();
}
