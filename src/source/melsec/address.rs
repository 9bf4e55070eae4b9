//! MELSEC device addresses written the way the engineer sees them in GX Works2/GX Works3:
//! `D100`, `M8000`, `X17` on an FX5U, `X1F` on a Q CPU, `W1A`, `ZR10000`, `TN5`, `D100.3`.
//!
//! A MELSEC address is a device (a letter or two) and a number, and the number's base depends
//! on the device and on the PLC family: inputs and outputs (X, Y) are octal on the FX series
//! and hexadecimal on Q, L and iQ-R; link devices (B, W, SB, SW) are hexadecimal everywhere;
//! everything else is decimal. The same text therefore means different devices on different
//! PLCs (`X17` is input 15 on an FX5U and input 23 on a Q CPU), so parsing needs the family.
//! On the wire (3E/4E binary frames, Q/L-compatible subcommands) a device is its code byte
//! and its number as a plain 24-bit integer, whatever base the engineer wrote it in.
//!
//! | device | what | kind | number written in | binary code |
//! |---|---|---|---|---|
//! | `X`, `Y` | inputs, outputs | bit | octal on FX, hexadecimal on Q/L/iQ-R | 0x9C, 0x9D |
//! | `M` | internal relays | bit | decimal | 0x90 |
//! | `L` | latch relays | bit | decimal | 0x92 |
//! | `F` | annunciators | bit | decimal | 0x93 |
//! | `V` | edge relays | bit | decimal | 0x94 |
//! | `B` | link relays | bit | hexadecimal | 0xA0 |
//! | `SM` | special relays | bit | decimal | 0x91 |
//! | `SB` | link special relays | bit | hexadecimal | 0xA1 |
//! | `TS`, `CS` | timer, counter contacts | bit | decimal | 0xC1, 0xC4 |
//! | `D` | data registers | word | decimal | 0xA8 |
//! | `W` | link registers | word | hexadecimal | 0xB4 |
//! | `R` | file registers (block switching) | word | decimal | 0xAF |
//! | `ZR` | file registers (serial numbers) | word | decimal | 0xB0 |
//! | `TN`, `CN` | timer, counter current values | word | decimal | 0xC2, 0xC5 |
//! | `SD` | special registers | word | decimal | 0xA9 |
//! | `SW` | link special registers | word | hexadecimal | 0xB5 |
//!
//! The codes and bases are those of the device code list of Mitsubishi's MC protocol
//! reference (MELSEC iQ-R MC Protocol Reference Manual, "Device code list", Q/L columns),
//! which the QnUCPU manual's table of accessible devices repeats. One exception is
//! deliberate: that table gives ZR's *ASCII-frame* notation as hexadecimal, but GX Works
//! shows and takes ZR numbers in decimal, and binary frames carry the number itself, so
//! `ZR10000` here is file register ten thousand. (pymcprotocol follows the table and reads
//! the text `ZR10000` as 0x10000: an integration test must not pass addresses through it as
//! text.)
//!
//! A bit of a word device is written as GX Works writes it, with one hexadecimal digit:
//! `D100.3`, `D100.F` (bit 15).

use std::fmt;

/// The PLC family, which decides how X and Y are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// The FX series: FX5U/FX5UC/FX5UJ (iQ-F) speak 3E/4E frames on their built-in port.
    /// X and Y are octal. (An FX3U's Ethernet adapter speaks only 1E frames, which this
    /// module does not build.)
    Fx,
    /// Q, L and iQ-R CPUs (iQ-R through its Q/L-compatible subcommands). X and Y are
    /// hexadecimal.
    Q,
}

impl Family {
    /// The family as the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Fx => "fx",
            Family::Q => "q",
        }
    }
}

/// Whether a device holds single bits (one point each) or 16-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Bit,
    Word,
}

/// The base a device's number is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Radix {
    Decimal,
    Octal,
    Hexadecimal,
}

impl Radix {
    fn base(self) -> u32 {
        match self {
            Radix::Decimal => 10,
            Radix::Octal => 8,
            Radix::Hexadecimal => 16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Radix::Decimal => "decimal",
            Radix::Octal => "octal",
            Radix::Hexadecimal => "hexadecimal",
        }
    }
}

/// A device the agent can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    X,
    Y,
    M,
    L,
    F,
    V,
    B,
    SM,
    SB,
    /// Timer contacts.
    TS,
    /// Counter contacts.
    CS,
    D,
    W,
    R,
    ZR,
    /// Timer current values.
    TN,
    /// Counter current values.
    CN,
    SD,
    SW,
}

