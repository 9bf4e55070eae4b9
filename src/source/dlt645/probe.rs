//! `shopfloor probe dlt645://…`: commissioning a DL/T 645 meter. Asks the one meter on the
//! bus for its address with the broadcast address read (0x13), then reads the common
//! identifiers from it, so an engineer sees the address to configure and that the meter's
//! values make sense. Read commands only, like the agent.

use std::fmt::Write as _;

use super::bus::{Dlt645, fault, read_value};
use super::data::{self, IDENTIFIERS};
use super::frame::{self, Address, Edition};
use crate::source::meterbus::config::Bus;
use crate::source::meterbus::{Fault, link};

/// The identifiers the probe reads, 2007 edition.
const COMMON: [u32; 8] = [
    0x0000_0000,
    0x0001_0000,
    0x0002_0000,
    0x0201_0100,
    0x0202_0100,
    0x0203_0000,
    0x0206_0000,
    0x0280_0002,
];

/// Reads the meter at `address`, or (`None`) finds the one meter on the bus first. Returns
/// the report to print.
pub async fn probe(bus: &Bus, address: Option<Address>) -> Result<String, Fault> {
    let mut link = link::open(bus).await?;
    let mut out = String::new();
    let address = match address {
        Some(a) => a,
        None => {
            let answer = link
                .exchange::<Dlt645>(&frame::read_address_request(), bus.timeout)
                .await?;
            let a = frame::address_reply(&answer).map_err(fault)?;
            let _ = writeln!(
                out,
                "meter address {a} (read with the broadcast address read 0x13; write it as \
                 `address = \"{a}\"`)"
            );
            a
        }
    };
    let _ = writeln!(
        out,
        "\n{:<28} {:<10} {:>14}  unit",
        "reading", "identifier", "value"
    );
    for di in COMMON {
        let Some(i) = IDENTIFIERS
            .iter()
            .find(|i| i.id == frame::DataId::V2007(di))
        else {
            continue;
        };
        let shown = match read_value(&mut link, address, i.id, bus.timeout).await? {
            Ok(bytes) => match data::decode(i.format, &bytes) {
                Ok(v) => format!("{v:>14}  {}", i.unit),
                Err(e) => format!("{:>14}  {e}", "-"),
            },
            Err(refusal) => format!("{:>14}  {refusal}", "-"),
        };
        let _ = writeln!(out, "{:<28} {:<10} {shown}", i.signal, i.id.to_string());
    }
    let _ = writeln!(
        out,
        "\n({}; a 1997 meter refuses these: configure `edition = \"1997\"`)",
        Edition::V2007
    );
    Ok(out)
}
