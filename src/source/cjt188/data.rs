//! CJ/T 188 metering data (identifier 901F) to values: pure functions, no I/O.
//!
//! A water or gas meter answers 19 bytes after the identifier and sequence number:
//!
//! ```text
//! current cumulative flow      4 bytes BCD XXXXXX.XX, lowest first, then a unit code
//! settlement-day flow          4 bytes BCD XXXXXX.XX, then a unit code
//! real time                    7 bytes BCD: second minute hour day month year (low, high)
//! status ST                    2 bytes: ST1 D0–D1 valve (00 open, 01 closed, 11 fault),
//!                              D2 battery (1 = low); the rest reserved or the maker's
//! ```
//!
//! A heat meter answers 43: settlement-day heat, current heat, heat power, flow rate and
//! cumulative flow (each 4 bytes BCD and a unit code), supply and return temperature (3 bytes,
//! XXXX.XX °C), operating hours (3 bytes), real time and status.
//!
//! Layout, unit codes and status bits follow CJ/T 188-2004's data tables as water-meter
//! firmware and collectors implement them: the unit codes and the 19-byte layout as in the
//! public KingDa NB water meter firmware's `CJT-188-2004.h` (the standard's text itself was
//! not at hand). The heat meter's layout is the standard's as commonly implemented and has
//! not yet met a real heat meter. Status bits beyond valve and battery are the maker's, so the
//! raw bytes are kept. Bytes a maker appends after the standard's fields are ignored. The
//! meter's clock is local time, as it was set; the actor decides what to do with it.

use jiff::civil::DateTime;

/// What a unit code measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Volume,
    Energy,
    Power,
    FlowRate,
}

/// A unit code with its symbol and the factor to the agent's base unit (m³, kWh, kW, m³/h).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    pub code: u8,
    pub symbol: &'static str,
    pub quantity: Quantity,
    pub to_base: f64,
}

const fn unit(code: u8, symbol: &'static str, quantity: Quantity, to_base: f64) -> Unit {
    Unit {
        code,
        symbol,
        quantity,
        to_base,
    }
}

/// CJ/T 188-2004's unit codes.
pub const UNITS: &[Unit] = &[
    unit(0x01, "J", Quantity::Energy, 1.0 / 3.6e6),
    unit(0x02, "Wh", Quantity::Energy, 1e-3),
    unit(0x05, "kWh", Quantity::Energy, 1.0),
    unit(0x08, "MWh", Quantity::Energy, 1e3),
    unit(0x0A, "MWh×100", Quantity::Energy, 1e5),
    unit(0x0B, "kJ", Quantity::Energy, 1.0 / 3600.0),
    unit(0x0E, "MJ", Quantity::Energy, 1.0 / 3.6),
    unit(0x11, "GJ", Quantity::Energy, 1e3 / 3.6),
    unit(0x13, "GJ×100", Quantity::Energy, 1e5 / 3.6),
    unit(0x14, "W", Quantity::Power, 1e-3),
    unit(0x17, "kW", Quantity::Power, 1.0),
    unit(0x1A, "MW", Quantity::Power, 1e3),
    unit(0x29, "L", Quantity::Volume, 1e-3),
    unit(0x2C, "m³", Quantity::Volume, 1.0),
    unit(0x32, "L/h", Quantity::FlowRate, 1e-3),
    unit(0x35, "m³/h", Quantity::FlowRate, 1.0),
];

/// The unit a code names.
pub fn unit_of(code: u8) -> Option<&'static Unit> {
    UNITS.iter().find(|u| u.code == code)
}

/// A figure as the meter gave it, with its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub value: f64,
    pub unit: &'static Unit,
}

impl Measured {
    /// The figure in the agent's base unit for its quantity (m³, kWh, kW, m³/h).
    pub fn in_base(&self) -> f64 {
        self.value * self.unit.to_base
    }
}

/// The valve's state in ST1 bits D0–D1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valve {
    Open,
    Closed,
    Fault,
    /// 0b10, which the standard leaves undefined.
    Undefined,
}