impl Device {
    /// Every device, two-letter symbols first so that parsing tries `SM` before `M`.
    pub const ALL: [Device; 19] = [
        Device::SM,
        Device::SB,
        Device::TS,
        Device::CS,
        Device::ZR,
        Device::TN,
        Device::CN,
        Device::SD,
        Device::SW,
        Device::X,
        Device::Y,
        Device::M,
        Device::L,
        Device::F,
        Device::V,
        Device::B,
        Device::D,
        Device::W,
        Device::R,
    ];

    /// The device's symbol as GX Works writes it.
    pub fn symbol(self) -> &'static str {
        use Device::*;
        match self {
            X => "X",
            Y => "Y",
            M => "M",
            L => "L",
            F => "F",
            V => "V",
            B => "B",
            SM => "SM",
            SB => "SB",
            TS => "TS",
            CS => "CS",
            D => "D",
            W => "W",
            R => "R",
            ZR => "ZR",
            TN => "TN",
            CN => "CN",
            SD => "SD",
            SW => "SW",
        }
    }

    /// The device code byte of 3E/4E binary frames (Q/L-compatible subcommands 0000/0001).
    pub fn code(self) -> u8 {
        use Device::*;
        match self {
            X => 0x9C,
            Y => 0x9D,
            M => 0x90,
            L => 0x92,
            F => 0x93,
            V => 0x94,
            B => 0xA0,
            SM => 0x91,
            SB => 0xA1,
            TS => 0xC1,
            CS => 0xC4,
            D => 0xA8,
            W => 0xB4,
            R => 0xAF,
            ZR => 0xB0,
            TN => 0xC2,
            CN => 0xC5,
            SD => 0xA9,
            SW => 0xB5,
        }
    }

    pub fn kind(self) -> Kind {
        use Device::*;
        match self {
            X | Y | M | L | F | V | B | SM | SB | TS | CS => Kind::Bit,
            D | W | R | ZR | TN | CN | SD | SW => Kind::Word,
        }
    }

    /// The base the device's number is written in on a PLC of `family`.
    pub fn radix(self, family: Family) -> Radix {
        use Device::*;
        match (self, family) {
            (X | Y, Family::Fx) => Radix::Octal,
            (X | Y | B | W | SB | SW, _) => Radix::Hexadecimal,
            _ => Radix::Decimal,
        }
    }

    /// The largest device number the agent accepts: what GX Works can address for X and Y
    /// (X1777 on an FX5, X2FFF on an iQ-R), and otherwise what the 3-byte device number of a
    /// 3E frame can carry. The PLC's own device sizes (set in its parameters) are checked by
    /// the PLC, which answers end code 0xC056 past them.
    pub fn max_number(self, family: Family) -> u32 {
        match (self, family) {
            (Device::X | Device::Y, Family::Fx) => 0o1777,
            (Device::X | Device::Y, Family::Q) => 0x2FFF,
            _ => MAX_DEVICE_NUMBER,
        }
    }

    /// Contacts can only be read point by point (bit units), never as words: the PLC refuses
    /// TS and CS in word units and in random reads.
    pub fn is_contact(self) -> bool {
        matches!(self, Device::TS | Device::CS)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// The largest device number a 3E/4E frame with Q/L-compatible subcommands carries: 3 bytes.
pub const MAX_DEVICE_NUMBER: u32 = 0xFF_FFFF;

/// A parsed address: a device, its number, and for a word device optionally one bit of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub family: Family,
    pub device: Device,
    /// The device number as an integer (`X17` on an FX is 15).
    pub number: u32,
    /// A bit 0–15 of a word device (`D100.3`).
    pub bit: Option<u8>,
}

/// What is wrong with an address, in words for the config's diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

const FORMS: &str = "write it as in GX Works: D100, D100.3, M8000, X17 (octal on an FX), \
                     X1F (hexadecimal on Q/L/iQ-R), Y20, B1F, W1A, R0, ZR10000, TN5, CN3, TS5, \
                     CS3, SM400, SD100, L0, F0, V0, SB0 or SW0";

