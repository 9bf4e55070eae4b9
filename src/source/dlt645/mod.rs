//! DL/T 645 electricity meters (DL/T 645-2007, and the 1997 edition still in service) on
//! RS-485, read only.
//!
//! Most electricity meters in Chinese factories speak DL/T 645 rather than Modbus: the grid
//! company's revenue meters always do, and sub-meters usually offer it beside Modbus. The
//! pieces follow the S7 source's shape: [`frame`] builds read requests and checks the meter's
//! answers without I/O, [`data`] names the common data identifiers and turns their BCD bytes
//! into numbers. [`config`] is the `[[dlt645]]` section, [`bus`] reads a meter on the bus
//! task of [`crate::source::meterbus`] (which CJ/T 188 shares), and [`probe`] commissions a
//! meter alone on a line.
//!
//! Which edition a meter speaks follows from the identifier the engineer writes: eight hex
//! digits (`00010000`) are DL/T 645-2007, four (`9010`) are DL/T 645-1997.

pub mod bus;
pub mod config;
pub mod data;
pub mod frame;
pub mod probe;