/// The status bytes, kept raw beside what the standard defines in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub raw: [u8; 2],
    pub valve: Valve,
    pub battery_low: bool,
}

impl Status {
    pub fn from_bytes(raw: [u8; 2]) -> Status {
        let valve = match raw[0] & 0b11 {
            0b00 => Valve::Open,
            0b01 => Valve::Closed,
            0b11 => Valve::Fault,
            _ => Valve::Undefined,
        };
        Status {
            raw,
            valve,
            battery_low: raw[0] & 0b100 != 0,
        }
    }
}

/// A water or gas meter's metering data.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowReading {
    pub current: Measured,
    pub settlement: Measured,
    /// The meter's clock; `None` when it holds no valid date (meters without a clock send
    /// zeros).
    pub time: Option<DateTime>,
    pub status: Status,
}

/// A heat meter's metering data.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatReading {
    pub settlement_heat: Measured,
    pub current_heat: Measured,
    pub heat_power: Measured,
    pub flow_rate: Measured,
    pub volume: Measured,
    pub supply_c: f64,
    pub return_c: f64,
    pub operating_hours: f64,
    pub time: Option<DateTime>,
    pub status: Status,
}

/// Why metering data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "{got} bytes of metering data where a {kind} sends {want}: the meter type in the \
         config does not match the meter"
    )]
    Length {
        kind: &'static str,
        got: usize,
        want: usize,
    },
    #[error("the {field} is not BCD (bytes {bytes:02X?}): the meter has no value there")]
    NotBcd { field: &'static str, bytes: Vec<u8> },
    #[error(
        "the {field} comes with unit code {code:#04x}, which CJ/T 188 does not define \
         (0x2C is m³, 0x29 L, 0x05 kWh, 0x11 GJ)"
    )]
    Unit { field: &'static str, code: u8 },
    #[error("the {field} comes in {unit}, which is not a {expected}")]
    WrongQuantity {
        field: &'static str,
        unit: &'static str,
        expected: &'static str,
    },
}

/// Water and gas meters' data after DI and SER.
pub const FLOW_DATA: usize = 19;
/// Heat meters' data after DI and SER.
pub const HEAT_DATA: usize = 43;

/// BCD bytes, lowest first, as a number with `decimals` decimals.
fn bcd(field: &'static str, bytes: &[u8], decimals: i32) -> Result<f64, DecodeError> {
    let mut n: u64 = 0;
    for b in bytes.iter().rev() {
        let (h, l) = (b >> 4, b & 0x0F);
        if h > 9 || l > 9 {
            return Err(DecodeError::NotBcd {
                field,
                bytes: bytes.to_vec(),
            });
        }
        n = n * 100 + u64::from(h * 10 + l);
    }
    Ok(n as f64 / 10f64.powi(decimals))
}

/// Four BCD bytes with `decimals` decimals and a unit code of the `expected` quantity.
fn measured(
    field: &'static str,
    bytes: &[u8],
    decimals: i32,
    expected: Quantity,
) -> Result<Measured, DecodeError> {
    let value = bcd(field, &bytes[..4], decimals)?;
    let unit = unit_of(bytes[4]).ok_or(DecodeError::Unit {
        field,
        code: bytes[4],
    })?;
    if unit.quantity != expected {
        return Err(DecodeError::WrongQuantity {
            field,
            unit: unit.symbol,
            expected: match expected {
                Quantity::Volume => "volume",
                Quantity::Energy => "energy",
                Quantity::Power => "power",
                Quantity::FlowRate => "flow rate",
            },
        });
    }
    Ok(Measured { value, unit })
}

/// Seven BCD bytes: second, minute, hour, day, month, year low, year high.
fn meter_time(bytes: &[u8]) -> Option<DateTime> {
    let mut d = [0i16; 7];
    for (slot, b) in d.iter_mut().zip(bytes) {
        let (h, l) = (b >> 4, b & 0x0F);
        if h > 9 || l > 9 {
            return None;
        }
        *slot = i16::from(h * 10 + l);
    }
    let year = d[6] * 100 + d[5];
    DateTime::new(
        year,
        i8::try_from(d[4]).ok()?,
        i8::try_from(d[3]).ok()?,
        i8::try_from(d[2]).ok()?,
        i8::try_from(d[1]).ok()?,
        i8::try_from(d[0]).ok()?,
        0,
    )
    .ok()
}

