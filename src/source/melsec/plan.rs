//! Request planning: which batch reads (0401) and random reads (0403) fetch a PLC's device map
//! in as few requests as the protocol allows.
//!
//! Fields of one device code that lie close together are read in one batch read, the gap
//! between them included, as long as it stays within the command's limit (960 words; in bit
//! units 7168 points on Q/L/iQ-R, 3584 on an FX5) and the gap is no larger than `max_gap`
//! words. Bit devices (M, X, B …) are read in word units, 16 points a word, starting at a
//! multiple of 16 as the MC reference's examples do; timer and counter contacts (TS, CS) can
//! only be read in bit units. What is left as single reads of one word or one double word,
//! scattered over the map, is gathered into random reads (up to 192 points each) when that
//! saves requests: three lone words cost one request instead of three.
//!
//! Fields with their own `poll` form groups planned on their own, as for Modbus.

use std::fmt;
use std::time::Duration;

use super::address::{Address, Device, Family, Kind, McType};
use super::config::MelsecDevice;
use super::frame::{
    BatchRead, MAX_BATCH_BITS_FX, MAX_BATCH_BITS_Q, MAX_BATCH_WORDS, MAX_RANDOM_POINTS, RandomRead,
};

/// The requests for the fields that share one poll interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollGroup {
    pub poll: Duration,
    pub requests: Vec<Request>,
}

/// One request and the fields it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub read: Read,
    pub fields: Vec<Planned>,
    /// For printing addresses in the engineer's numbering.
    pub family: Family,
}

/// The two reads the agent sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Batch(BatchRead),
    Random(RandomRead),
}

/// Where a field's value lies in the answer's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Index into the device's `fields`.
    pub index: usize,
    pub at: Slice,
}

/// A field's place in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// Bytes of words: from `offset`, `len` bytes; for a bool, the bit of the first word.
    Words {
        offset: usize,
        len: usize,
        bit: Option<u8>,
    },
    /// A point of an answer in bit units.
    Point(usize),
}

/// How a field is read: in word units from `start` (a word index; for a bit device a group of
/// 16 points) for `len` words, or in bit units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Words,
    Bits,
}

/// A field's span before merging: device, unit, first and one-past-last index, bit, field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Spot {
    device: Device,
    unit: Unit,
    start: u32,
    end: u32,
    bit: Option<u8>,
    index: usize,
}

/// A batch read being built: device, unit, start, end, fields (spot, offset in units).
struct Batch {
    device: Device,
    unit: Unit,
    start: u32,
    end: u32,
    spots: Vec<Spot>,
}

/// Plans the reads for a device whose config passed `check` (every field's address parsed):
/// one group per poll interval, shortest first.
pub fn plan(device: &MelsecDevice) -> Vec<PollGroup> {
    let mut polls: Vec<Duration> = device.fields.iter().map(|f| device.poll_of(f)).collect();
    polls.sort_unstable();
    polls.dedup();
    polls
        .into_iter()
        .map(|poll| PollGroup {
            poll,
            requests: plan_fields(device, |i| device.poll_of(&device.fields[i]) == poll),
        })
        .collect()
}

fn spot(address: Address, ty: McType, index: usize) -> Spot {
    let device = address.device;
    match device.kind() {
        Kind::Bit if device.is_contact() => Spot {
            device,
            unit: Unit::Bits,
            start: address.number,
            end: address.number + 1,
            bit: None,
            index,
        },
        Kind::Bit => Spot {
            device,
            unit: Unit::Words,
            start: address.number / 16,
            end: address.number / 16 + 1,
            bit: Some((address.number % 16) as u8),
            index,
        },
        Kind::Word => Spot {
            device,
            unit: Unit::Words,
            start: address.number,
            end: address.number + u32::from(ty.words()),
            bit: address.bit,
            index,
        },
    }
}

fn plan_fields(device: &MelsecDevice, take: impl Fn(usize) -> bool) -> Vec<Request> {
    let family = device.family();
    let mut spots: Vec<Spot> = device
        .fields
        .iter()
        .enumerate()
        .filter(|(i, _)| take(*i))
        .filter_map(|(i, f)| f.parsed.map(|a| spot(a, f.mc_type(), i)))
        .collect();
    spots.sort_unstable();
    let bit_limit = u32::from(match family {
        Family::Fx => MAX_BATCH_BITS_FX,
        Family::Q => MAX_BATCH_BITS_Q,
    });
    let mut batches: Vec<Batch> = Vec::new();
    for s in spots {
        let (limit, gap) = match s.unit {
            Unit::Words => (u32::from(MAX_BATCH_WORDS), u32::from(device.max_gap)),
            Unit::Bits => (bit_limit, u32::from(device.max_gap) * 16),
        };
        if let Some(b) = batches.last_mut()
            && b.device == s.device
            && b.unit == s.unit
            && s.start <= b.end.saturating_add(gap)
            && s.end.max(b.end) - b.start <= limit
        {
            b.end = b.end.max(s.end);
            b.spots.push(s);
            continue;
        }
        batches.push(Batch {
            device: s.device,
            unit: s.unit,
            start: s.start,
            end: s.end,
            spots: vec![s],
        });
    }
    // Lone words and double words go into random reads when there are at least two of them.
    let lone = |b: &Batch| b.unit == Unit::Words && !b.device.is_contact() && b.end - b.start <= 2;
    let (scattered, batches): (Vec<Batch>, Vec<Batch>) =
        if device.random_read && batches.iter().filter(|b| lone(b)).count() >= 2 {
            batches.into_iter().partition(|b| lone(b))
        } else {
            (Vec::new(), batches)
        };
    let mut requests: Vec<Request> = batches
        .into_iter()
        .filter_map(|b| batch_request(b, family))
        .collect();
    for chunk in scattered.chunks(MAX_RANDOM_POINTS) {
        if let Some(r) = random_request(chunk, family) {
            requests.push(r);
        }
    }
    requests
}

