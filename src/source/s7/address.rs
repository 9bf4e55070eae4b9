//! S7 addresses written the way the engineer sees them in TIA Portal, STEP 7 and
//! STEP 7-Micro/WIN SMART: `DB10.DBX2.3`, `DB10.DBW4`, `MW20`, `I0.1`, `VD200`, `T5`, `C3`.
//!
//! An address names an area and a place in it and, through its size letter, how many bytes
//! it spans (X = one bit, B = 1, W = 2, D = 4). What the bytes mean (INT or WORD, DINT or
//! REAL) is the field's `type`; [`Address::fits`] says whether a type suits an address.
//!
//! The forms accepted (case does not matter; the German mnemonics E and A stand for I and Q,
//! Z for C):
//!
//! | written | area | notes |
//! |---|---|---|
//! | `DB10.DBX2.3`, `DB10.DBB4`, `DB10.DBW4`, `DB10.DBD8` | data block 10 | `DB10.DBB20` for a STRING or an LREAL: the type gives the size |
//! | `M0.1`, `MB2`, `MW20`, `MD24` | flags (Merker) | |
//! | `I0.1`, `IB0`, `IW2`, `ID4` | process-image inputs | also `E0.1`, `EB0` … |
//! | `Q0.1`, `QB0`, `QW2`, `QD4` | process-image outputs | also `A0.1`, `AB0` … |
//! | `V100.1`, `VB100`, `VW100`, `VD200` | S7-200 SMART variable memory | the same as DB1 |
//! | `T5`, `C3` | timers, counters (S7-300/400, S7-200 SMART) | one 2-byte element each |

use std::fmt;

/// The memory area an address lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    /// Process-image inputs (I, E).
    Inputs,
    /// Process-image outputs (Q, A).
    Outputs,
    /// Flags (M), Merker.
    Flags,
    /// A data block by number; the S7-200 SMART's V memory is DB1.
    DataBlock(u16),
    /// S7 timers (T), 2 bytes each.
    Timers,
    /// S7 counters (C, Z), 2 bytes each.
    Counters,
}

impl Area {
    /// The area code of the S7 ANY pointer in a Read Var item.
    pub fn code(self) -> u8 {
        match self {
            Area::Inputs => 0x81,
            Area::Outputs => 0x82,
            Area::Flags => 0x83,
            Area::DataBlock(_) => 0x84,
            Area::Counters => 0x1C,
            Area::Timers => 0x1D,
        }
    }

    /// The data block number, 0 outside data blocks.
    pub fn db(self) -> u16 {
        match self {
            Area::DataBlock(n) => n,
            _ => 0,
        }
    }

    /// Timers and counters are addressed by element, not by byte.
    pub fn is_element_area(self) -> bool {
        matches!(self, Area::Timers | Area::Counters)
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Area::Inputs => f.write_str("I"),
            Area::Outputs => f.write_str("Q"),
            Area::Flags => f.write_str("M"),
            Area::DataBlock(n) => write!(f, "DB{n}"),
            Area::Timers => f.write_str("T"),
            Area::Counters => f.write_str("C"),
        }
    }
}

/// How much an address spans by its size letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// One bit of a byte: `X` in a DB, `M0.1`, `I0.1`.
    Bit(u8),
    Byte,
    Word,
    DoubleWord,
    /// A timer or counter element (2 bytes).
    Element,
}

impl Width {
    /// Bytes the size letter spans.
    pub fn bytes(self) -> u32 {
        match self {
            Width::Bit(_) | Width::Byte => 1,
            Width::Word | Width::Element => 2,
            Width::DoubleWord => 4,
        }
    }
}

/// A parsed address: the area, the first byte (or element) and the size letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub area: Area,
    /// Byte offset in the area; the element number for timers and counters.
    pub start: u32,
    pub width: Width,
}

/// The largest byte offset an S7 ANY pointer can carry: the bit address has 24 bits.
pub const MAX_BYTE_OFFSET: u32 = (1 << 21) - 1;

/// What is wrong with an address, in words for the config's diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

