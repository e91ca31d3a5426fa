//! The body of the `frames` fuzz target (`fuzz/fuzz_targets/frames.rs`), here so that the
//! corpus replay test runs exactly the same code on every CI run.

use crate::handshake::{Challenge, Claim, decode_hello};
use crate::pdu::{self, HandshakeReply, QuarantineNotice, SystemAck, SystemEnvelope};
use crate::{FrameDecoder, Heartbeat, HeartbeatReply, Kind, UserEnvelope};

/// The maximum frame size used while fuzzing: small, so that the limit is hit often.
pub const FUZZ_MAX_FRAME: usize = 4096;

/// Feeds `data` to a decoder in pieces (the first byte sets the piece size), decodes every frame
/// as its kind's PDU and every handshake frame as each of its steps. Panics only if an invariant breaks.
pub fn decode_everything(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut decoder = FrameDecoder::new(FUZZ_MAX_FRAME);
    for chunk in rest.chunks(piece) {
        decoder.extend(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.body.len() < FUZZ_MAX_FRAME, "a frame over the limit");
                    let body = frame.body.as_slice();
                    match frame.kind {
                        Kind::Handshake => {
                            let _ = decode_hello(body);
                            let _ = pdu::decode::<Claim>(frame.kind, body);
                        }
                        Kind::HandshakeReply => {
                            let _ = pdu::decode::<Challenge>(frame.kind, body);
                            let _ = pdu::decode::<HandshakeReply>(frame.kind, body);
                        }
                        Kind::Heartbeat => {
                            let _ = pdu::decode::<Heartbeat>(frame.kind, body);
                        }
                        Kind::HeartbeatReply => {
                            let _ = pdu::decode::<HeartbeatReply>(frame.kind, body);
                        }
                        Kind::System => {
                            let _ = pdu::decode::<SystemEnvelope>(frame.kind, body);
                        }
                        Kind::SystemAck => {
                            let _ = pdu::decode::<SystemAck>(frame.kind, body);
                        }
                        Kind::QuarantineNotice => {
                            let _ = pdu::decode::<QuarantineNotice>(frame.kind, body);
                        }
                        Kind::Cluster => {
                            let _ = crate::cluster::decode_cluster(body);
                        }
                        Kind::User => {
                            let owned = pdu::decode::<UserEnvelope>(frame.kind, body);
                            // The in-place paths: a checked batch admits exactly what the
                            // owned decoder accepts, and a raw one (the reader's) hands the
                            // receiver the same envelope or an error.
                            let mut batch = crate::UserBatch::new();
                            let admitted = batch.push_body(body);
                            assert_eq!(owned.is_ok(), admitted.is_ok());
                            assert_eq!(
                                batch.first().map(crate::UserEnvelopeRef::to_envelope),
                                owned.clone().ok()
                            );
                            let mut raw = crate::UserBatch::new();
                            assert!(raw.push_raw(body).is_ok());
                            let got: Vec<_> = raw
                                .iter_checked()
                                .map(|r| r.map(crate::UserEnvelopeRef::to_envelope).ok())
                                .collect();
                            assert_eq!(got, [owned.ok()]);
                        }
                    }
                }
                Ok(None) => break,
                // The connection would be closed here: stop feeding this one.
                Err(_) => return,
            }
        }
        assert!(
            decoder.buffered() <= FUZZ_MAX_FRAME + 4 + piece,
            "the decoder buffered more than one frame's worth"
        );
    }
}
