//! Fuzzes what the MC (SLMP) client does with a PLC's bytes: the answer's length from its
//! header, its end code and data in 3E and 4E framing, the data of a batch read (word or bit
//! units) and of a random read checked against what was asked, the words decoded as every
//! type, bit-unit points unpacked, and the address parser with any text for both families.
//! Nothing may panic; an answer's data is exactly the bytes asked for and lies inside the
//! frame; a float that comes out is finite.
//!
//! Input: a selector byte (framing, device, read kind), a 16-bit start, an 8-bit count, then
//! the PLC's answer frame; the same bytes are also read as address text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor::model::Value;
use shopfloor::source::melsec::address::{Address, Device, Family, McType};
use shopfloor::source::melsec::decode::{bit_points, decode};
use shopfloor::source::melsec::frame::{
    BatchRead, Framing, RandomRead, answer_data, answer_length, batch_read_reply,
    random_read_reply,
};

const TYPES: [McType; 11] = [
    McType::Bool,
    McType::I16,
    McType::U16,
    McType::I32,
    McType::U32,
    McType::F32,
    McType::I64,
    McType::U64,
    McType::F64,
    McType::String { words: 1 },
    McType::String { words: 16 },
];

fn words(bytes: &[u8]) {
    for (i, ty) in TYPES.iter().enumerate() {
        let bit = (i % 3 == 0).then_some((i % 16) as u8);
        for (scale, offset) in [(None, None), (Some(0.1), Some(-5.0))] {
            if let Ok(Value::Float(x)) = decode(*ty, bytes, bit, scale, offset) {
                assert!(x.is_finite(), "{ty:?} gave {x}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Address::parse(text, Family::Fx);
        let _ = Address::parse(text, Family::Q);
    }
    let [selector, s0, s1, count, frame @ ..] = data else {
        return;
    };
    let framing = if selector & 1 == 0 {
        Framing::E3
    } else {
        Framing::E4 {
            serial: u16::from_le_bytes([*s0, *s1]),
        }
    };
    let device = Device::ALL[usize::from(selector >> 1) % Device::ALL.len()];
    let start = u32::from(u16::from_le_bytes([*s0, *s1]));
    let count = u16::from(*count) + 1;

    if frame.len() >= framing.answer_header()
        && let Ok(total) = answer_length(framing, frame)
        && total <= frame.len()
    {
        let frame = &frame[..total];
        if let Ok(range) = answer_data(framing, frame) {
            assert!(range.end <= frame.len(), "data outside the frame");
        }
    }

    let batch = match selector >> 6 {
        0 => BatchRead::words(device, start, count).ok(),
        1 => BatchRead::bits(device, start, count, Family::Fx).ok(),
        2 => BatchRead::bits(device, start, count, Family::Q).ok(),
        _ => None,
    };
    if let Some(read) = batch
        && let Ok(range) = batch_read_reply(framing, frame, &read)
    {
        assert!(range.end <= frame.len(), "data outside the frame");
        assert_eq!(range.len(), read.reply_bytes());
        let bytes = &frame[range];
        if read.in_bits() {
            if let Ok(points) = bit_points(bytes, usize::from(read.count())) {
                assert_eq!(points.len(), usize::from(read.count()));
            }
        } else {
            words(bytes);
        }
    }
    if selector >> 6 == 3 {
        let points: Vec<(Device, u32)> = (0..u32::from(count % 8) + 1)
            .map(|i| (device, start + 2 * i))
            .collect();
        let (w, d) = points.split_at(points.len() / 2);
        if let Ok(read) = RandomRead::new(w.to_vec(), d.to_vec())
            && let Ok(range) = random_read_reply(framing, frame, &read)
        {
            assert!(range.end <= frame.len(), "data outside the frame");
            assert_eq!(range.len(), read.reply_bytes());
            words(&frame[range]);
        }
    }
});
