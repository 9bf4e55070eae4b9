//! Fuzzes the Modbus response path: a device's answers, as bytes the fuzzer makes up, through
//! the real client framing (Modbus TCP's MBAP header or RTU's CRC frames), the agent's reads
//! of coils, discrete inputs, holding and input registers, the cutting of fields out of each
//! answer and their decoding, for a device whose map holds every data type and byte order.
//! The transport replays the bytes in the chunks the input says (a frame may come a byte at
//! a time) and then ends, as a peer that hangs up does. Nothing may panic, and whatever comes
//! out is a finite value.
//!
//! Input: byte 0 picks the framing (bit 0: RTU); then chunks, each a length byte and that
//! many bytes.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use shopfloor::model::Value;
use shopfloor::source::modbus::config::ModbusDevice;
use shopfloor::source::modbus::fuzzing::poll_replayed;

const CONFIG: &str = r#"
[site]
county = "c"
sector = "other"
enterprise = "e"

[[machine]]
id = "m1"
kind = "lathe"
cnc = true

[[modbus]]
id = "dev"
address = "127.0.0.1:502"
unit = 7
field = [
  { machine = "m1", signal = "run", register = "coil", address = 0, type = "bool" },
  { machine = "m1", signal = "door", register = "coil", address = 3, type = "bool" },
  { machine = "m1", signal = "estop", register = "discrete", address = 1, type = "bool" },
  { machine = "m1", signal = "mode", register = "holding", address = 0, type = "u16" },
  { machine = "m1", signal = "alarm", register = "holding", address = 1, type = "i16" },
  { machine = "m1", signal = "bits", register = "holding", address = 2, type = "bool", bit = 3 },
  { machine = "m1", signal = "parts", register = "holding", address = 3, type = "u32", order = "CDAB" },
  { machine = "m1", signal = "count", register = "holding", address = 5, type = "i32", order = "DCBA" },
  { machine = "m1", signal = "rpm", register = "holding", address = 7, type = "f32", order = "BADC" },
  { machine = "m1", signal = "energy", register = "holding", address = 9, type = "u64" },
  { machine = "m1", signal = "total", register = "holding", address = 13, type = "i64", scale = 0.1 },
  { machine = "m1", signal = "temp", register = "input", address = 0, type = "f64" },
  { machine = "m1", signal = "load", register = "input", address = 4, type = "u16", scale = 0.01, offset = -5.0 },
  { machine = "m1", signal = "program", register = "input", address = 5, type = "string", length = 4 },
]
"#;

fn device() -> &'static ModbusDevice {
    static DEVICE: OnceLock<ModbusDevice> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let config = shopfloor::agent::config::load_str(CONFIG, "modbus_response.toml")
            .unwrap_or_else(|d| panic!("the target's own config is wrong: {d}"));
        config.modbus[0].clone()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&framing, mut rest)) = data.split_first() else {
        return;
    };
    let mut chunks = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        chunks.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    let (samples, _faults) = poll_replayed(device().clone(), framing & 1 == 1, chunks);
    for s in samples {
        if let Value::Float(x) = s.value {
            assert!(x.is_finite(), "{}: non-finite {x}", s.signal);
        }
    }
});