const FORMS: &str = "write it as in TIA Portal: DB10.DBX2.3, DB10.DBB4, DB10.DBW4, DB10.DBD8, \
                     M0.1, MB2, MW20, MD24, I0.1, IW2, Q0.1, QW2, V100.1, VB100, VW100, VD200, T5 or C3";

impl Address {
    /// Parses an address in any of the forms of the module's table.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        let upper = text.trim().to_ascii_uppercase();
        let bad = |why: &str| {
            AddressError(format!(
                "`{}` is not an S7 address: {why}; {FORMS}",
                text.trim()
            ))
        };
        if upper.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some(rest) = upper.strip_prefix("DB") {
            // DB<n>.DB<letter><byte>[.<bit>]
            let (number, place) = rest
                .split_once('.')
                .ok_or_else(|| bad("a data block address has a dot after the block number"))?;
            let db: u16 = number
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("the data block number is 1–65535"))?;
            let place = place
                .strip_prefix("DB")
                .ok_or_else(|| bad("after `DBn.` comes DBX, DBB, DBW or DBD"))?;
            return Self::sized(Area::DataBlock(db), place, &bad);
        }
        let mut chars = upper.chars();
        let letter = chars.next().unwrap_or(' ');
        let rest = chars.as_str();
        let area = match letter {
            'I' | 'E' => Area::Inputs,
            'Q' | 'A' => Area::Outputs,
            'M' => Area::Flags,
            'V' => Area::DataBlock(1),
            'T' | 'C' | 'Z' => {
                let area = if letter == 'T' {
                    Area::Timers
                } else {
                    Area::Counters
                };
                let n: u16 = rest.parse().map_err(|_| {
                    bad("a timer or counter is its letter and a number, as T5 or C3")
                })?;
                return Ok(Address {
                    area,
                    start: u32::from(n),
                    width: Width::Element,
                });
            }
            _ => return Err(bad("unknown area")),
        };
        // `M0.1` (a bit) or `MB2`/`MW20`/`MD24`; the bit form has no size letter.
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Self::bit(area, rest, &bad);
        }
        Self::sized(area, rest, &bad)
    }

    /// `<letter><byte>` with letter X (then `.bit`), B, W or D.
    fn sized(
        area: Area,
        place: &str,
        bad: &dyn Fn(&str) -> AddressError,
    ) -> Result<Address, AddressError> {
        let mut chars = place.chars();
        let letter = chars.next().unwrap_or(' ');
        let rest = chars.as_str();
        let width = match letter {
            'X' => return Self::bit(area, rest, bad),
            'B' => Width::Byte,
            'W' => Width::Word,
            'D' => Width::DoubleWord,
            _ => {
                return Err(bad(
                    "the size letter is X (bit), B (byte), W (word) or D (double word)",
                ));
            }
        };
        let start = Self::offset(rest, bad)?;
        Ok(Address { area, start, width })
    }

    /// `<byte>.<bit>`.
    fn bit(
        area: Area,
        place: &str,
        bad: &dyn Fn(&str) -> AddressError,
    ) -> Result<Address, AddressError> {
        let (byte, bit) = place
            .split_once('.')
            .ok_or_else(|| bad("a bit address is byte.bit, as 2.3"))?;
        let start = Self::offset(byte, bad)?;
        let bit: u8 = bit
            .parse()
            .ok()
            .filter(|b| *b <= 7)
            .ok_or_else(|| bad("the bit is 0–7"))?;
        Ok(Address {
            area,
            start,
            width: Width::Bit(bit),
        })
    }

    fn offset(text: &str, bad: &dyn Fn(&str) -> AddressError) -> Result<u32, AddressError> {
        text.parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_BYTE_OFFSET)
            .ok_or_else(|| bad("the byte offset is a number from 0 to 2097151"))
    }

    /// Whether a value of `ty` can be read at this address: its size letter spans the type's
    /// bytes, or (B) the type's size comes from the type itself.
    pub fn fits(&self, ty: S7Type) -> Result<(), String> {
        use S7Type::*;
        let ok = match (self.width, ty) {
            (Width::Bit(_), Bool) => true,
            (Width::Bit(_), _) | (_, Bool) => false,
            (Width::Element, Timer | Counter) => true,
            (Width::Element, _) | (_, Timer | Counter) => false,
            (Width::Byte, Byte | Char | SInt | USInt) => true,
            (Width::Word, Word | Int | UInt | S5Time) => true,
            (Width::DoubleWord, DWord | DInt | UDInt | Real | Time) => true,
            // Types longer than four bytes have no size letter of their own: they start at a
            // byte address.
            (Width::Byte, LReal | LInt | ULInt | LWord | String { .. } | WString { .. }) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "type {} does not fit address {self}: {}",
                ty.name(),
                ty.address_hint()
            ))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = match self.width {
            Width::Bit(_) => 'X',
            Width::Byte => 'B',
            Width::Word => 'W',
            Width::DoubleWord => 'D',
            Width::Element => return write!(f, "{}{}", self.area, self.start),
        };
        match (self.area, self.width) {
            (Area::DataBlock(n), Width::Bit(b)) => write!(f, "DB{n}.DBX{}.{b}", self.start),
            (Area::DataBlock(n), _) => write!(f, "DB{n}.DB{letter}{}", self.start),
            (area, Width::Bit(b)) => write!(f, "{area}{}.{b}", self.start),
            (area, _) => write!(f, "{area}{letter}{}", self.start),
        }
    }
}

