//! Fuzzes what the HJ 212 receiver does with a data logger's bytes: the stream cut into
//! packets by their length digits (as the listener's buffer does), each packet's framing, CRC
//! and data segment parsed, the parts of split packets merged, and the acknowledgement built.
//! Nothing may panic; a packet that parses writes back (its data segment) to text that parses
//! to the same packet; a packet is never longer than its length digits allow; an
//! acknowledgement is itself a valid packet.
//!
//! Input: the bytes a logger sends, whole. Half of the inputs are also tried as a bare data
//! segment with a correct frame around it, so the fuzzer reaches the segment parser without
//! having to guess a CRC.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor::source::hj212::packet::{
    MAX_DATA, OVERHEAD, Packet, acknowledgement, frame, merge, packet_length, parse,
    parse_segment,
};

fn check(packet: &Packet) {
    let text = packet.data_segment();
    match parse_segment(&text) {
        Ok(again) => assert_eq!(&again, packet, "written back as {text:?}"),
        Err(e) => panic!("a parsed packet writes back to {text:?}, which fails: {e}"),
    }
    if let Some(ack) = acknowledgement(packet) {
        parse(ack.as_bytes()).expect("an acknowledgement is a valid packet");
    }
}

fuzz_target!(|data: &[u8]| {
    // The stream as the listener sees it: packets one after another.
    let mut rest = data;
    let mut packets = Vec::new();
    while !rest.is_empty() {
        match packet_length(rest) {
            Ok(Some(len)) => {
                assert!(len <= MAX_DATA + OVERHEAD);
                if rest.len() < len {
                    break;
                }
                if let Ok(p) = parse(&rest[..len]) {
                    check(&p);
                    packets.push(p);
                }
                rest = &rest[len..];
            }
            Ok(None) | Err(_) => break,
        }
    }
    // A bare data segment, framed correctly.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(framed) = frame(text)
        && let Ok(p) = parse(framed.as_bytes())
    {
        check(&p);
        packets.push(p);
    }
    let split: Vec<Packet> = packets.into_iter().filter(|p| p.is_split()).collect();
    if let Ok(merged) = merge(&split) {
        assert!(!merged.is_split());
    }
});
