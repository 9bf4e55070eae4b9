//! DL/T 645 values: the common data identifiers with their formats, and BCD bytes to
//! numbers. Pure functions, no I/O.
//!
//! A value is packed BCD, lowest byte first, with a fixed number of decimals that the
//! identifier's format gives (`XXXXXX.XX`: four bytes, two decimals). Where a quantity has a
//! direction (current, power, power factor, combined energy), the highest bit of the highest
//! byte is the sign (1 = negative) and the digits are the magnitude.
//!
//! The table holds the identifiers an energy account needs. Identifiers and formats follow
//! DL/T 645-2007 Appendix A (tables A.1 energy and A.3 variables); the standard's text was not
//! at hand, so they were taken from the identifier tables of the `dlt645` package on PyPI
//! (version 3.2.0, `config/variable_types.py`, which the integration tests will use as an
//! independent meter), and the package's BCD encoder gives the same bytes as the tests here.
//! Which quantities carry a sign (current, power, power factor, combined energy) follows the
//! 2007 edition's notes on direction. The 1997 identifiers (`9010`, `B611` …) and their formats
//! are the common ones of that edition, from its widely reproduced appendix; a meter's manual
//! is the last word, and any identifier can be configured with its own format.

use super::frame::DataId;

/// How a value is packed: its length in bytes, its decimals and whether it carries a sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    pub bytes: u8,
    pub decimals: u8,
    pub signed: bool,
}

impl Format {
    pub const fn new(bytes: u8, decimals: u8, signed: bool) -> Format {
        Format {
            bytes,
            decimals,
            signed,
        }
    }

    /// The format as the standard writes it: `XXXXXX.XX` for four bytes and two decimals.
    pub fn pattern(&self) -> String {
        let digits = usize::from(self.bytes) * 2;
        let decimals = usize::from(self.decimals).min(digits);
        let mut out = "X".repeat(digits - decimals);
        if decimals > 0 {
            out.push('.');
            out.push_str(&"X".repeat(decimals));
        }
        out
    }
}

/// One named data identifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Identifier {
    pub id: DataId,
    /// The signal name a meter's reading gets by default.
    pub signal: &'static str,
    /// The standard's Chinese name, so the meter's manual can be matched.
    pub chinese: &'static str,
    pub unit: &'static str,
    pub format: Format,
}

const fn v07(
    di: u32,
    signal: &'static str,
    chinese: &'static str,
    unit: &'static str,
    format: Format,
) -> Identifier {
    Identifier {
        id: DataId::V2007(di),
        signal,
        chinese,
        unit,
        format,
    }
}

const fn v97(
    di: u16,
    signal: &'static str,
    chinese: &'static str,
    unit: &'static str,
    format: Format,
) -> Identifier {
    Identifier {
        id: DataId::V1997(di),
        signal,
        chinese,
        unit,
        format,
    }
}

/// XXXXXX.XX kWh or kvarh, four bytes; combined energies carry a sign.
const ENERGY: Format = Format::new(4, 2, false);
const ENERGY_SIGNED: Format = Format::new(4, 2, true);
/// XXX.X V, two bytes.
const VOLTAGE: Format = Format::new(2, 1, false);
/// XXX.XXX A, three bytes, signed (the direction of the current).
const CURRENT: Format = Format::new(3, 3, true);
/// XX.XXXX kW, kvar or kVA, three bytes, signed.
const POWER: Format = Format::new(3, 4, true);
/// X.XXX, two bytes, signed.
const POWER_FACTOR: Format = Format::new(2, 3, true);