impl Address {
    /// Parses an address in any of the forms of the module's table, numbered as on a PLC of
    /// `family`.
    pub fn parse(text: &str, family: Family) -> Result<Address, AddressError> {
        let shown = text.trim();
        let upper = shown.to_ascii_uppercase();
        let bad = |why: String| {
            AddressError(format!("`{shown}` is not a MELSEC address: {why}; {FORMS}"))
        };
        if upper.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let Some((device, rest)) = Device::ALL
            .iter()
            .find_map(|d| upper.strip_prefix(d.symbol()).map(|rest| (*d, rest)))
        else {
            let hint = match upper.chars().next() {
                Some('T') => "a timer is TN5 (its current value) or TS5 (its contact)",
                Some('C') => "a counter is CN3 (its current value) or CS3 (its contact)",
                Some('K') => {
                    "digit-specified devices such as K4M0 are not read yet: read the bits (M0 …) or the word they are copied to"
                }
                _ => "unknown device",
            };
            return Err(bad(hint.into()));
        };
        let (number, bit) = match rest.split_once('.') {
            Some((number, bit)) => (number, Some(bit)),
            None => (rest, None),
        };
        let radix = device.radix(family);
        if number.is_empty() {
            return Err(bad(format!("{device} needs a device number after it")));
        }
        // `from_str_radix` would take a leading `+`; only the radix's digits are a number.
        if !number.chars().all(|c| c.is_digit(radix.base())) {
            let why = match (device, family) {
                (Device::X | Device::Y, Family::Fx) => format!(
                    "{device} on an FX is numbered in octal ({device}0–{device}7, \
                     {device}10–{device}17 …): 8, 9 and letters do not occur"
                ),
                _ => format!("{device} is numbered in {}", radix.name()),
            };
            return Err(bad(why));
        }
        let max = device.max_number(family);
        let number = u32::from_str_radix(number, radix.base())
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                let max = Address {
                    family,
                    device,
                    number: max,
                    bit: None,
                };
                bad(format!("the largest {device} the agent can read is {max}"))
            })?;
        let bit = match bit {
            None => None,
            Some(_) if device.kind() == Kind::Bit => {
                return Err(bad(format!(
                    "{device} is a bit device; only word devices have bits, as D100.3"
                )));
            }
            Some(b) => Some(
                (b.len() == 1)
                    .then(|| u8::from_str_radix(b, 16).ok())
                    .flatten()
                    .ok_or_else(|| {
                        bad(
                            "the bit of a word is one hexadecimal digit 0–F, as D100.F for bit 15"
                                .into(),
                        )
                    })?,
            ),
        };
        Ok(Address {
            family,
            device,
            number,
            bit,
        })
    }

    /// Whether a value of `ty` can be read at this address: a bool from a bit device or a
    /// bit of a word, any other type from a word device without a bit.
    pub fn fits(&self, ty: McType) -> Result<(), String> {
        let ok = match ty {
            McType::Bool => self.device.kind() == Kind::Bit || self.bit.is_some(),
            _ => self.device.kind() == Kind::Word && self.bit.is_none(),
        };
        if ok {
            Ok(())
        } else if ty == McType::Bool {
            Err(format!(
                "type bool does not fit address {self}: a bool is a bit device (M0, X0, TS5 …) \
                 or a bit of a word, as {self}.0"
            ))
        } else {
            Err(format!(
                "type {} does not fit address {self}: it is read from a word device (D, W, R, \
                 ZR, TN, CN, SD, SW) without a bit",
                ty.name()
            ))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.device;
        match d.radix(self.family) {
            Radix::Decimal => write!(f, "{d}{}", self.number)?,
            Radix::Octal => write!(f, "{d}{:o}", self.number)?,
            Radix::Hexadecimal => write!(f, "{d}{:X}", self.number)?,
        }
        if let Some(bit) = self.bit {
            write!(f, ".{bit:X}")?;
        }
        Ok(())
    }
}

/// The value types a field can have, named as for Modbus fields. Multi-word values are stored
/// low word first, as GX Works stores a 32-bit `D100` in D100 (low) and D101 (high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum McType {
    Bool,
    I16,
    U16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
    /// Text of `words` words, two characters per word, the first in the low byte (as the
    /// `$MOV` instruction stores it).
    String {
        words: u16,
    },
}

