//! CJ/T 188-2004 water, heat and gas meters on RS-485 or M-Bus, read only.
//!
//! CJ/T 188 is the household-meter protocol of China's water, heating and gas utilities; a
//! factory's water meters (and the heat meters of its hot-water loops) speak it when they
//! have a bus at all. It is DL/T 645's cousin: the same 0x68 … 0x16 frame with a byte sum,
//! plus a meter type byte and a seven-byte address, and without the 0x33 offset. The pieces
//! follow the S7 source's shape: [`frame`] builds the read requests and checks answers
//! without I/O, [`data`] decodes the metering data (cumulative flow with its unit, the
//! settlement-day figure, the meter's clock and its status bits). [`config`] is the
//! `[[cjt188]]` section, [`bus`] reads a meter on the bus task of [`crate::source::meterbus`]
//! (shared with DL/T 645), and [`probe`] commissions a meter alone on a line.

pub mod bus;
pub mod config;
pub mod data;
pub mod frame;
pub mod probe;