/// A water or gas meter's answer to 901F.
pub fn flow_reading(data: &[u8]) -> Result<FlowReading, DecodeError> {
    if data.len() < FLOW_DATA {
        return Err(DecodeError::Length {
            kind: "water or gas meter",
            got: data.len(),
            want: FLOW_DATA,
        });
    }
    Ok(FlowReading {
        current: measured("current cumulative flow", &data[0..5], 2, Quantity::Volume)?,
        settlement: measured("settlement-day flow", &data[5..10], 2, Quantity::Volume)?,
        time: meter_time(&data[10..17]),
        status: Status::from_bytes([data[17], data[18]]),
    })
}

/// A heat meter's answer to 901F.
pub fn heat_reading(data: &[u8]) -> Result<HeatReading, DecodeError> {
    if data.len() < HEAT_DATA {
        return Err(DecodeError::Length {
            kind: "heat meter",
            got: data.len(),
            want: HEAT_DATA,
        });
    }
    Ok(HeatReading {
        settlement_heat: measured("settlement-day heat", &data[0..5], 2, Quantity::Energy)?,
        current_heat: measured("current heat", &data[5..10], 2, Quantity::Energy)?,
        heat_power: measured("heat power", &data[10..15], 2, Quantity::Power)?,
        flow_rate: measured("flow rate", &data[15..20], 4, Quantity::FlowRate)?,
        volume: measured("cumulative flow", &data[20..25], 2, Quantity::Volume)?,
        supply_c: bcd("supply temperature", &data[25..28], 2)?,
        return_c: bcd("return temperature", &data[28..31], 2)?,
        operating_hours: bcd("operating time", &data[31..34], 0)?,
        time: meter_time(&data[34..41]),
        status: Status::from_bytes([data[41], data[42]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The water meter answer used throughout: 1234.56 m³ now, 1200.00 m³ at settlement,
    /// clock 2026-12-06 19:30:05, valve open, battery low.
    fn water() -> Vec<u8> {
        vec![
            0x56, 0x34, 0x12, 0x00, 0x2C, // 00 12 34 56 → 1234.56, m³
            0x00, 0x00, 0x12, 0x00, 0x2C, // 00 12 00 00 → 1200.00, m³
            0x05, 0x30, 0x19, 0x06, 0x12, 0x26, 0x20, // 05 s, 30 min, 19 h, 6th, 12, 2026
            0x04, 0x00, // ST1 = 0b100: valve open (00), battery low (D2)
        ]
    }

    #[test]
    fn a_water_meter_answer_decodes_to_flow_clock_and_status() {
        let r = flow_reading(&water()).unwrap();
        assert!((r.current.value - 1234.56).abs() < 1e-9);
        assert_eq!(r.current.unit.symbol, "m³");
        assert!((r.settlement.in_base() - 1200.0).abs() < 1e-9);
        assert_eq!(
            r.time,
            Some(jiff::civil::date(2026, 12, 6).at(19, 30, 5, 0))
        );
        assert_eq!(r.status.valve, Valve::Open);
        assert!(r.status.battery_low);
        // A maker's extra bytes after the standard's fields are ignored.
        let mut longer = water();
        longer.extend_from_slice(&[0x99, 0x99]);
        assert_eq!(flow_reading(&longer), Ok(r));
    }

    #[test]
    fn litres_become_cubic_metres_and_status_bits_name_the_valve() {
        let mut d = water();
        // 00 00 50 00, lowest first, is the digits 00 50 00 00 in L → 5000.00 L = 5 m³.
        d[0..5].copy_from_slice(&[0x00, 0x00, 0x50, 0x00, 0x29]);
        let r = flow_reading(&d).unwrap();
        assert!(
            (r.current.in_base() - 5.0).abs() < 1e-12,
            "{}",
            r.current.in_base()
        );
        assert_eq!(Status::from_bytes([0x01, 0]).valve, Valve::Closed);
        assert_eq!(Status::from_bytes([0x03, 0]).valve, Valve::Fault);
        assert_eq!(Status::from_bytes([0x02, 0xFF]).valve, Valve::Undefined);
        assert!(!Status::from_bytes([0xFB, 0]).battery_low);
    }

    #[test]
    fn a_meter_without_a_clock_still_gives_its_flow() {
        let mut d = water();
        d[10..17].copy_from_slice(&[0; 7]);
        assert_eq!(flow_reading(&d).unwrap().time, None);
        d[10..17].copy_from_slice(&[0x61, 0, 0, 1, 1, 0x26, 0x20]); // 61 seconds
        assert_eq!(flow_reading(&d).unwrap().time, None);
        d[10..17].copy_from_slice(&[0xFF; 7]);
        assert_eq!(flow_reading(&d).unwrap().time, None);
    }

    #[test]
    fn a_heat_meter_answer_decodes_every_field() {
        let mut d = vec![
            0x00, 0x00, 0x10, 0x00,
            0x05, // settlement heat: digits 00 10 00 00 → 1000.00 kWh
            0x00, 0x50, 0x12, 0x00, 0x05, // current heat: 00 12 50 00 → 1250.00 kWh
            0x50, 0x02, 0x00, 0x00, 0x17, // heat power: 00 00 02 50 → 2.50 kW
            0x00, 0x50, 0x01, 0x00, 0x35, // flow rate 1.5000 m³/h (00 01 50 00, 4 decimals)
            0x75, 0x34, 0x00, 0x00, 0x2C, // cumulative flow 34.75 m³
            0x00, 0x60, 0x00, // supply 60.00 °C (00 60 00 → 6000, 2 decimals)
            0x50, 0x45, 0x00, // return 45.50 °C
            0x34, 0x12, 0x00, // 1234 h
        ];
        d.extend_from_slice(&[0, 0, 8, 1, 1, 0x26, 0x20, 0, 0]);
        let r = heat_reading(&d).unwrap();
        assert!((r.current_heat.value - 1250.0).abs() < 1e-9);
        assert!((r.heat_power.in_base() - 2.5).abs() < 1e-9);
        assert!((r.flow_rate.value - 1.5).abs() < 1e-9);
        assert!((r.volume.value - 34.75).abs() < 1e-9);
        assert!((r.supply_c - 60.0).abs() < 1e-9 && (r.return_c - 45.5).abs() < 1e-9);
        assert!((r.operating_hours - 1234.0).abs() < 1e-9);
        assert_eq!(r.time, Some(jiff::civil::date(2026, 1, 1).at(8, 0, 0, 0)));
        // 1 GJ = 277.78 kWh.
        d[4] = 0x11;
        let gj = heat_reading(&d).unwrap().settlement_heat;
        assert!((gj.in_base() - 1000.0 * 1000.0 / 3.6).abs() < 1e-6);
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_decoding_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..60),
        ) {
            let _ = flow_reading(&bytes);
            let _ = heat_reading(&bytes);
        }
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        for n in 0..FLOW_DATA {
            let e = flow_reading(&water()[..n]).unwrap_err();
            assert!(e.to_string().contains("meter type"), "{e}");
        }
        assert!(
            heat_reading(&water()).is_err(),
            "a water answer is too short for heat"
        );
        let mut d = water();
        d[0] = 0xFA;
        assert!(matches!(flow_reading(&d), Err(DecodeError::NotBcd { .. })));
        let mut d = water();
        d[4] = 0x99;
        let e = flow_reading(&d).unwrap_err();
        assert!(e.to_string().contains("0x99"), "{e}");
        let mut d = water();
        d[4] = 0x05; // kWh where a volume belongs
        let e = flow_reading(&d).unwrap_err();
        assert!(e.to_string().contains("kWh, which is not a volume"), "{e}");
        assert!(unit_of(0x2C).is_some() && unit_of(0x00).is_none());
    }
}
