//! `shopfloor probe melsec://host:port D100 --count 20`: read a range of devices once and show
//! it decoded as every type, so an engineer can find where a value lies without GX Works at
//! hand (look down the f32 table for the pressure, the u32 table for the stroke counter).
//!
//! Word devices are read in word units (batch read 0401/0000) and shown low word first, as
//! GX Works stores a 32-bit value in D100 (low) and D101 (high), with a high-word-first column
//! beside it for values an HMI or another controller wrote the other way round. Bit devices
//! are read in bit units (0401/0001) and listed sixteen to a row. Nothing else is sent.

use std::fmt::Write as _;
use std::time::Duration;

use super::address::{Address, Family, Kind, McType};
use super::client::{Fault, connect, exchange};
use super::decode::{self, bit_points};
use super::frame::{self, BatchRead, Framing, McError, Route};
use crate::model::Value;
use crate::source::modbus::probe::{float, printable};

/// Where a probe reads: `melsec://host:port`, with `?family=fx5` (X/Y in octal; default `q`)
/// and `&frame=4e` (default 3E) as query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    pub family: Family,
    pub four_e: bool,
}

/// Reads a `melsec://` URL.
pub fn target(url: &str) -> Result<Target, String> {
    let example = "e.g. melsec://192.168.3.39:5000 or melsec://192.168.3.39:5000?family=fx5";
    let rest = url
        .strip_prefix("melsec://")
        .ok_or_else(|| format!("`{url}` is not a melsec:// URL ({example})"))?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err(format!(
            "`{url}` needs host:port, the port opened for the MC protocol in GX Works ({example})"
        ));
    }
    let mut t = Target {
        address: authority.to_string(),
        family: Family::Q,
        four_e: false,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("family", "fx5")) => t.family = Family::Fx,
            Some(("family", "q" | "l" | "iqr")) => t.family = Family::Q,
            Some(("frame", "3e" | "3E")) => t.four_e = false,
            Some(("frame", "4e" | "4E")) => t.four_e = true,
            _ => {
                return Err(format!(
                    "`{pair}` in `{url}`: the parameters are family=fx5|q|l|iqr and frame=3e|4e"
                ));
            }
        }
    }
    Ok(t)
}

/// What a probe read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// The batch read a probe sends for `count` devices from `first`.
pub fn request(first: &Address, count: u16) -> Result<BatchRead, String> {
    if first.bit.is_some() {
        return Err(format!(
            "give the word ({}{}) rather than one of its bits",
            first.device, first.number
        ));
    }
    match first.device.kind() {
        Kind::Word => BatchRead::words(first.device, first.number, count),
        Kind::Bit => BatchRead::bits(first.device, first.number, count, first.family),
    }
}

/// Connects, reads once and closes. Errors come in words with what to do.
pub async fn read(
    target: &Target,
    first: &Address,
    count: u16,
    timeout: Duration,
) -> Result<Answer, String> {
    let read = request(first, count)?;
    let framing = if target.four_e {
        Framing::E4 { serial: 1 }
    } else {
        Framing::E3
    };
    let timer = (timeout.as_millis() / 250).clamp(1, u128::from(u16::MAX)) as u16;
    let bytes = frame::batch_read_request(framing, &Route::LOCAL, timer, &read);
    let fail = |f: Fault| f.to_string();
    let mut stream = connect(&target.address, timeout).await.map_err(fail)?;
    let answer = exchange(&mut stream, framing, &bytes, timeout)
        .await
        .map_err(fail)?;
    let data = match frame::batch_read_reply(framing, &answer, &read) {
        Ok(range) => &answer[range],
        Err(e @ McError::EndCode(_)) => return Err(e.to_string()),
        Err(e) => return Err(format!("protocol error: {e}")),
    };
    if read.in_bits() {
        bit_points(data, usize::from(count))
            .map(Answer::Bits)
            .map_err(|e| format!("protocol error: {e}"))
    } else {
        Ok(Answer::Words(
            data.chunks_exact(2)
                .map(|w| u16::from_le_bytes([w[0], w[1]]))
                .collect(),
        ))
    }
}

fn at(first: &Address, i: usize) -> String {
    Address {
        number: first.number + i as u32,
        ..*first
    }
    .to_string()
}

