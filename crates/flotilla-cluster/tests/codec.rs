//! The codec against every message a simulated cluster sends, and against garbage.

use std::time::{Duration, Instant};

use flotilla_cluster::{CodecError, decode, encode};
use flotilla_core::ClusterSettings;
use flotilla_proto::cluster::ClusterInput;
use flotilla_proto::cluster::sim::{ClusterSim, address};
use proptest::prelude::*;

/// Encodes, decodes, checks the round trip, and counts the bytes.
fn round_trip(msg: &flotilla_proto::cluster::ClusterMsg) -> usize {
    let bytes = encode(msg).unwrap_or_else(|e| panic!("cannot encode {msg:?}: {e}"));
    let back = decode(&bytes).unwrap_or_else(|e| panic!("cannot decode {msg:?}: {e}"));
    assert_eq!(&back, msg);
    bytes.len()
}

#[test]
fn every_message_of_a_cluster_life_round_trips() {
    #[allow(clippy::disallowed_methods)] // reason: an arbitrary origin for simulated time
    let t0 = Instant::now();
    let mut sim = ClusterSim::new(3, 5, ClusterSettings::default(), t0);
    sim.set_meter(round_trip);
    sim.set_seeds(&[0, 1]);
    for i in 0..5 {
        sim.start(i);
    }
    sim.run_for(Duration::from_secs(20)); // join, gossip, heartbeats
    sim.input(0, ClusterInput::Leave(address(4))); // leaving, exiting, tombstones
    sim.run_for(Duration::from_secs(10));
    sim.partition(&[0, 1, 2], &[3]); // reachability rows, downing
    sim.run_for(Duration::from_secs(60));
    sim.kill(2);
    sim.start(2); // a new incarnation at an old address
    sim.run_for(Duration::from_secs(30));
    assert!(
        sim.net.gossip > 50 && sim.net.status > 50 && sim.net.heartbeat > 200,
        "{:?}",
        sim.net
    );
    assert!(sim.net.gossip_bytes > 0 && sim.net.heartbeat_bytes > 0);
}

#[test]
fn bad_indices_and_statuses_are_errors() {
    let node = flotilla_wire::WireUniqueAddress {
        address: flotilla_wire::WireAddress {
            system: "c".into(),
            host: "127.0.0.1".into(),
            port: 2552,
        },
        uid: 7,
    };
    let gossip = |members| flotilla_wire::ClusterPdu::Gossip {
        from: node.clone(),
        to: node.clone(),
        gossip: flotilla_wire::WireGossip {
            nodes: vec![node.clone()],
            members,
            ..Default::default()
        },
    };
    let member = |node, status| flotilla_wire::WireMember {
        node,
        status,
        roles: vec![],
        app_version: "1".into(),
        up_number: 1,
    };
    let bytes = |pdu| flotilla_wire::encode_cluster(&pdu).unwrap();
    assert!(decode(&bytes(gossip(vec![member(0, 2)]))).is_ok());
    assert_eq!(
        decode(&bytes(gossip(vec![member(3, 2)]))),
        Err(CodecError::BadIndex { index: 3, len: 1 })
    );
    assert_eq!(
        decode(&bytes(gossip(vec![member(0, 9)]))),
        Err(CodecError::BadStatus(9))
    );
    let mut bad = node.clone();
    bad.address.system = "no spaces allowed".into();
    let pdu = flotilla_wire::ClusterPdu::InitJoin { from: bad };
    assert!(matches!(
        decode(&bytes(pdu)),
        Err(CodecError::BadAddress(_))
    ));
    assert!(matches!(
        decode(&[0xff, 0xff, 0xff]),
        Err(CodecError::Undecodable(_))
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }
}
