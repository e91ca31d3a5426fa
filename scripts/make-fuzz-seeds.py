#!/usr/bin/env python3
"""Writes hand-made seed inputs for the `frames` fuzz target into fuzz/corpus/frames.

Each seed is one byte (the piece size the target feeds the decoder with) followed by real
frames of the current wire format (version 4), encoded here by hand in postcard's format (LEB128 varints, length-prefixed
strings and byte vectors, 0/1 option tags, varint enum variant indices), so the fuzzer starts
deep inside the PDU decoders. `crates/flotilla-wire/tests/corpus.rs` checks that they decode.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus", "frames")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def s(x):
    x = x.encode()
    return varint(len(x)) + x


def addr(system, host, port):
    return s(system) + s(host) + varint(port)


def uaddr(system, host, port, uid):
    return addr(system, host, port) + varint(uid)


def frame(kind, body):
    return struct.pack(">I", len(body) + 1) + bytes([kind]) + body


VERSION = 4


def hello(version=VERSION):
    return b"FLTL" + varint(version) + bytes(range(32))


def claim(system="fuzz", proof=None):
    lane, link = varint(0), varint(42)  # the control connection of link 42
    proof = b"\x00" if proof is None else b"\x01" + proof  # a fixed 32-byte array: no length
    return (uaddr(system, "127.0.0.1", 2551, 7) + addr(system, "127.0.0.1", 2552)
            + lane + link + proof)


def challenge(proof=None):
    proof = b"\x00" if proof is None else b"\x01" + proof
    return varint(0) + bytes(range(32, 64)) + proof


hb = varint(7) + varint(1)
sysenv = varint(7) + varint(9) + varint(1) + s("flotilla.Watch") + varint(3) + b"abc"
ack = varint(9) + varint(1)
notice = uaddr("fuzz", "127.0.0.1", 2552, 9) + varint(7) + s("failure detector")
user = s("/user/counter") + b"\x01" + s("/user/client") + s("demo.Add") + varint(100) + bytes(100)

SEEDS = {
    "hello": frame(1, hello()),
    "hello-old-version": frame(1, hello(version=3)),
    "claim": frame(1, claim()),
    "claim-secret": frame(1, claim(proof=bytes(range(32)))),
    "claim-wrong-system": frame(1, claim(system="other")),
    "challenge": frame(2, challenge()),
    "challenge-secret": frame(2, challenge(proof=bytes(range(32)))),
    "reply-accepted": frame(2, varint(0) + uaddr("fuzz", "127.0.0.1", 2552, 9) + b"\x00"),
    "reply-refused": frame(2, varint(1) + varint(6) + varint(7)),
    "heartbeat": frame(3, hb),
    "heartbeat-reply": frame(4, hb),
    "system": frame(5, sysenv),
    "system-ack": frame(6, ack),
    "quarantine-notice": frame(7, notice),
    "user": frame(0x10, user),
    "cluster-init-join": frame(8, varint(0) + uaddr("fuzz", "127.0.0.1", 2551, 7)),
    "conversation": frame(1, hello()) + frame(1, claim()) + frame(3, hb) + frame(5, sysenv) + frame(0x10, user) + frame(6, ack),
    "oversized-prefix": b"\xff\xff\xff\xff\x01",
    "empty-frame": b"\x00\x00\x00\x00",
    "unknown-kind": frame(0xEE, b"x"),
    "http-request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "truncated": frame(0x10, user)[:40],
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, f"seed-{name}-1"), "wb") as f:
            f.write(bytes([1]) + data)
    print(f"{len(SEEDS)} seeds written to {os.path.normpath(OUT)}")
