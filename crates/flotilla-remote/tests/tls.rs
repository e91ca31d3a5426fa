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
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
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
    let cause = next(&mut c_in, |x| match x {
        Inbound::Association {
            to: StateName::Gated,
            cause,
            ..
        } => Some(cause),
        _ => None,
    })
    .await;
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