/// The decoded tables, rows named by device as GX Works writes them.
pub fn table(first: &Address, answer: &Answer) -> String {
    let mut out = String::new();
    let words = match answer {
        Answer::Bits(bits) => {
            let last = bits.len().saturating_sub(1);
            let _ = writeln!(out, "{}–{}:", at(first, 0), at(first, last));
            for (row, chunk) in bits.chunks(16).enumerate() {
                let _ = write!(out, "{:>8} ", at(first, row * 16));
                for bit in chunk {
                    let _ = write!(out, " {}", u8::from(*bit));
                }
                out.push('\n');
            }
            return out;
        }
        Answer::Words(words) => words,
    };
    let _ = writeln!(
        out,
        "16-bit words\n{:>8}  {:>6}  {:>16}  {:>6}  {:>6}  {:>4}",
        "device", "hex", "bits", "u16", "i16", "text"
    );
    for (i, w) in words.iter().enumerate() {
        let [lo, hi] = w.to_le_bytes();
        let _ = writeln!(
            out,
            "{:>8}  0x{w:04X}  {w:016b}  {w:>6}  {:>6}  {:>4}",
            at(first, i),
            *w as i16,
            printable(&[lo, hi]),
        );
    }
    for ty in [
        McType::U32,
        McType::I32,
        McType::F32,
        McType::U64,
        McType::I64,
        McType::F64,
    ] {
        let n = usize::from(ty.words());
        if words.len() < n {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{} starting at\n{:>8}  {:>24}  {:>24}",
            ty.name(),
            "device",
            "low word first (GX Works)",
            "high word first"
        );
        for i in 0..=words.len() - n {
            let low_first: Vec<u8> = words[i..i + n]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let high_first: Vec<u8> = words[i..i + n]
                .iter()
                .rev()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let _ = writeln!(
                out,
                "{:>8}  {:>24}  {:>24}",
                at(first, i),
                shown(ty, &low_first),
                shown(ty, &high_first)
            );
        }
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let _ = writeln!(
        out,
        "\ntext (two characters a word, low byte first): {:?}",
        printable(&bytes)
    );
    out
}

/// A value as the table shows it: floats short, and what cannot be stored shown anyway.
fn shown(ty: McType, bytes: &[u8]) -> String {
    match decode::decode(ty, bytes, None, None, None) {
        Ok(Value::Float(x)) => float(x),
        Ok(v) => v.to_string(),
        Err(decode::DecodeError::NotFinite(x)) => x.to_string(),
        Err(decode::DecodeError::OutOfRange(u)) => u.to_string(),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_the_port_family_and_frame() {
        assert_eq!(
            target("melsec://10.0.0.5:5000?family=fx5&frame=4e"),
            Ok(Target {
                address: "10.0.0.5:5000".into(),
                family: Family::Fx,
                four_e: true
            })
        );
        assert_eq!(
            target("melsec://10.0.0.5:5000").map(|t| t.family),
            Ok(Family::Q)
        );
        assert!(
            target("melsec://10.0.0.5")
                .unwrap_err()
                .contains("needs host:port")
        );
        assert!(
            target("s7://h:102")
                .unwrap_err()
                .contains("not a melsec:// URL")
        );
        assert!(
            target("melsec://h:1?family=fx3")
                .unwrap_err()
                .contains("family=fx5")
        );
    }

    #[test]
    fn a_float_shows_in_the_low_word_first_column() {
        // 230.5f32 = 0x43668000, stored as GX Works does: D10 = 0x8000, D11 = 0x4366.
        let first = Address::parse("D10", Family::Q).unwrap();
        let t = table(&first, &Answer::Words(vec![0x8000, 0x4366]));
        let row = t
            .lines()
            .skip_while(|l| !l.starts_with("f32"))
            .nth(2)
            .expect("f32 row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[0], "D10");
        assert_eq!(cells[1], "230.5");
        assert_ne!(cells[2], "230.5");
    }

    #[test]
    fn bits_are_named_in_the_familys_numbering() {
        // X on an FX5 is octal: 18 points from X0 end at X21, the second row starts at X20.
        let first = Address::parse("X0", Family::Fx).unwrap();
        let bits: Vec<bool> = (0..18).map(|i| i == 16).collect();
        let t = table(&first, &Answer::Bits(bits));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "X0–X21:");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            vec!["X20", "1", "0"]
        );
    }
}