/// The common identifiers, 2007 edition first, then 1997.
pub const IDENTIFIERS: &[Identifier] = &[
    v07(
        0x0000_0000,
        "energy_active_combined_kwh",
        "(当前)组合有功总电能",
        "kWh",
        ENERGY_SIGNED,
    ),
    v07(
        0x0001_0000,
        "energy_active_import_kwh",
        "(当前)正向有功总电能",
        "kWh",
        ENERGY,
    ),
    v07(
        0x0002_0000,
        "energy_active_export_kwh",
        "(当前)反向有功总电能",
        "kWh",
        ENERGY,
    ),
    v07(
        0x0003_0000,
        "energy_reactive_combined1_kvarh",
        "(当前)组合无功1总电能",
        "kvarh",
        ENERGY_SIGNED,
    ),
    v07(
        0x0004_0000,
        "energy_reactive_combined2_kvarh",
        "(当前)组合无功2总电能",
        "kvarh",
        ENERGY_SIGNED,
    ),
    v07(0x0201_0100, "voltage_a_v", "A相电压", "V", VOLTAGE),
    v07(0x0201_0200, "voltage_b_v", "B相电压", "V", VOLTAGE),
    v07(0x0201_0300, "voltage_c_v", "C相电压", "V", VOLTAGE),
    v07(0x0202_0100, "current_a_a", "A相电流", "A", CURRENT),
    v07(0x0202_0200, "current_b_a", "B相电流", "A", CURRENT),
    v07(0x0202_0300, "current_c_a", "C相电流", "A", CURRENT),
    v07(
        0x0203_0000,
        "power_active_kw",
        "瞬时总有功功率",
        "kW",
        POWER,
    ),
    v07(
        0x0203_0100,
        "power_active_a_kw",
        "瞬时A相有功功率",
        "kW",
        POWER,
    ),
    v07(
        0x0203_0200,
        "power_active_b_kw",
        "瞬时B相有功功率",
        "kW",
        POWER,
    ),
    v07(
        0x0203_0300,
        "power_active_c_kw",
        "瞬时C相有功功率",
        "kW",
        POWER,
    ),
    v07(
        0x0204_0000,
        "power_reactive_kvar",
        "瞬时总无功功率",
        "kvar",
        POWER,
    ),
    v07(
        0x0205_0000,
        "power_apparent_kva",
        "瞬时总视在功率",
        "kVA",
        POWER,
    ),
    v07(0x0206_0000, "power_factor", "总功率因数", "", POWER_FACTOR),
    v07(
        0x0206_0100,
        "power_factor_a",
        "A相功率因数",
        "",
        POWER_FACTOR,
    ),
    v07(
        0x0206_0200,
        "power_factor_b",
        "B相功率因数",
        "",
        POWER_FACTOR,
    ),
    v07(
        0x0206_0300,
        "power_factor_c",
        "C相功率因数",
        "",
        POWER_FACTOR,
    ),
    v07(0x0280_0001, "current_neutral_a", "零线电流", "A", CURRENT),
    v07(
        0x0280_0002,
        "frequency_hz",
        "电网频率",
        "Hz",
        Format::new(2, 2, false),
    ),
    v07(
        0x0280_0007,
        "meter_temperature_c",
        "表内温度",
        "°C",
        Format::new(2, 1, true),
    ),
    // DL/T 645-1997: no sign bits; voltage in whole volts, current in XX.XX A.
    v97(
        0x9010,
        "energy_active_import_kwh",
        "正向有功总电能",
        "kWh",
        ENERGY,
    ),
    v97(
        0x9020,
        "energy_active_export_kwh",
        "反向有功总电能",
        "kWh",
        ENERGY,
    ),
    v97(
        0xB611,
        "voltage_a_v",
        "A相电压",
        "V",
        Format::new(2, 0, false),
    ),
    v97(
        0xB612,
        "voltage_b_v",
        "B相电压",
        "V",
        Format::new(2, 0, false),
    ),
    v97(
        0xB613,
        "voltage_c_v",
        "C相电压",
        "V",
        Format::new(2, 0, false),
    ),
    v97(
        0xB621,
        "current_a_a",
        "A相电流",
        "A",
        Format::new(2, 2, false),
    ),
    v97(
        0xB622,
        "current_b_a",
        "B相电流",
        "A",
        Format::new(2, 2, false),
    ),
    v97(
        0xB623,
        "current_c_a",
        "C相电流",
        "A",
        Format::new(2, 2, false),
    ),
    v97(
        0xB630,
        "power_active_kw",
        "瞬时有功功率",
        "kW",
        Format::new(3, 4, false),
    ),
    v97(
        0xB650,
        "power_factor",
        "总功率因数",
        "",
        Format::new(2, 3, false),
    ),
];

