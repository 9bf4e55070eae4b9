//! `shopfloor probe`: read a range of registers and show it decoded in every type and byte
//! order side by side, so an engineer can find a device's mapping without a vendor tool (look
//! down the f32 table for the mains voltage, and the column it is in is the byte order).

use std::fmt::Write as _;
use std::time::Duration;

use super::config::{ByteOrder, DataType, RegisterKind};
use crate::model::Value;

use super::decode::{self, DecodeError};
use super::link::{self, LinkSpec, PollFault, ReadResult};

/// Opens `link`, reads once and closes.
pub async fn read(
    link: &LinkSpec,
    unit: u8,
    kind: RegisterKind,
    start: u16,
    count: u16,
    timeout: Duration,
) -> Result<ReadResult, PollFault> {
    let mut conn = link::open(link, timeout).await?;
    conn.read(tokio_modbus::Slave(unit), kind, start, count, timeout)
        .await
}

/// The decoded tables. `first` is the first address as the user numbers it (protocol address
/// plus `address_base`), so the rows match the manual the user is reading.
pub fn table(kind: RegisterKind, first: u32, words: &[u16]) -> String {
    let mut out = String::new();
    if kind.is_bit() {
        // A read always asks for at least one bit and `link` refuses a shorter answer; an
        // empty table still says so rather than computing "first − 1" as its end.
        match (words.len() as u32).checked_sub(1) {
            Some(last) => {
                let _ = writeln!(
                    out,
                    "{} {}–{}:",
                    kind.as_str(),
                    first,
                    first.saturating_add(last)
                );
            }
            None => {
                let _ = writeln!(out, "{} {first}: no bits", kind.as_str());
            }
        }
        for (row, chunk) in words.chunks(16).enumerate() {
            let _ = write!(out, "{:>7} ", first.saturating_add(row as u32 * 16));
            for bit in chunk {
                let _ = write!(out, " {bit}");
            }
            out.push('\n');
        }
        return out;
    }
    let _ = writeln!(
        out,
        "16-bit registers (BADC/DCBA: bytes swapped)\n{:>7}  {:>6}  {:>16}  {:>6}  {:>6}  {:>6}  {:>6}  {:>4}  {:>4}",
        "address", "hex", "bits", "u16", "i16", "u16 BA", "i16 BA", "AB", "BA"
    );
    for (i, w) in words.iter().enumerate() {
        let swapped = w.swap_bytes();
        let _ = writeln!(
            out,
            "{:>7}  0x{:04X}  {:016b}  {:>6}  {:>6}  {:>6}  {:>6}  {:>4}  {:>4}",
            first.saturating_add(i as u32),
            w,
            w,
            w,
            *w as i16,
            swapped,
            swapped as i16,
            printable(&w.to_be_bytes()),
            printable(&swapped.to_be_bytes()),
        );
    }
    for ty in [
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::U64,
        DataType::I64,
        DataType::F64,
    ] {
        let n = usize::from(ty.registers());
        if words.len() < n {
            continue;
        }
        let _ = write!(out, "\n{} starting at\n{:>7}", ty.as_str(), "address");
        for order in ByteOrder::ALL {
            let _ = write!(out, "  {:>22}", order.as_str());
        }
        out.push('\n');
        for i in 0..=words.len() - n {
            let _ = write!(out, "{:>7}", first.saturating_add(i as u32));
            for order in ByteOrder::ALL {
                let _ = write!(out, "  {:>22}", shown(&words[i..i + n], ty, order));
            }
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "\ntext ABCD: {:?}\ntext BADC: {:?}",
        decode::text(words, ByteOrder::ABCD),
        decode::text(words, ByteOrder::BADC)
    );
    out
}

/// One value as the table shows it: numbers as they would be stored, and what a field of that
/// type would make of values that cannot be stored (NaN, a u64 beyond i64).
fn shown(words: &[u16], ty: DataType, order: ByteOrder) -> String {
    match decode::decode(words, ty, order, None, None, None) {
        Ok(Value::Float(x)) => float(x),
        Ok(v) => v.to_string(),
        Err(DecodeError::NotFinite(x)) => x.to_string(),
        Err(DecodeError::OutOfRange(u)) => u.to_string(),
        Err(e) => e.to_string(),
    }
}

/// Short enough for a column, exact enough to recognise 230.1 or 49.98.
pub(crate) fn float(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 || (1e-3..1e9).contains(&a) {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{x:.4e}")
    }
}

pub(crate) fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_graphic() || *b == b' ' {
                char::from(*b)
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_shows_up_in_the_column_of_its_byte_order() {
        // 230.5f32 = 0x43668000. Written low word first (CDAB) at address 10: 8000 4366.
        let t = table(RegisterKind::Input, 10, &[0x8000, 0x4366]);
        let row = t
            .lines()
            .skip_while(|l| !l.starts_with("f32"))
            .nth(2)
            .expect("f32 row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        // address, ABCD, CDAB, BADC, DCBA: only CDAB reads 230.5.
        assert_eq!(cells[0], "10");
        assert_eq!(cells[2], "230.5");
        assert_ne!(cells[1], "230.5");
        assert_ne!(cells[3], "230.5");
        assert_ne!(cells[4], "230.5");
    }

    #[test]
    fn sixteen_bit_rows_show_hex_bits_and_text() {
        // 0x4142 = "AB", 16706; swapped "BA" = 0x4241 = 16961.
        let t = table(RegisterKind::Holding, 1, &[0x4142]);
        let row = t.lines().nth(2).expect("first row");
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            vec![
                "1",
                "0x4142",
                "0100000101000010",
                "16706",
                "16706",
                "16961",
                "16961",
                "AB",
                "BA"
            ]
        );
        // One register: no 32-bit tables.
        assert!(!t.contains("u32 starting"));
    }

    #[test]
    fn an_empty_answer_makes_a_table_that_says_so() {
        assert_eq!(table(RegisterKind::Coil, 0, &[]), "coil 0: no bits\n");
        assert_eq!(
            table(RegisterKind::Discrete, u32::MAX, &[1]).lines().next(),
            Some(format!("discrete {}–{}:", u32::MAX, u32::MAX).as_str())
        );
    }

    #[test]
    fn bits_are_listed_sixteen_to_a_row() {
        // Bits 0, 3, 6, … 15 set; 16 and 17 (16 % 3 = 1, 17 % 3 = 2) clear; 18 bits.
        let bits: Vec<u16> = (0..18).map(|i| u16::from(i % 3 == 0)).collect();
        let t = table(RegisterKind::Coil, 0, &bits);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "coil 0–17:");
        assert!(lines[1].starts_with("      0  1 0 0 1"));
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            vec!["16", "0", "0"]
        );
    }
}