/// The S7 data types a field can have. All are big-endian on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S7Type {
    Bool,
    Byte,
    Char,
    SInt,
    USInt,
    Word,
    Int,
    UInt,
    DWord,
    DInt,
    UDInt,
    Real,
    LReal,
    LInt,
    ULInt,
    LWord,
    /// STRING[max]: a max-length byte, an actual-length byte, then `max` characters.
    String {
        max: u8,
    },
    /// WSTRING[max]: a max-length word, an actual-length word, then `max` UTF-16 characters.
    WString {
        max: u16,
    },
    /// S5TIME: a time base and three BCD digits, read as milliseconds.
    S5Time,
    /// TIME: signed milliseconds in a DINT.
    Time,
    /// An S7 timer element (T area), in S5TIME format, read as milliseconds.
    Timer,
    /// An S7 counter element (C area), three BCD digits.
    Counter,
}

impl S7Type {
    /// The type as the config writes it (`"int"`, `"real"`, `"string"` …).
    pub fn name(self) -> &'static str {
        use S7Type::*;
        match self {
            Bool => "bool",
            Byte => "byte",
            Char => "char",
            SInt => "sint",
            USInt => "usint",
            Word => "word",
            Int => "int",
            UInt => "uint",
            DWord => "dword",
            DInt => "dint",
            UDInt => "udint",
            Real => "real",
            LReal => "lreal",
            LInt => "lint",
            ULInt => "ulint",
            LWord => "lword",
            String { .. } => "string",
            WString { .. } => "wstring",
            S5Time => "s5time",
            Time => "time",
            Timer => "timer",
            Counter => "counter",
        }
    }

    /// Bytes the value occupies in the PLC's memory.
    pub fn size(self) -> u32 {
        use S7Type::*;
        match self {
            Bool | Byte | Char | SInt | USInt => 1,
            Word | Int | UInt | S5Time | Timer | Counter => 2,
            DWord | DInt | UDInt | Real | Time => 4,
            LReal | LInt | ULInt | LWord => 8,
            String { max } => 2 + u32::from(max),
            WString { max } => 4 + 2 * u32::from(max),
        }
    }

    fn address_hint(self) -> &'static str {
        use S7Type::*;
        match self {
            Bool => "a bool needs a bit address such as DB1.DBX0.0 or M0.1",
            Byte | Char | SInt | USInt => {
                "a one-byte type needs a B address such as DB1.DBB0 or MB0"
            }
            Word | Int | UInt | S5Time => {
                "a two-byte type needs a W address such as DB1.DBW0 or MW0"
            }
            DWord | DInt | UDInt | Real | Time => {
                "a four-byte type needs a D address such as DB1.DBD0 or MD0"
            }
            LReal | LInt | ULInt | LWord | String { .. } | WString { .. } => {
                "this type starts at a byte address such as DB1.DBB0"
            }
            Timer => "a timer is read from the T area, as T5",
            Counter => "a counter is read from the C area, as C3",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Area, u32, Width) {
        let a = Address::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (a.area, a.start, a.width)
    }

    #[test]
    fn every_documented_form_parses_to_its_area_offset_and_width() {
        use Area::*;
        use Width::*;
        let cases = [
            ("DB10.DBX2.3", (DataBlock(10), 2, Bit(3))),
            ("DB10.DBB4", (DataBlock(10), 4, Byte)),
            ("db10.dbw4", (DataBlock(10), 4, Word)),
            ("DB65535.DBD8", (DataBlock(65535), 8, DoubleWord)),
            ("M0.1", (Flags, 0, Bit(1))),
            ("MB2", (Flags, 2, Byte)),
            ("MW20", (Flags, 20, Word)),
            ("MD24", (Flags, 24, DoubleWord)),
            ("I0.1", (Inputs, 0, Bit(1))),
            ("E0.7", (Inputs, 0, Bit(7))),
            ("IW2", (Inputs, 2, Word)),
            ("EB0", (Inputs, 0, Byte)),
            ("Q1.0", (Outputs, 1, Bit(0))),
            ("AW4", (Outputs, 4, Word)),
            ("QD8", (Outputs, 8, DoubleWord)),
            ("V100.1", (DataBlock(1), 100, Bit(1))),
            ("VB100", (DataBlock(1), 100, Byte)),
            ("VW100", (DataBlock(1), 100, Word)),
            ("VD200", (DataBlock(1), 200, DoubleWord)),
            ("T5", (Timers, 5, Element)),
            ("C3", (Counters, 3, Element)),
            ("Z3", (Counters, 3, Element)),
            (" mw20 ", (Flags, 20, Word)),
        ];
        for (text, want) in cases {
            assert_eq!(parsed(text), want, "{text}");
        }
    }

    #[test]
    fn an_address_prints_back_in_tia_form() {
        for text in [
            "DB10.DBX2.3",
            "DB10.DBW4",
            "M0.1",
            "MW20",
            "I0.1",
            "QD8",
            "T5",
            "C3",
        ] {
            assert_eq!(Address::parse(text).unwrap().to_string(), text);
        }
        // V memory is DB1, and prints as such.
        assert_eq!(Address::parse("VW100").unwrap().to_string(), "DB1.DBW100");
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (text, words) in [
            ("", "empty"),
            ("DB0.DBW0", "1–65535"),
            ("DB10.DBW", "byte offset"),
            ("DB10DBW4", "dot after the block number"),
            ("DB10.W4", "DBX, DBB, DBW or DBD"),
            ("DB10.DBQ4", "size letter"),
            ("DB10.DBX2", "byte.bit"),
            ("M0.8", "bit is 0–7"),
            ("MW99999999", "byte offset"),
            ("P10", "unknown area"),
            ("Tx", "timer or counter"),
            ("MW-1", "byte offset"),
        ] {
            let e = Address::parse(text).expect_err(text);
            assert!(e.0.contains(words), "{text}: {e}");
            assert!(e.0.contains("TIA Portal"), "{text}: {e}");
        }
    }

    #[test]
    fn a_type_fits_only_an_address_of_its_size() {
        let a = |t: &str| Address::parse(t).unwrap();
        assert!(a("DB1.DBD0").fits(S7Type::Real).is_ok());
        assert!(a("DB1.DBW0").fits(S7Type::Int).is_ok());
        assert!(a("DB1.DBX0.0").fits(S7Type::Bool).is_ok());
        assert!(a("DB1.DBB0").fits(S7Type::String { max: 20 }).is_ok());
        assert!(a("DB1.DBB0").fits(S7Type::LReal).is_ok());
        assert!(a("T1").fits(S7Type::Timer).is_ok());
        let e = a("DB1.DBW0").fits(S7Type::Real).unwrap_err();
        assert!(e.contains("D address"), "{e}");
        assert!(a("MW0").fits(S7Type::Bool).is_err());
        assert!(a("M0.0").fits(S7Type::Int).is_err());
        assert!(a("C1").fits(S7Type::Int).is_err());
        assert!(a("MW0").fits(S7Type::Counter).is_err());
    }
}