impl McType {
    /// The type as the config writes it.
    pub fn name(self) -> &'static str {
        use McType::*;
        match self {
            Bool => "bool",
            I16 => "i16",
            U16 => "u16",
            I32 => "i32",
            U32 => "u32",
            F32 => "f32",
            I64 => "i64",
            U64 => "u64",
            F64 => "f64",
            String { .. } => "string",
        }
    }

    /// Words the value spans (a bool: the one word its bit lies in).
    pub fn words(self) -> u16 {
        use McType::*;
        match self {
            Bool | I16 | U16 => 1,
            I32 | U32 | F32 => 2,
            I64 | U64 | F64 => 4,
            String { words } => words,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Device::*;
    use Family::*;

    fn parsed(text: &str, family: Family) -> (Device, u32, Option<u8>) {
        let a = Address::parse(text, family).unwrap_or_else(|e| panic!("{text}: {e}"));
        (a.device, a.number, a.bit)
    }

    #[test]
    fn every_documented_form_parses_to_its_device_and_number() {
        let cases = [
            // X17 on an FX is octal 17 = 1 × 8 + 7 = 15; on a Q it is hexadecimal 0x17 = 23.
            ("X17", Fx, (X, 15, None)),
            ("X17", Q, (X, 23, None)),
            ("X1F", Q, (X, 31, None)),
            // Y1777 octal = 1 × 512 + 7 × 64 + 7 × 8 + 7 = 1023, the FX5's last output.
            ("Y1777", Fx, (Y, 1023, None)),
            ("D100", Q, (D, 100, None)),
            ("d100", Fx, (D, 100, None)),
            // W1A is hexadecimal on every family: 0x1A = 26.
            ("W1A", Fx, (W, 26, None)),
            ("W1A", Q, (W, 26, None)),
            ("B1F", Q, (B, 31, None)),
            ("SB10", Q, (SB, 16, None)),
            ("SW1F", Q, (SW, 31, None)),
            ("ZR10000", Q, (ZR, 10_000, None)),
            ("R32767", Q, (R, 32_767, None)),
            ("M8000", Fx, (M, 8000, None)),
            ("L100", Q, (L, 100, None)),
            ("F7", Q, (F, 7, None)),
            ("V3", Q, (V, 3, None)),
            ("SM400", Q, (SM, 400, None)),
            ("SD100", Q, (SD, 100, None)),
            ("TN5", Fx, (TN, 5, None)),
            ("TS5", Fx, (TS, 5, None)),
            ("CN3", Q, (CN, 3, None)),
            ("CS3", Q, (CS, 3, None)),
            ("D100.3", Q, (D, 100, Some(3))),
            ("D100.f", Fx, (D, 100, Some(15))),
            (" d0 ", Q, (D, 0, None)),
        ];
        for (text, family, want) in cases {
            assert_eq!(parsed(text, family), want, "{text} on {family:?}");
        }
    }

    #[test]
    fn device_codes_match_the_mc_protocol_device_code_list() {
        // Q/L binary column of the reference's device code list.
        let table = [
            (SM, 0x91),
            (SD, 0xA9),
            (X, 0x9C),
            (Y, 0x9D),
            (M, 0x90),
            (L, 0x92),
            (F, 0x93),
            (V, 0x94),
            (B, 0xA0),
            (D, 0xA8),
            (W, 0xB4),
            (TS, 0xC1),
            (TN, 0xC2),
            (CS, 0xC4),
            (CN, 0xC5),
            (SB, 0xA1),
            (SW, 0xB5),
            (R, 0xAF),
            (ZR, 0xB0),
        ];
        assert_eq!(table.len(), Device::ALL.len());
        for (device, code) in table {
            assert_eq!(device.code(), code, "{device}");
        }
    }

    #[test]
    fn an_address_prints_back_in_the_engineers_form() {
        for (text, family) in [
            ("X17", Fx),
            ("X1F", Q),
            ("Y1777", Fx),
            ("D100", Q),
            ("D100.3", Q),
            ("D100.F", Fx),
            ("W1A", Fx),
            ("ZR10000", Q),
            ("SB1F", Q),
            ("TN5", Q),
            ("CS3", Fx),
        ] {
            assert_eq!(Address::parse(text, family).unwrap().to_string(), text);
        }
        // The same number prints in each family's base: input 15 is X17 on an FX, XF on a Q.
        let mut a = Address::parse("X17", Fx).unwrap();
        a.family = Q;
        assert_eq!(a.to_string(), "XF");
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (text, family, words) in [
            ("", Q, "empty"),
            ("X18", Fx, "octal"),
            ("X1F", Fx, "octal"),
            ("D1A", Q, "decimal"),
            ("D+5", Q, "decimal"),
            ("W1G", Q, "hexadecimal"),
            ("D", Q, "device number"),
            ("T5", Q, "TN5"),
            ("C3", Fx, "CN3"),
            ("K4M0", Fx, "K4M0"),
            ("P10", Q, "unknown device"),
            ("M0.1", Q, "bit device"),
            ("D100.16", Q, "0–F"),
            ("D100.", Q, "0–F"),
            ("X2000", Fx, "X1777"),
            ("X3000", Q, "X2FFF"),
            ("D16777216", Q, "D16777215"),
            ("D99999999999", Q, "D16777215"),
        ] {
            let e = Address::parse(text, family).expect_err(text);
            assert!(e.0.contains(words), "{text}: {e}");
            assert!(e.0.contains("GX Works"), "{text}: {e}");
        }
    }

    #[test]
    fn a_type_fits_only_a_device_of_its_kind() {
        let a = |t: &str| Address::parse(t, Q).unwrap();
        assert!(a("M0").fits(McType::Bool).is_ok());
        assert!(a("TS5").fits(McType::Bool).is_ok());
        assert!(a("D100.3").fits(McType::Bool).is_ok());
        assert!(a("D100").fits(McType::F32).is_ok());
        assert!(a("ZR0").fits(McType::String { words: 8 }).is_ok());
        let e = a("D100").fits(McType::Bool).unwrap_err();
        assert!(e.contains("D100.0"), "{e}");
        let e = a("M0").fits(McType::I16).unwrap_err();
        assert!(e.contains("word device"), "{e}");
        assert!(a("D100.3").fits(McType::U16).is_err());
    }
}