/// The device number a word index stands for: itself for a word device, its first point for a
/// bit device read in word units.
fn number_of(device: Device, unit: Unit, index: u32) -> u32 {
    match (device.kind(), unit) {
        (Kind::Bit, Unit::Words) => index * 16,
        _ => index,
    }
}

fn batch_request(b: Batch, family: Family) -> Option<Request> {
    let count = u16::try_from(b.end - b.start).ok()?;
    let start = number_of(b.device, b.unit, b.start);
    let read = match b.unit {
        Unit::Words => BatchRead::words(b.device, start, count).ok()?,
        Unit::Bits => BatchRead::bits(b.device, start, count, family).ok()?,
    };
    let fields = b
        .spots
        .iter()
        .map(|s| Planned {
            index: s.index,
            at: match b.unit {
                Unit::Words => Slice::Words {
                    offset: 2 * (s.start - b.start) as usize,
                    len: 2 * (s.end - s.start) as usize,
                    bit: s.bit,
                },
                Unit::Bits => Slice::Point((s.start - b.start) as usize),
            },
        })
        .collect();
    Some(Request {
        read: Read::Batch(read),
        fields,
        family,
    })
}

fn random_request(batches: &[Batch], family: Family) -> Option<Request> {
    let (words, dwords): (Vec<&Batch>, Vec<&Batch>) =
        batches.iter().partition(|b| b.end - b.start == 1);
    let point = |b: &&Batch| (b.device, number_of(b.device, Unit::Words, b.start));
    let read = RandomRead::new(
        words.iter().map(point).collect(),
        dwords.iter().map(point).collect(),
    )
    .ok()?;
    let mut fields = Vec::new();
    let mut base = 0;
    for (b, width) in words
        .iter()
        .map(|b| (b, 2))
        .chain(dwords.iter().map(|b| (b, 4)))
    {
        for s in &b.spots {
            fields.push(Planned {
                index: s.index,
                at: Slice::Words {
                    offset: base + 2 * (s.start - b.start) as usize,
                    len: 2 * (s.end - s.start) as usize,
                    bit: s.bit,
                },
            });
        }
        base += width;
    }
    Some(Request {
        read: Read::Random(read),
        fields,
        family,
    })
}

/// The plan as `check --plan` prints it: the PLC, then each poll group's requests.
pub fn shown(device: &MelsecDevice) -> String {
    let mut out = format!(
        "melsec {} ({}, {}, {} frames):\n",
        device.id,
        device.address(),
        device.family.name(),
        match device.frame {
            super::config::FrameName::E3 => "3E",
            super::config::FrameName::E4 => "4E",
        }
    );
    for group in plan(device) {
        out.push_str(&format!("    every {:?}:\n", group.poll));
        for request in group.requests {
            out.push_str(&format!("      {request}\n"));
        }
    }
    out
}

impl Request {
    fn shown(&self, device: Device, number: u32) -> String {
        Address {
            family: self.family,
            device,
            number,
            bit: None,
        }
        .to_string()
    }
}