/// The table's entry for `id`, if it has one.
pub fn identifier(id: DataId) -> Option<&'static Identifier> {
    IDENTIFIERS.iter().find(|i| i.id == id)
}

/// Why a value's bytes could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "the meter sent {got} value bytes where format {pattern} has {want}: the identifier's \
         format is wrong in the config, or the meter packs it its own way (see its manual)"
    )]
    Length {
        pattern: String,
        got: usize,
        want: usize,
    },
    #[error(
        "byte {byte:#04x} of the value is not BCD: the meter has no value there (many send \
         FF bytes for an identifier they do not fill)"
    )]
    NotBcd { byte: u8 },
    #[error(
        "a format of {bytes} bytes: DL/T 645 numbers have 8 bytes at most (check the \
         identifier's format in the config)"
    )]
    TooLong { bytes: usize },
    #[error("{value} does not fit format {pattern}")]
    OutOfRange { value: f64, pattern: String },
}

/// The number in `bytes` packed as `format` says.
pub fn decode(format: Format, bytes: &[u8]) -> Result<f64, DecodeError> {
    let want = usize::from(format.bytes);
    if bytes.len() != want || want == 0 {
        return Err(DecodeError::Length {
            pattern: format.pattern(),
            got: bytes.len(),
            want,
        });
    }
    // Sixteen digits fit a u64 (and an f64 exactly enough); no identifier has more.
    if want > 8 {
        return Err(DecodeError::TooLong { bytes: want });
    }
    let mut negative = false;
    let mut magnitude: u64 = 0;
    // Highest byte (last on the wire) first.
    for (i, byte) in bytes.iter().rev().enumerate() {
        let mut byte = *byte;
        if i == 0 && format.signed {
            negative = byte & 0x80 != 0;
            byte &= 0x7F;
        }
        let (high, low) = (byte >> 4, byte & 0x0F);
        if high > 9 || low > 9 {
            return Err(DecodeError::NotBcd {
                byte: bytes[want - 1 - i],
            });
        }
        magnitude = magnitude * 100 + u64::from(high) * 10 + u64::from(low);
    }
    let value = magnitude as f64 / 10f64.powi(i32::from(format.decimals));
    Ok(if negative { -value } else { value })
}

/// Several values of one format in a row, as a block identifier (`0001FF00`, forward active
/// energy total and per tariff) answers.
pub fn decode_block(format: Format, bytes: &[u8]) -> Result<Vec<f64>, DecodeError> {
    let size = usize::from(format.bytes);
    if size == 0 || bytes.is_empty() || !bytes.len().is_multiple_of(size) {
        return Err(DecodeError::Length {
            pattern: format.pattern(),
            got: bytes.len(),
            want: size,
        });
    }
    bytes
        .chunks_exact(size)
        .map(|c| decode(format, c))
        .collect()
}

