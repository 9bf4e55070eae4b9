//! `shopfloor probe cjt188://…`: commissioning a CJ/T 188 meter. Asks the one meter on the
//! bus for its type and address (read address, 0x03), then reads its metering data (901F)
//! and shows every figure. Read commands only, like the agent.

use std::fmt::Write as _;

use super::bus::{Cjt188, fault, figures};
use super::frame::{self, DI_METERING, DiOrder};
use crate::source::meterbus::config::Bus;
use crate::source::meterbus::{Fault, link};

/// Finds the one meter on the bus and reads it. Returns the report to print.
pub async fn probe(bus: &Bus, order: DiOrder) -> Result<String, Fault> {
    let mut link = link::open(bus).await?;
    let mut out = String::new();
    let answer = link
        .exchange::<Cjt188>(&frame::read_address_request(1, order), bus.timeout)
        .await?;
    let (meter_type, address) = frame::address_reply(&answer, 1).map_err(fault)?;
    let _ = writeln!(
        out,
        "meter address {address}, {meter_type} (read with the read-address command 0x03)"
    );
    let request = frame::read_request(meter_type, address, DI_METERING, 2, order);
    let answer = link.exchange::<Cjt188>(&request, bus.timeout).await?;
    let data = match frame::read_reply(&answer, meter_type, address, DI_METERING, 2) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(out, "metering data (901F): {e}");
            return Ok(out);
        }
    };
    match figures(meter_type, &data) {
        Ok(all) => {
            let _ = writeln!(out, "\n{:<22} value", "reading");
            for (name, value) in all {
                let _ = writeln!(out, "{name:<22} {value}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "metering data (901F): {e}");
        }
    }
    Ok(out)
}