fn words(n: usize) -> String {
    format!("{n} word{}", if n == 1 { "" } else { "s" })
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.fields.len();
        let fields = format!("{n} field{}", if n == 1 { "" } else { "s" });
        match &self.read {
            Read::Batch(b) => {
                let (span, what) = match (b.in_bits(), b.device().kind()) {
                    (true, _) => (
                        u32::from(b.count()),
                        format!("{} points in bit units", b.count()),
                    ),
                    (false, Kind::Bit) => (
                        16 * u32::from(b.count()),
                        format!("{} in word units", words(b.count().into())),
                    ),
                    (false, Kind::Word) => (u32::from(b.count()), words(b.count().into())),
                };
                write!(
                    f,
                    "0401 batch read {}–{} ({what}, {fields})",
                    self.shown(b.device(), b.start()),
                    self.shown(b.device(), b.start() + span - 1),
                )
            }
            Read::Random(r) => {
                let list: Vec<String> = r
                    .words()
                    .iter()
                    .map(|(d, n)| self.shown(*d, *n))
                    .chain(
                        r.dwords()
                            .iter()
                            .map(|(d, n)| format!("{} (dword)", self.shown(*d, *n))),
                    )
                    .collect();
                let dwords = r.dwords().len();
                write!(
                    f,
                    "0403 random read {} ({}, {dwords} double word{}, {fields})",
                    list.join(", "),
                    words(r.words().len()),
                    if dwords == 1 { "" } else { "s" }
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::load_str;

    fn device(extra: &str, fields: &str) -> MelsecDevice {
        let text = format!(
            "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n[[machine]]\nid = \"p1\"\nkind = \"press\"\ncnc = false\n[[melsec]]\nid = \"plc\"\nhost = \"h\"\nport = 5000\nfamily = \"q\"\nmachine = \"p1\"\n{extra}field = [{fields}]\n"
        );
        match load_str(&text, "t.toml") {
            Ok(cfg) => cfg.melsec[0].clone(),
            Err(d) => panic!("{d}"),
        }
    }

    fn shown(d: &MelsecDevice) -> Vec<String> {
        plan(d)
            .into_iter()
            .flat_map(|g| g.requests)
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn near_fields_share_a_batch_read_and_far_ones_do_not() {
        let d = device(
            "",
            r#"{ signal = "a", address = "D100" }, { signal = "b", address = "D105", type = "u32" },
               { signal = "c", address = "D300", type = "string", length = 4 },
               { signal = "m", address = "M3" }, { signal = "n", address = "M40" }"#,
        );
        assert_eq!(
            shown(&d),
            vec![
                // M3 and M40 are words 0 and 2 of M: one read of M0–M47, gap of one word.
                "0401 batch read M0–M47 (3 words in word units, 2 fields)",
                // D100, and D105–D106: 7 words with a gap of 4 (< 8).
                "0401 batch read D100–D106 (7 words, 2 fields)",
                "0401 batch read D300–D303 (4 words, 1 field)",
            ]
        );
        let planned = &plan(&d)[0].requests[0].fields;
        // M40 is bit 8 of the third word (M32–M47): bytes 4–5.
        assert_eq!(
            planned[1].at,
            Slice::Words {
                offset: 4,
                len: 2,
                bit: Some(8)
            }
        );
    }

    #[test]
    fn a_read_larger_than_960_words_is_split() {
        // D0 … D1999 as u16 every 10 words: 2000 words in all, gap 9 (< max_gap 16).
        let fields: Vec<String> = (0..200)
            .map(|i| format!("{{ signal = \"s{i}\", address = \"D{}\" }}", i * 10))
            .collect();
        let d = device("max_gap = 16\n", &fields.join(", "));
        let requests: Vec<Request> = plan(&d).into_iter().flat_map(|g| g.requests).collect();
        let counts: Vec<u16> = requests
            .iter()
            .map(|r| match &r.read {
                Read::Batch(b) => b.count(),
                Read::Random(_) => 0,
            })
            .collect();
        // 960 words hold D0–D959 (fields D0 … D950: 96 of them); the next starts at D960.
        assert_eq!(counts, vec![951, 951, 71]);
        assert!(requests.iter().all(|r| r.fields.len() <= 96));
        assert_eq!(requests.iter().map(|r| r.fields.len()).sum::<usize>(), 200);
    }

    #[test]
    fn lone_words_go_into_one_random_read_and_contacts_into_bit_units() {
        let d = device(
            "",
            r#"{ signal = "a", address = "D10" }, { signal = "b", address = "W1A0", type = "i32" },
               { signal = "c", address = "ZR20000" }, { signal = "t", address = "TS5" },
               { signal = "u", address = "TS9" }, { signal = "x", address = "X1F" }"#,
        );
        assert_eq!(
            shown(&d),
            vec![
                "0401 batch read TS5–TS9 (5 points in bit units, 2 fields)",
                "0403 random read X10, D10, ZR20000, W1A0 (dword) (3 words, 1 double word, 4 fields)",
            ]
        );
        // Without random reads, four batch reads.
        let d = device(
            "random_read = false\n",
            r#"{ signal = "a", address = "D10" }, { signal = "b", address = "W1A0", type = "i32" },
               { signal = "c", address = "ZR20000" }"#,
        );
        assert_eq!(shown(&d).len(), 3);
    }

    #[test]
    fn random_read_answers_are_words_then_double_words() {
        let d = device(
            "",
            r#"{ signal = "b", address = "D50", type = "f32" }, { signal = "a", address = "D10" }"#,
        );
        let r = &plan(&d)[0].requests[0];
        // D10 (word) first at byte 0, D50 (double word) at byte 2.
        let at: Vec<(usize, Slice)> = r.fields.iter().map(|p| (p.index, p.at)).collect();
        assert_eq!(
            at,
            vec![
                (
                    1,
                    Slice::Words {
                        offset: 0,
                        len: 2,
                        bit: None
                    }
                ),
                (
                    0,
                    Slice::Words {
                        offset: 2,
                        len: 4,
                        bit: None
                    }
                ),
            ]
        );
    }
}