/// `value` packed as `format` says, rounded to its decimals: what a simulated meter answers.
pub fn encode(format: Format, value: f64) -> Result<Vec<u8>, DecodeError> {
    let out_of_range = || DecodeError::OutOfRange {
        value,
        pattern: format.pattern(),
    };
    if format.bytes > 8 {
        return Err(DecodeError::TooLong {
            bytes: usize::from(format.bytes),
        });
    }
    let digits = u32::from(format.bytes) * 2;
    let scaled = (value.abs() * 10f64.powi(i32::from(format.decimals))).round();
    // A signed format gives its top bit to the sign: the top digit may be 0–7 only.
    let limit = 10f64.powi(digits as i32) / if format.signed { 1.25 } else { 1.0 };
    if !scaled.is_finite() || scaled >= limit || (value < 0.0 && !format.signed) {
        return Err(out_of_range());
    }
    let mut magnitude = scaled as u64;
    let mut out = Vec::with_capacity(usize::from(format.bytes));
    for _ in 0..format.bytes {
        let pair = (magnitude % 100) as u8;
        out.push(((pair / 10) << 4) | (pair % 10));
        magnitude /= 100;
    }
    if format.signed
        && value < 0.0
        && scaled > 0.0
        && let Some(top) = out.last_mut()
    {
        *top |= 0x80;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn energy_is_xxxxxx_xx_lowest_byte_first() {
        // 78 56 34 12 → digits 12 34 56 78 → 123456.78 kWh.
        assert!(close(
            decode(ENERGY, &[0x78, 0x56, 0x34, 0x12]).unwrap(),
            123_456.78
        ));
        // Combined energy with the sign bit: 92 → 12 negative: −123456.78.
        assert!(close(
            decode(ENERGY_SIGNED, &[0x78, 0x56, 0x34, 0x92]).unwrap(),
            -123_456.78
        ));
        // The same top byte in an unsigned format is the digits 9 and 2.
        assert!(close(
            decode(ENERGY, &[0x78, 0x56, 0x34, 0x92]).unwrap(),
            923_456.78
        ));
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_decoding_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            size in 0u8..16,
            decimals in 0u8..8,
            signed in proptest::bool::ANY,
        ) {
            let format = Format::new(size, decimals, signed);
            let _ = decode(format, &bytes);
            let _ = decode_block(format, &bytes);
            let _ = format.pattern();
        }

        #[test]
        fn what_encodes_decodes_to_the_rounded_value(
            value in -1e9f64..1e9,
            size in 1u8..=8,
            decimals in 0u8..=4,
            signed in proptest::bool::ANY,
        ) {
            let format = Format::new(size, decimals, signed);
            if let Ok(bytes) = encode(format, value) {
                let back = decode(format, &bytes).unwrap();
                let step = 10f64.powi(-i32::from(decimals));
                proptest::prop_assert!((back - value).abs() <= step / 2.0 + 1e-9 * value.abs());
            }
        }
    }

    /// The byte vectors below are what the `dlt645` package (PyPI, 3.2.0) produces with
    /// `float_to_bcd(value, format, "little")` for the same values, sign bits included.
    #[test]
    fn each_common_format_decodes_with_its_decimals_and_sign() {
        // Voltage 20 22 → 2220 → 222.0 V.
        assert!(close(decode(VOLTAGE, &[0x20, 0x22]).unwrap(), 222.0));
        // Current 67 45 01 → 014567 → 14.567 A; with the sign bit 81: −14.567 A.
        assert!(close(decode(CURRENT, &[0x67, 0x45, 0x01]).unwrap(), 14.567));
        assert!(close(
            decode(CURRENT, &[0x67, 0x45, 0x81]).unwrap(),
            -14.567
        ));
        // Power 56 34 12 → 123456 → 12.3456 kW.
        assert!(close(decode(POWER, &[0x56, 0x34, 0x12]).unwrap(), 12.3456));
        // Power factor 50 09 → 0950 → 0.950; lagging export 80 sign: 50 89 → −0.950.
        assert!(close(decode(POWER_FACTOR, &[0x50, 0x09]).unwrap(), 0.95));
        assert!(close(decode(POWER_FACTOR, &[0x50, 0x89]).unwrap(), -0.95));
        // Frequency 00 50 → 50.00 Hz.
        let hz = identifier(DataId::V2007(0x0280_0002)).unwrap();
        assert!(close(decode(hz.format, &[0x00, 0x50]).unwrap(), 50.0));
        // 1997 voltage in whole volts: 20 02 → 220 V.
        let v = identifier(DataId::V1997(0xB611)).unwrap();
        assert!(close(decode(v.format, &[0x20, 0x02]).unwrap(), 220.0));
    }

    #[test]
    fn the_table_names_each_identifier_once_per_edition() {
        for (i, a) in IDENTIFIERS.iter().enumerate() {
            assert!(
                IDENTIFIERS[i + 1..].iter().all(|b| b.id != a.id),
                "{} twice",
                a.id
            );
            assert!(a.format.bytes > 0 && a.format.decimals <= a.format.bytes * 2);
        }
        let e = identifier(DataId::V2007(0x0000_0000)).unwrap();
        assert_eq!((e.unit, e.format.pattern().as_str()), ("kWh", "XXXXXX.XX"));
        assert_eq!(
            identifier(DataId::V2007(0x0202_0100))
                .unwrap()
                .format
                .pattern(),
            "XXX.XXX"
        );
        assert_eq!(
            identifier(DataId::V2007(0x0203_0000))
                .unwrap()
                .format
                .pattern(),
            "XX.XXXX"
        );
        assert_eq!(
            identifier(DataId::V2007(0x0206_0000))
                .unwrap()
                .format
                .pattern(),
            "X.XXX"
        );
        assert_eq!(
            identifier(DataId::V1997(0xB611)).unwrap().format.pattern(),
            "XXXX"
        );
        assert!(identifier(DataId::V2007(0x0401_0001)).is_none());
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        // FF FF FF FF: a meter's "nothing here".
        let e = decode(ENERGY, &[0xFF; 4]).unwrap_err();
        assert_eq!(e, DecodeError::NotBcd { byte: 0xFF });
        assert!(e.to_string().contains("FF bytes"), "{e}");
        assert!(decode(VOLTAGE, &[0x2A, 0x22]).is_err());
        let e = decode(ENERGY, &[0x78, 0x56]).unwrap_err();
        assert!(e.to_string().contains("XXXXXX.XX has 4"), "{e}");
        assert!(decode(Format::new(0, 0, false), &[]).is_err());
        let e = decode(Format::new(9, 0, false), &[0; 9]).unwrap_err();
        assert!(e.to_string().contains("8 bytes at most"), "{e}");
        assert!(decode_block(ENERGY, &[0; 6]).is_err());
        assert!(decode_block(ENERGY, &[]).is_err());
        // Total and four tariffs: 5 × 4 bytes.
        let mut block = Vec::new();
        for kwh in [100.0, 10.0, 20.0, 30.0, 40.0] {
            block.extend(encode(ENERGY, kwh).unwrap());
        }
        assert_eq!(
            decode_block(ENERGY, &block).unwrap(),
            [100.0, 10.0, 20.0, 30.0, 40.0]
        );
    }

    #[test]
    fn encoding_round_trips_and_refuses_what_does_not_fit() {
        // 222.0 V → 2220 → 20 22.
        assert_eq!(encode(VOLTAGE, 222.0).unwrap(), [0x20, 0x22]);
        assert_eq!(encode(CURRENT, -14.567).unwrap(), [0x67, 0x45, 0x81]);
        for (format, value) in [
            (ENERGY, 0.0),
            (ENERGY, 999_999.99),
            (ENERGY_SIGNED, -799_999.99),
            (POWER, -0.0001),
            (POWER_FACTOR, 0.999),
        ] {
            let bytes = encode(format, value).unwrap();
            assert!(close(decode(format, &bytes).unwrap(), value), "{value}");
        }
        // A signed format's top digit stops at 7; unsigned formats take no negative.
        assert!(encode(ENERGY_SIGNED, 800_000.0).is_err());
        assert!(encode(ENERGY, 1_000_000.0).is_err());
        assert!(encode(VOLTAGE, -1.0).is_err());
        assert!(encode(VOLTAGE, f64::NAN).is_err());
    }
}
