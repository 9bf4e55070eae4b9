//! `shopfloor probe s7://host?rack=0&slot=1 DB10.DBW0 --count 20`: read words from a PLC and
//! show them decoded as every S7 type side by side, so an engineer can check an address map
//! against the PLC without TIA Portal (look down the REAL column for the pressure, and the
//! address in its row is the one to write).

use std::fmt::Write as _;
use std::time::Duration;

use super::address::{Address, Area, S7Type, Width};
use super::config::{DEFAULT_LOCAL_TSAP, parse_tsap};
use super::decode;
use super::frame::{self, REQUESTED_PDU, ReadItem};
use super::link::{self, Fault};
use crate::model::Value;
use crate::source::modbus::probe::{float, printable};

/// Where the probe connects: from an `s7://host[:port]?rack=…&slot=…` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    pub tsaps: (u16, u16),
    pub pdu: u16,
}

/// Reads `s7://host[:port][?rack=R&slot=S | ?local_tsap=01.00&remote_tsap=02.00][&pdu=N]`.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let example = "write it as s7://192.168.1.30?rack=0&slot=1, or s7://host?local_tsap=01.00&remote_tsap=20.00 for a PLC connected by TSAP";
    let rest = url
        .strip_prefix("s7://")
        .ok_or_else(|| format!("`{url}` is not an s7:// URL: {example}"))?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() {
        return Err(format!("`{url}` names no host: {example}"));
    }
    let address = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port `{port}` is not 1–65535"))?;
            authority.to_string()
        }
        _ => format!("{authority}:{}", frame::ISO_TCP_PORT),
    };
    let (mut rack, mut slot, mut local, mut remote, mut pdu) =
        (0u8, 1u8, None, None, REQUESTED_PDU);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |max: u32| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{k}={v}: {k} is 0–{max}"))
        };
        match k {
            "rack" => rack = number(7)? as u8,
            "slot" => slot = number(31)? as u8,
            "local_tsap" => local = Some(parse_tsap(v)?),
            "remote_tsap" => remote = Some(parse_tsap(v)?),
            "pdu" => {
                pdu = number(u32::from(REQUESTED_PDU))? as u16;
                if pdu < frame::MIN_PDU {
                    return Err(format!(
                        "pdu={pdu}: pdu is {}–{REQUESTED_PDU}",
                        frame::MIN_PDU
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "unknown parameter `{k}` in `{url}`: rack, slot, local_tsap, remote_tsap and pdu are known"
                ));
            }
        }
    }
    let tsaps = match (local, remote) {
        (Some(l), Some(r)) => (l, r),
        (None, None) => (DEFAULT_LOCAL_TSAP, frame::remote_tsap(rack, slot)),
        _ => return Err("local_tsap and remote_tsap go together".to_string()),
    };
    Ok(Target {
        address,
        tsaps,
        pdu,
    })
}

/// Connects, reads `count` words (timers and counters: elements) from `start`'s byte, in as
/// many reads as the granted PDU needs, and disconnects. Returns the PDU granted and the bytes.
pub async fn read(
    target: &Target,
    start: Address,
    count: u16,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), Fault> {
    let mut conn = link::connect(&target.address, target.tsaps, target.pdu, timeout).await?;
    let per_read = u32::from(frame::max_item_bytes(conn.pdu)) / 2;
    let unit = if start.area.is_element_area() { 1 } else { 2 };
    let mut out = Vec::new();
    let mut done = 0u32;
    while done < u32::from(count) {
        let n = (u32::from(count) - done).min(per_read);
        let item = ReadItem {
            area: start.area,
            start: start.start + done * unit,
            count: (n * unit) as u16,
        };
        let (frame, parts) = conn.read(&[item], timeout).await?;
        match parts.into_iter().next() {
            Some(Ok(range)) => out.extend_from_slice(&frame[range]),
            Some(Err(e)) => return Err(Fault::Item(e)),
            None => {}
        }
        done += n;
    }
    Ok((conn.pdu, out))
}

