//! Replays the fuzz corpus (`fuzz/corpus/frames`) and the seed inputs below through the fuzz
//! target's code, on every test run.

use std::path::PathBuf;

use flotilla_wire::fuzzing::decode_everything;

#[test]
fn the_fuzz_corpus_replays_without_a_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/frames");
    let mut replayed = 0;
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus at {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let data = std::fs::read(entry.path())
            .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        decode_everything(&data);
        replayed += 1;
    }
    assert!(
        replayed >= 10,
        "only {replayed} corpus inputs in {}",
        dir.display()
    );
}

#[test]
fn hostile_inputs_do_not_panic() {
    // Oversized length prefix, empty frame, unknown kind, truncated frame, slow trickle.
    for input in [
        &[1, 0xff, 0xff, 0xff, 0xff, 0x01][..],
        &[3, 0, 0, 0, 0],
        &[4, 0, 0, 0, 1, 0xee],
        &[7, 0, 0, 0, 9, 0x01, b'F', b'L'],
        &[1, 0, 0, 0x10, 0, 0x01, 1, 2, 3],
    ] {
        decode_everything(input);
    }
}

/// The seeds are real protocol frames, so the fuzzer starts deep inside the decoders.
#[test]
fn the_seed_frames_decode_as_their_pdus() {
    use flotilla_wire::handshake::decode_hello;
    use flotilla_wire::pdu::decode;
    use flotilla_wire::{Claim, FrameDecoder, Kind, UserEnvelope};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/frames");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut d = FrameDecoder::new(4096);
    d.extend(&read("seed-conversation-1")[1..]);
    let mut kinds = Vec::new();
    let mut handshakes = 0;
    while let Some(frame) = d.next_frame().unwrap_or_else(|e| panic!("{e}")) {
        match frame.kind {
            Kind::Handshake if handshakes == 0 => {
                handshakes += 1;
                decode_hello(&frame.body).unwrap_or_else(|e| panic!("{e}"));
            }
            Kind::Handshake => {
                let claim: Claim =
                    decode(frame.kind, &frame.body).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(claim.from.address.system, "fuzz");
                assert_eq!(claim.to.port, 2552);
            }
            Kind::User => {
                let u: UserEnvelope =
                    decode(frame.kind, &frame.body).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(u.recipient, "/user/counter");
                assert_eq!(u.payload.len(), 100);
            }
            _ => {}
        }
        kinds.push(frame.kind);
    }
    assert_eq!(
        kinds,
        [
            Kind::Handshake,
            Kind::Handshake,
            Kind::Heartbeat,
            Kind::System,
            Kind::User,
            Kind::SystemAck
        ]
    );
    let mut d = FrameDecoder::new(4096);
    d.extend(&read("seed-cluster-init-join-1")[1..]);
    let frame = d
        .next_frame()
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no frame"));
    assert_eq!(frame.kind, Kind::Cluster);
    let pdu = flotilla_wire::decode_cluster(&frame.body).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(pdu, flotilla_wire::ClusterPdu::InitJoin { .. }),
        "{pdu:?}"
    );
}
