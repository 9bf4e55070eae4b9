//! Fuzzes what the S7 client does with a PLC's bytes: the TPKT header, the COTP connection
//! confirm, the Setup Communication answer and the Read Var answer for a set of items, each
//! item's data decoded as every S7 type, and the address parser with any text.
//! Nothing may panic; a negotiated PDU is within the sizes S7 CPUs offer; an item's data is
//! exactly the bytes it asked for and lies inside the frame; a float that comes out is finite
//! unless the bytes were a NaN or an infinity, which the decoder must refuse.
//!
//! Input: one byte giving the number of items (1–20), then per item an area byte, a 16-bit
//! start and an 8-bit count, then the PLC's answer frame; the same bytes are also read as an
//! address text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor::model::Value;
use shopfloor::source::s7::address::{Address, Area, S7Type};
use shopfloor::source::s7::decode::decode;
use shopfloor::source::s7::frame::{
    MIN_PDU, REQUESTED_PDU, ReadItem, TPKT_HEADER, check_connect_confirm, read_reply,
    setup_reply, tpkt_length,
};

const TYPES: [S7Type; 22] = [
    S7Type::Bool,
    S7Type::Byte,
    S7Type::Char,
    S7Type::SInt,
    S7Type::USInt,
    S7Type::Word,
    S7Type::Int,
    S7Type::UInt,
    S7Type::DWord,
    S7Type::DInt,
    S7Type::UDInt,
    S7Type::Real,
    S7Type::LReal,
    S7Type::LInt,
    S7Type::ULInt,
    S7Type::LWord,
    S7Type::String { max: 254 },
    S7Type::WString { max: 100 },
    S7Type::S5Time,
    S7Type::Time,
    S7Type::Timer,
    S7Type::Counter,
];

fn area(code: u8) -> Area {
    match code % 6 {
        0 => Area::Inputs,
        1 => Area::Outputs,
        2 => Area::Flags,
        3 => Area::DataBlock(u16::from(code)),
        4 => Area::Timers,
        _ => Area::Counters,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Address::parse(text);
    }
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 20) + 1;
    if rest.len() < 4 * n {
        return;
    }
    let (spec, frame) = rest.split_at(4 * n);
    let items: Vec<ReadItem> = spec
        .chunks_exact(4)
        .map(|c| ReadItem {
            area: area(c[0]),
            start: u32::from(u16::from_be_bytes([c[1], c[2]])),
            count: u16::from(c[3]) + 1,
        })
        .collect();

    if let Some(header) = frame.first_chunk::<TPKT_HEADER>() {
        let _ = tpkt_length(header);
    }
    let _ = check_connect_confirm(frame);
    if let Ok(pdu) = setup_reply(frame, 1) {
        assert!(
            (MIN_PDU..=REQUESTED_PDU).contains(&pdu),
            "negotiated PDU {pdu}"
        );
    }
    let Ok(answers) = read_reply(frame, 1, &items) else {
        return;
    };
    assert_eq!(answers.len(), items.len());
    for (item, answer) in items.iter().zip(answers) {
        let Ok(range) = answer else { continue };
        assert!(range.end <= frame.len(), "item data outside the frame");
        assert_eq!(range.len(), item.reply_bytes(), "item data of another length");
        let bytes = &frame[range];
        for (i, ty) in TYPES.iter().enumerate() {
            let bit = (i % 8) as u8;
            for (scale, offset) in [(None, None), (Some(0.1), Some(-5.0))] {
                if let Ok(Value::Float(x)) = decode(*ty, bytes, bit, scale, offset) {
                    assert!(x.is_finite(), "{ty:?} gave {x}");
                }
            }
        }
    }
});