/// The decoded tables for `bytes` read from `start`'s byte (or element).
pub fn table(start: Address, bytes: &[u8]) -> String {
    let mut out = String::new();
    let at = |offset: usize, width: Width| Address {
        area: start.area,
        start: start.start + offset as u32,
        width,
    };
    if start.area.is_element_area() {
        let _ = writeln!(
            out,
            "{:>8}  {:>6}  {:>10}  {:>8}",
            "element", "hex", "timer ms", "counter"
        );
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let _ = writeln!(
                out,
                "{:>8}  0x{:02X}{:02X}  {:>10}  {:>8}",
                Address {
                    area: start.area,
                    start: start.start + i as u32,
                    width: Width::Element,
                }
                .to_string(),
                pair[0],
                pair[1],
                shown(S7Type::Timer, pair),
                shown(S7Type::Counter, pair),
            );
        }
        return out;
    }
    let _ = writeln!(
        out,
        "16-bit words (big-endian, as the PLC stores them)\n{:>14}  {:>6}  {:>17}  {:>6}  {:>6}  {:>9}  {:>2}",
        "address", "hex", "bits", "word", "int", "s5time ms", "ch"
    );
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let w = u16::from_be_bytes([pair[0], pair[1]]);
        let _ = writeln!(
            out,
            "{:>14}  0x{w:04X}  {:08b} {:08b}  {:>6}  {:>6}  {:>9}  {}",
            at(2 * i, Width::Word).to_string(),
            pair[0],
            pair[1],
            w,
            w as i16,
            shown(S7Type::S5Time, pair),
            printable(pair),
        );
    }
    let tables: [(&str, Width, &[S7Type]); 2] = [
        (
            "32-bit",
            Width::DoubleWord,
            &[S7Type::DWord, S7Type::DInt, S7Type::Real],
        ),
        ("64-bit", Width::Byte, &[S7Type::LInt, S7Type::LReal]),
    ];
    for (title, width, types) in tables {
        let size = types[0].size() as usize;
        if bytes.len() < size {
            continue;
        }
        let _ = write!(out, "\n{title} values starting at\n{:>14}", "address");
        for ty in types {
            let _ = write!(out, "  {:>22}", ty.name());
        }
        out.push('\n');
        for i in (0..=bytes.len() - size).step_by(2) {
            let _ = write!(out, "{:>14}", at(i, width).to_string());
            for ty in types {
                let _ = write!(out, "  {:>22}", shown(*ty, &bytes[i..i + size]));
            }
            out.push('\n');
        }
    }
    let string = decode::decode(
        S7Type::String {
            max: u8::try_from(bytes.len().saturating_sub(2)).unwrap_or(u8::MAX),
        },
        bytes,
        0,
        None,
        None,
    );
    let _ = writeln!(
        out,
        "\nSTRING at {}: {}\ntext: {:?}",
        at(0, Width::Byte),
        match string {
            Ok(Value::Text(s)) => format!("{s:?}"),
            Ok(v) => v.to_string(),
            Err(e) => format!("not a STRING ({e})"),
        },
        printable(bytes)
    );
    out
}

/// One value as the table shows it; what a field of that type would refuse is shown raw.
fn shown(ty: S7Type, bytes: &[u8]) -> String {
    match decode::decode(ty, bytes, 0, None, None) {
        Ok(Value::Float(x)) => float(x),
        Ok(v) => v.to_string(),
        Err(decode::DecodeError::NotFinite(x)) => x.to_string(),
        Err(decode::DecodeError::OutOfRange(_, u)) => u.to_string(),
        Err(decode::DecodeError::NotBcd(..)) => "-".to_string(),
        Err(e) => e.to_string(),
    }
}

/// The area and byte the probe starts at, from an address as the engineer writes it; a bit
/// address starts at its byte.
pub fn start_of(text: &str) -> Result<Address, String> {
    let a = Address::parse(text).map_err(|e| e.to_string())?;
    Ok(match a.area {
        Area::Timers | Area::Counters => a,
        _ => Address {
            width: Width::Word,
            ..a
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_tsaps_and_pdu() {
        let t = parse_url("s7://10.0.0.5?rack=0&slot=2").unwrap();
        assert_eq!(t.address, "10.0.0.5:102");
        // Rack 0 slot 2: 0x0100 | 2.
        assert_eq!(t.tsaps, (0x0100, 0x0102));
        assert_eq!(t.pdu, 960);
        let t = parse_url("s7://plc:1102?local_tsap=01.00&remote_tsap=20.00&pdu=240").unwrap();
        assert_eq!(
            (t.address.as_str(), t.tsaps, t.pdu),
            ("plc:1102", (0x0100, 0x2000), 240)
        );
        assert_eq!(parse_url("s7://h").unwrap().tsaps, (0x0100, 0x0101));
        for (bad, words) in [
            ("http://h", "not an s7:// URL"),
            ("s7://?rack=0", "names no host"),
            ("s7://h?slot=40", "slot is 0–31"),
            ("s7://h?local_tsap=01.00", "go together"),
            ("s7://h?rak=0", "unknown parameter `rak`"),
            ("s7://h?pdu=100", "pdu is 240–960"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn words_are_shown_in_every_type_at_their_addresses() {
        // DB10 from byte 0: INT −2 (0xFFFE), then REAL 123.5 (0x42F70000) at byte 2.
        let bytes = [0xFF, 0xFE, 0x42, 0xF7, 0x00, 0x00];
        let start = start_of("DB10.DBW0").unwrap();
        let t = table(start, &bytes);
        let first: Vec<&str> = t.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(&first[..2], &["DB10.DBW0", "0xFFFE"]);
        assert_eq!(&first[4..6], &["65534", "-2"]);
        let real_row = t
            .lines()
            .find(|l| l.trim_start().starts_with("DB10.DBD2"))
            .unwrap();
        assert!(real_row.ends_with("123.5"), "{real_row}");
        assert!(t.contains("STRING at DB10.DBB0: not a STRING"), "{t}");
    }

    #[test]
    fn timers_and_counters_are_shown_by_element() {
        // T3 = S5TIME 0x2123 (1 s base, 123) = 123 000 ms, not a counter's BCD of 3 digits?
        // 0x2123 has digits 1 2 3 in its low 12 bits: counter 123.
        let t = table(start_of("T3").unwrap(), &[0x21, 0x23]);
        let row: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, vec!["T3", "0x2123", "123000", "123"]);
    }
}
