//! HJ 212 packets: framing, CRC, the data segment's fields, split packets and the
//! acknowledgement a logger asks for. Pure functions, no socket.
//!
//! ```text
//! ##                          header
//! 0101                        data segment length, four decimal digits
//! QN=…;ST=32;CN=2061;PW=…;MN=…;Flag=5;CP=&&DataTime=…;w01018-Avg=40.1,w01018-Flag=N&&
//! 1C80                        CRC-16 of the data segment, four hex digits
//! \r\n
//! ```
//!
//! Every packet comes from a peer that is hostile until its MN and password say otherwise, so
//! every part is checked before it is used, every malformed part is an error that names it,
//! and nothing here panics on any input.
//!
//! **Length.** The standard caps the data segment at 1024 characters and asks loggers to
//! split longer data into numbered packets (PNUM/PNO). Loggers with many pollutants send
//! daily data longer than that in one packet all the same, so the agent accepts anything the
//! four length digits can say, [`MAX_DATA`] = 9999 characters: a packet is at most
//! [`MAX_PACKET`] = 10 011 bytes, which is what the listener buffers per connection at most.
//!
//! **CRC.** HJ 212-2017 Appendix A gives the algorithm as C code. It is not the Modbus CRC
//! although it uses the same polynomial (0xA001, reflected) and start value: each byte is
//! XORed into the register *after shifting it right by eight*, `crc = (crc >> 8) ^ byte`, not
//! into the low byte as Modbus does (`crc ^= byte`). Implementations that reuse a Modbus CRC
//! reject every packet. [`crc16`] is checked against the standard's example packets in the
//! tests.

use std::fmt;

use jiff::civil::DateTime;

use super::codes::{self, DataFlag};

/// The longest data segment accepted: all that four decimal digits can say.
pub const MAX_DATA: usize = 9999;
/// The data segment length the standard allows (longer data is to be split).
pub const STANDARD_MAX_DATA: usize = 1024;
/// `##`, four length digits, four CRC digits, `\r\n`.
pub const OVERHEAD: usize = 12;
/// The longest packet accepted.
pub const MAX_PACKET: usize = MAX_DATA + OVERHEAD;

/// HJ 212-2017 Appendix A's CRC-16 of a data segment.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for byte in data {
        crc = (crc >> 8) ^ u16::from(*byte);
        for _ in 0..8 {
            let carry = crc & 1;
            crc >>= 1;
            if carry == 1 {
                crc ^= 0xA001;
            }
        }
    }
    crc
}

/// What is wrong with a packet, naming the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hj212Error {
    /// The `##`, length, CRC digits or `\r\n` are not where they belong.
    #[error("not an HJ 212 packet: {0}")]
    Framing(String),
    /// The CRC disagrees with the data segment.
    #[error(
        "CRC {sent:04X} where the data segment's is {computed:04X}: the packet was damaged on \
         the way, or the logger computes the CRC the Modbus way (its maker's firmware is \
         wrong; HJ 212-2017 Appendix A is the reference)"
    )]
    Crc { sent: u16, computed: u16 },
    /// One field of the data segment is missing or malformed.
    #[error("HJ 212 field {field}: {problem}")]
    Field { field: String, problem: String },
}

impl Hj212Error {
    /// The kind a logger's counters count the error under.
    pub fn kind(&self) -> &'static str {
        match self {
            Hj212Error::Framing(_) => "framing",
            Hj212Error::Crc { .. } => "crc",
            Hj212Error::Field { .. } => "field",
        }
    }
}

fn field(name: &str, problem: impl Into<String>) -> Hj212Error {
    Hj212Error::Field {
        field: name.to_string(),
        problem: problem.into(),
    }
}

/// Which edition of the standard a packet follows, from the version bits of its `Flag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edition {
    V2005,
    V2017,
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edition::V2005 => f.write_str("HJ/T 212-2005"),
            Edition::V2017 => f.write_str("HJ 212-2017"),
        }
    }
}

/// `Flag` bit 0 (A): the logger wants an acknowledgement.
pub const FLAG_ACK: u8 = 0b01;
/// `Flag` bit 1 (D): the packet is one of several (PNUM/PNO follow).
pub const FLAG_SPLIT: u8 = 0b10;

/// One pollutant's values in a packet, with its data flag.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PollutantData {
    pub code: String,
    /// Real-time value (2011).
    pub rtd: Option<f64>,
    /// Average, minimum, maximum over the period (2051, 2061, 2031).
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Total over the period (discharged volume or mass).
    pub cou: Option<f64>,
    /// Values converted to the reference oxygen content (折算), for exhaust.
    pub zs_rtd: Option<f64>,
    pub zs_avg: Option<f64>,
    pub zs_min: Option<f64>,
    pub zs_max: Option<f64>,
    pub flag: Option<DataFlag>,
    /// Other `code-Field=value` items (EFlag, SampleTime, Info …), in order.
    pub extra: Vec<(String, String)>,
}

impl PollutantData {
    fn number(&mut self, name: &str) -> Option<&mut Option<f64>> {
        Some(match name {
            "Rtd" => &mut self.rtd,
            "Avg" => &mut self.avg,
            "Min" => &mut self.min,
            "Max" => &mut self.max,
            "Cou" => &mut self.cou,
            "ZsRtd" => &mut self.zs_rtd,
            "ZsAvg" => &mut self.zs_avg,
            "ZsMin" => &mut self.zs_min,
            "ZsMax" => &mut self.zs_max,
            _ => return None,
        })
    }

    fn numbers(&self) -> [(&'static str, Option<f64>); 9] {
        [
            ("Rtd", self.rtd),
            ("Avg", self.avg),
            ("Min", self.min),
            ("Max", self.max),
            ("Cou", self.cou),
            ("ZsRtd", self.zs_rtd),
            ("ZsAvg", self.zs_avg),
            ("ZsMin", self.zs_min),
            ("ZsMax", self.zs_max),
        ]
    }
}

/// The command parameters, `CP=&&…&&`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cp {
    /// When the data was taken (start of the period for minute, hourly and daily data), in the
    /// logger's local time.
    pub data_time: Option<DateTime>,
    pub values: Vec<PollutantData>,
    /// Parameters that belong to no pollutant (`RtdInterval=30`, `SystemTime=…`), in order.
    pub other: Vec<(String, String)>,
}

/// A parsed packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Request number, `yyyyMMddHHmmssSSS`; what an acknowledgement echoes.
    pub qn: Option<String>,
    pub st: u8,
    pub cn: u16,
    pub pw: Option<String>,
    pub mn: String,
    pub flag: Option<u8>,
    pub pnum: Option<u16>,
    pub pno: Option<u16>,
    pub cp: Cp,
}

impl Packet {
    /// HJ 212-2017 packets carry version 1 in `Flag`'s upper six bits; a packet without a flag
    /// or with version 0 is HJ/T 212-2005.
    pub fn edition(&self) -> Edition {
        match self.flag {
            Some(f) if f >> 2 == 1 => Edition::V2017,
            _ => Edition::V2005,
        }
    }

    pub fn wants_ack(&self) -> bool {
        self.flag.is_some_and(|f| f & FLAG_ACK != 0)
    }

    /// Whether this is one part of a split packet (it carries PNUM and PNO).
    pub fn is_split(&self) -> bool {
        self.pnum.is_some()
    }

    /// The data segment this packet is written as: what [`frame`] wraps.
    pub fn data_segment(&self) -> String {
        let mut out = String::new();
        if let Some(qn) = &self.qn {
            out.push_str(&format!("QN={qn};"));
        }
        out.push_str(&format!("ST={:02};CN={:04};", self.st, self.cn));
        if let Some(pw) = &self.pw {
            out.push_str(&format!("PW={pw};"));
        }
        out.push_str(&format!("MN={};", self.mn));
        if let Some(flag) = self.flag {
            out.push_str(&format!("Flag={flag};"));
        }
        if let (Some(pnum), Some(pno)) = (self.pnum, self.pno) {
            out.push_str(&format!("PNUM={pnum};PNO={pno};"));
        }
        let mut groups = Vec::new();
        if let Some(t) = self.cp.data_time {
            groups.push(format!("DataTime={}", t.strftime("%Y%m%d%H%M%S")));
        }
        for v in &self.cp.values {
            let mut items: Vec<String> = v
                .numbers()
                .iter()
                .filter_map(|(name, x)| x.map(|x| format!("{}-{name}={x}", v.code)))
                .collect();
            if let Some(flag) = v.flag {
                items.push(format!("{}-Flag={flag}", v.code));
            }
            items.extend(v.extra.iter().map(|(k, x)| format!("{}-{k}={x}", v.code)));
            groups.push(items.join(","));
        }
        groups.extend(self.cp.other.iter().map(|(k, v)| format!("{k}={v}")));
        out.push_str(&format!("CP=&&{}&&", groups.join(";")));
        out
    }
}

/// A data segment wrapped as a packet: `##`, length, data, CRC, `\r\n`.
pub fn frame(data: &str) -> Result<String, Hj212Error> {
    if data.len() > MAX_DATA {
        return Err(Hj212Error::Framing(format!(
            "a data segment of {} characters (at most {MAX_DATA})",
            data.len()
        )));
    }
    Ok(format!(
        "##{:04}{data}{:04X}\r\n",
        data.len(),
        crc16(data.as_bytes())
    ))
}

/// How many bytes from the start of `buf` the packet in it takes, once its length digits are
/// there; `None` while more bytes are needed. Refuses a stream that does not start with `##`
/// at once, so a peer that sends something else is dropped before it fills a buffer.
pub fn packet_length(buf: &[u8]) -> Result<Option<usize>, Hj212Error> {
    for (i, b) in buf.iter().take(2).enumerate() {
        if *b != b'#' {
            return Err(Hj212Error::Framing(format!(
                "byte {i} is {b:#04x} where the header ## belongs: not an HJ 212 logger, or \
                 the logger sends a vendor protocol on this port"
            )));
        }
    }
    let Some(digits) = buf.get(2..6) else {
        for b in buf.iter().skip(2) {
            if !b.is_ascii_digit() {
                return Err(Hj212Error::Framing(format!(
                    "length digit {b:#04x} is not a decimal digit"
                )));
            }
        }
        return Ok(None);
    };
    let mut len = 0usize;
    for b in digits {
        if !b.is_ascii_digit() {
            return Err(Hj212Error::Framing(format!(
                "length {:?} is not four decimal digits",
                String::from_utf8_lossy(digits)
            )));
        }
        len = len * 10 + usize::from(b - b'0');
    }
    Ok(Some(len + OVERHEAD))
}

/// Checks one whole packet (framing and CRC) and parses its data segment.
pub fn parse(bytes: &[u8]) -> Result<Packet, Hj212Error> {
    let total = packet_length(bytes)?.ok_or_else(|| {
        Hj212Error::Framing(format!("a packet cut short at {} bytes", bytes.len()))
    })?;
    if bytes.len() != total {
        return Err(Hj212Error::Framing(format!(
            "{} bytes where the length digits make a packet of {total}",
            bytes.len()
        )));
    }
    let data = &bytes[6..total - 6];
    let crc = &bytes[total - 6..total - 2];
    if &bytes[total - 2..] != b"\r\n" {
        return Err(Hj212Error::Framing(
            "the packet does not end in \\r\\n where its length says it ends: the length \
             digits are wrong"
                .to_string(),
        ));
    }
    let sent = std::str::from_utf8(crc)
        .ok()
        .filter(|s| s.chars().all(|c| c.is_ascii_hexdigit()))
        .and_then(|s| u16::from_str_radix(s, 16).ok())
        .ok_or_else(|| {
            Hj212Error::Framing(format!(
                "CRC {:?} is not four hex digits (or the length digits are wrong)",
                String::from_utf8_lossy(crc)
            ))
        })?;
    let computed = crc16(data);
    if sent != computed {
        return Err(Hj212Error::Crc { sent, computed });
    }
    let text = std::str::from_utf8(data).map_err(|_| {
        Hj212Error::Framing("the data segment is not text (UTF-8 or ASCII)".to_string())
    })?;
    parse_segment(text)
}

fn digits(name: &str, value: &str, count: usize) -> Result<(), Hj212Error> {
    if value.len() == count && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(field(name, format!("{value:?} is not {count} digits")))
    }
}

fn small_number(name: &str, value: &str) -> Result<u16, Hj212Error> {
    value
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=9999).contains(n) && value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| field(name, format!("{value:?} is not a number from 1 to 9999")))
}

/// The logger's local time as `yyyyMMddHHmmss`.
fn data_time(value: &str) -> Result<DateTime, Hj212Error> {
    digits("DataTime", value, 14)?;
    let n = |r: std::ops::Range<usize>| value[r].parse::<i16>().unwrap_or(-1);
    let small = |r: std::ops::Range<usize>| i8::try_from(n(r)).unwrap_or(-1);
    DateTime::new(
        n(0..4),
        small(4..6),
        small(6..8),
        small(8..10),
        small(10..12),
        small(12..14),
        0,
    )
    .map_err(|_| field("DataTime", format!("{value:?} is not a date and time")))
}

/// Parses a data segment (the text between the length and the CRC).
pub fn parse_segment(data: &str) -> Result<Packet, Hj212Error> {
    let cp_at = data.find("CP=&&").ok_or_else(|| {
        field(
            "CP",
            "missing: the data segment must end with CP=&&…&& (even an empty CP=&&&&)",
        )
    })?;
    let head = &data[..cp_at];
    if !(head.is_empty() || head.ends_with(';')) {
        return Err(field("CP", "not preceded by ';'"));
    }
    let body = data[cp_at + 5..]
        .strip_suffix("&&")
        .ok_or_else(|| field("CP", "does not end with && at the end of the data segment"))?;

    let mut qn = None;
    let mut st = None;
    let mut cn = None;
    let mut pw = None;
    let mut mn = None;
    let mut flag = None;
    let mut pnum = None;
    let mut pno = None;
    for item in head.split(';').filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| field(item, "has no '='"))?;
        let duplicate = match key {
            "QN" => {
                digits(key, value, 17)?;
                qn.replace(value.to_string()).is_some()
            }
            "ST" => {
                digits(key, value, 2)?;
                st.replace(value.parse::<u8>().unwrap_or(0)).is_some()
            }
            "CN" => {
                digits(key, value, 4)?;
                cn.replace(value.parse::<u16>().unwrap_or(0)).is_some()
            }
            "PW" => {
                if value.is_empty() || value.len() > 64 {
                    return Err(field(key, "empty or longer than 64 characters"));
                }
                pw.replace(value.to_string()).is_some()
            }
            "MN" => {
                let ok = (1..=24).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(field(
                        key,
                        format!("{value:?} is not a logger number (1 to 24 letters and digits)"),
                    ));
                }
                mn.replace(value.to_string()).is_some()
            }
            "Flag" => {
                let f = value
                    .parse::<u8>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        field(key, format!("{value:?} is not a number from 0 to 255"))
                    })?;
                flag.replace(f).is_some()
            }
            "PNUM" => pnum.replace(small_number(key, value)?).is_some(),
            "PNO" => pno.replace(small_number(key, value)?).is_some(),
            other => {
                return Err(field(
                    other,
                    "is not a field of the data segment (QN, ST, CN, PW, MN, Flag, PNUM, PNO, CP)",
                ));
            }
        };
        if duplicate {
            return Err(field(key, "appears twice"));
        }
    }
    let st = st.ok_or_else(|| field("ST", "missing"))?;
    let cn = cn.ok_or_else(|| field("CN", "missing"))?;
    let mn = mn.ok_or_else(|| field("MN", "missing: the logger cannot be identified"))?;
    // Flag's bit 1 announces a split packet, but the standard's own real-time example sets
    // it (Flag=7) on a whole packet without PNUM and PNO: the two numbers decide.
    match (pnum, pno) {
        (None, None) => {}
        (Some(n), Some(i)) if i <= n => {}
        (Some(n), Some(i)) => {
            return Err(field("PNO", format!("packet {i} of {n}")));
        }
        _ => {
            return Err(field(
                "PNUM",
                "a split packet needs both PNUM (the number of parts) and PNO (this part)",
            ));
        }
    }
    Ok(Packet {
        qn,
        st,
        cn,
        pw,
        mn,
        flag,
        pnum,
        pno,
        cp: parse_cp(body)?,
    })
}

/// Parses the inside of `CP=&&…&&`.
pub fn parse_cp(body: &str) -> Result<Cp, Hj212Error> {
    let mut cp = Cp::default();
    for item in body.split([';', ',']).filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| field(&format!("CP item {item:?}"), "has no '='"))?;
        if key == "DataTime" {
            if cp.data_time.replace(data_time(value)?).is_some() {
                return Err(field("DataTime", "appears twice"));
            }
            continue;
        }
        let Some((code, name)) = key.rsplit_once('-') else {
            cp.other.push((key.to_string(), value.to_string()));
            continue;
        };
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric()) || name.is_empty() {
            return Err(field(
                key,
                "is not a pollutant code and a field name (w01018-Avg)",
            ));
        }
        let at = match cp.values.iter().position(|v| v.code == code) {
            Some(at) => at,
            None => {
                cp.values.push(PollutantData {
                    code: code.to_string(),
                    ..PollutantData::default()
                });
                cp.values.len() - 1
            }
        };
        let entry = &mut cp.values[at];
        if name == "Flag" {
            let f = DataFlag::parse(value).ok_or_else(|| {
                field(
                    key,
                    format!(
                        "{value:?} is not a data flag (N normal, F stopped, M maintenance, S \
                         manual, D fault, C calibration, T over range, B communication fault)"
                    ),
                )
            })?;
            if entry.flag.replace(f).is_some() {
                return Err(field(key, "appears twice"));
            }
        } else if let Some(slot) = entry.number(name) {
            let x = value
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| field(key, format!("{value:?} is not a number")))?;
            if slot.replace(x).is_some() {
                return Err(field(key, "appears twice"));
            }
        } else {
            entry.extra.push((name.to_string(), value.to_string()));
        }
    }
    Ok(cp)
}

/// The acknowledgement a packet asks for, framed and ready to send: 9014 (data answer) with
/// the packet's QN, PW and MN, when its `Flag` asks for one and it carries uploaded data.
/// `None` when nothing is to be sent. The answer is built in the packet's edition: `Flag=4`
/// (2017, no answer wanted back), `Flag=0` for 2005.
pub fn acknowledgement(packet: &Packet) -> Option<String> {
    if !packet.wants_ack() || !codes::is_data_upload(packet.cn) {
        return None;
    }
    let ack = Packet {
        qn: packet.qn.clone(),
        st: 91,
        cn: codes::CN_DATA_ACK,
        pw: packet.pw.clone(),
        mn: packet.mn.clone(),
        flag: Some(match packet.edition() {
            Edition::V2017 => 4,
            Edition::V2005 => 0,
        }),
        pnum: None,
        pno: None,
        cp: Cp::default(),
    };
    // The fields are the packet's own, which fit in its data segment: the answer is shorter.
    frame(&ack.data_segment()).ok()
}

/// Joins the parts of a split packet (PNO 1 … PNUM, in any order) into one: the header of
/// part 1 without PNUM/PNO, the values of all. The parts must agree on MN, CN, QN and
/// DataTime, and no value may come twice.
pub fn merge(parts: &[Packet]) -> Result<Packet, Hj212Error> {
    let first = parts
        .iter()
        .find(|p| p.pno == Some(1))
        .ok_or_else(|| field("PNO", "part 1 of the split packet is missing"))?;
    let count = first
        .pnum
        .ok_or_else(|| field("PNUM", "missing on part 1"))?;
    if parts.len() != usize::from(count) {
        return Err(field("PNUM", format!("{} parts of {count}", parts.len())));
    }
    let mut seen = vec![false; usize::from(count)];
    let mut merged = first.clone();
    merged.pnum = None;
    merged.pno = None;
    merged.flag = merged.flag.map(|f| f & !FLAG_SPLIT);
    merged.cp = Cp {
        data_time: first.cp.data_time,
        ..Cp::default()
    };
    let mut ordered: Vec<&Packet> = parts.iter().collect();
    ordered.sort_by_key(|p| p.pno);
    for part in ordered {
        let (Some(n), Some(i)) = (part.pnum, part.pno) else {
            return Err(field("PNO", "a part without PNUM and PNO"));
        };
        if n != count
            || i == 0
            || i > count
            || std::mem::replace(&mut seen[usize::from(i) - 1], true)
        {
            return Err(field(
                "PNO",
                format!("part {i} of {n} does not fit {count} parts"),
            ));
        }
        if part.mn != first.mn || part.cn != first.cn || part.qn != first.qn {
            return Err(field(
                "MN",
                format!("part {i} belongs to another packet (MN, CN or QN differ)"),
            ));
        }
        if part.cp.data_time.is_some() && part.cp.data_time != first.cp.data_time {
            return Err(field("DataTime", format!("part {i} has another DataTime")));
        }
        for v in &part.cp.values {
            match merged.cp.values.iter_mut().find(|m| m.code == v.code) {
                None => merged.cp.values.push(v.clone()),
                Some(m) => {
                    for (name, x) in v.numbers() {
                        if let (Some(x), Some(slot)) = (x, m.number(name))
                            && slot.replace(x).is_some()
                        {
                            return Err(field(&format!("{}-{name}", v.code), "comes in two parts"));
                        }
                    }
                    if let Some(f) = v.flag
                        && m.flag.replace(f).is_some()
                    {
                        return Err(field(&format!("{}-Flag", v.code), "comes in two parts"));
                    }
                    m.extra.extend(v.extra.iter().cloned());
                }
            }
        }
        merged.cp.other.extend(part.cp.other.iter().cloned());
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HJ 212-2017's example packet (set the real-time data interval), as printed in the
    /// standard and reproduced by every implementation: 101 characters, CRC 1C80.
    const STANDARD_EXAMPLE: &str = "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;\
        MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";

    /// The standard's example of real-time air data (HJ 212-2017 Appendix C, as reproduced by
    /// the hj212 Java library's tests, its `LA-td` typo included): 453 characters, CRC C0C1.
    const REALTIME_EXAMPLE: &str = "##0453QN=20160801085000001;ST=22;CN=2011;PW=123456;\
        MN=010000A8900016F000169DC0;Flag=7;CP=&&DataTime=20160801084000;a21005-Rtd=1.1,\
        a21005-Flag=N;a21004-Rtd=112,a21004-Flag=N;a21026-Rtd=58,a21026-Flag=N;LA-td=50.1,\
        LA-Flag=N;a34004-Rtd=207,a34004-Flag=N;a34002-Rtd=295,a34002-Flag=N;a01001-Rtd=12.6,\
        a01001-Flag=N;a01002-Rtd=32,a01002-Flag=N;a01006-Rtd=101.02,a01006-Flag=N;\
        a01007-Rtd=2.1,a01007-Flag=N;a01008-Rtd=120,a01008-Flag=N;a34001-Rtd=217,\
        a34001-Flag=N;&&c0c1\r\n";

    /// An HJ/T 212-2005 real-time packet of a wastewater outlet (a public validator's test
    /// case): no QN, no Flag, 2005 pollutant codes, CRC A9C1.
    const V2005_EXAMPLE: &str = "##0178ST=32;CN=2011;PW=123456;MN=0873HHMZWSLH02;\
        CP=&&DataTime=20160103133030;060-Rtd=3.0943,060-Flag=N;011-Rtd=18.0412,011-Flag=N;\
        001-Rtd=8.2137,001-Flag=N;B01-Rtd=10.9890,B01-Flag=N&&a9c1\r\n";

    /// Hourly data of an exhaust outlet with averages and a 24-character password, as the
    /// hj212 Java library's tests carry it from a logger: 285 characters, CRC C181.
    const HOURLY_EXAMPLE: &str = "##0285QN=20190925181031464;ST=22;CN=2061;\
        PW=BF470F88957588DE902D1A52;MN=Z13401000010301;Flag=5;CP=&&DataTime=20190924220000;\
        a34006-Avg=2.69700,a34006-Flag=N;a34007-Avg=7.96600,a34007-Flag=N;a34048-Avg=3.30600,\
        a34048-Flag=N;a34047-Avg=7.35700,a34047-Flag=N;a34049-Avg=10.66300,a34049-Flag=N&&C181\r\n";

    fn ok(text: &str) -> Packet {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A wastewater outlet's hourly packet built from parts, framed.
    fn hourly(flag: u8) -> Packet {
        Packet {
            qn: Some("20261206190000123".into()),
            st: 32,
            cn: codes::CN_HOURLY,
            pw: Some("123456".into()),
            mn: "33072300000001".into(),
            flag: Some(flag),
            pnum: None,
            pno: None,
            cp: Cp {
                data_time: Some(jiff::civil::date(2026, 12, 6).at(18, 0, 0, 0)),
                values: vec![
                    PollutantData {
                        code: "w01018".into(),
                        avg: Some(40.1),
                        min: Some(35.0),
                        max: Some(47.25),
                        cou: Some(1.204),
                        flag: Some(DataFlag::Normal),
                        ..Default::default()
                    },
                    PollutantData {
                        code: "w00000".into(),
                        avg: Some(8.33),
                        cou: Some(30.0),
                        flag: Some(DataFlag::Maintenance),
                        ..Default::default()
                    },
                ],
                other: vec![],
            },
        }
    }

    #[test]
    fn the_crc_is_appendix_as_not_modbus() {
        // The standard's example: data segment of 101 characters, CRC 1C80.
        let data = &STANDARD_EXAMPLE[6..107];
        assert_eq!(data.len(), 101);
        assert_eq!(crc16(data.as_bytes()), 0x1C80);
        // The Modbus CRC of the same bytes is 0x0759: a logger or platform using it fails.
        let modbus = data.bytes().fold(0xFFFFu16, |mut crc, b| {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
            crc
        });
        assert_eq!(modbus, 0x0759);
        assert_eq!(crc16(b""), 0xFFFF);
    }

    #[test]
    fn the_published_example_packets_parse() {
        let p = ok(STANDARD_EXAMPLE);
        assert_eq!(p.qn.as_deref(), Some("20160801085857223"));
        assert_eq!((p.st, p.cn), (32, 1062));
        assert_eq!(p.pw.as_deref(), Some("100000"));
        assert_eq!(p.mn, "010000A8900016F000169DC0");
        // Flag 5 = 0b101: version 1 (2017), ack wanted, not split.
        assert_eq!(p.edition(), Edition::V2017);
        assert!(p.wants_ack() && !p.is_split());
        assert_eq!(p.cp.other, [("RtdInterval".to_string(), "30".to_string())]);

        let rt = ok(REALTIME_EXAMPLE);
        assert_eq!(rt.cn, codes::CN_REALTIME);
        assert_eq!(
            rt.cp.data_time,
            Some(jiff::civil::date(2016, 8, 1).at(8, 40, 0, 0))
        );
        assert_eq!(rt.cp.values.len(), 12);
        let so2 = rt.cp.values.iter().find(|v| v.code == "a21026").unwrap();
        assert_eq!((so2.rtd, so2.flag), (Some(58.0), Some(DataFlag::Normal)));
        // The standard's typo "LA-td" is kept as an unknown field, not lost or refused.
        let la = rt.cp.values.iter().find(|v| v.code == "LA").unwrap();
        assert_eq!(la.extra, [("td".to_string(), "50.1".to_string())]);
        // Flag 7 sets the split bit, yet the standard's packet is whole: no PNUM and PNO.
        assert!(rt.wants_ack() && !rt.is_split());

        let hourly = ok(HOURLY_EXAMPLE);
        assert_eq!(hourly.cn, codes::CN_HOURLY);
        assert_eq!(hourly.pw.as_deref(), Some("BF470F88957588DE902D1A52"));
        assert_eq!(hourly.cp.values.len(), 5);
        assert_eq!(hourly.cp.values[4].avg, Some(10.663));
        assert!(hourly.cp.values.iter().all(|v| v.rtd.is_none()));

        let old = ok(V2005_EXAMPLE);
        assert_eq!(old.edition(), Edition::V2005);
        assert!(!old.wants_ack());
        assert_eq!(old.qn, None);
        let flow = old.cp.values.iter().find(|v| v.code == "B01").unwrap();
        assert_eq!(flow.rtd, Some(10.989));
        assert_eq!(codes::pollutant("B01").unwrap().signal, "wastewater_flow");
    }

    #[test]
    fn packets_round_trip() {
        let p = hourly(5);
        let text = frame(&p.data_segment()).unwrap();
        assert!(text.starts_with("##0"));
        assert!(text.ends_with("\r\n"));
        assert_eq!(parse(text.as_bytes()), Ok(p.clone()));
        assert_eq!(packet_length(text.as_bytes()), Ok(Some(text.len())));
        // Every standard example comes back as it was, CRC case aside.
        for example in [
            STANDARD_EXAMPLE,
            REALTIME_EXAMPLE,
            HOURLY_EXAMPLE,
            V2005_EXAMPLE,
        ] {
            let p = ok(example);
            assert_eq!(parse_segment(&p.data_segment()), Ok(p));
        }
    }

    #[test]
    fn the_acknowledgement_is_9014_with_qn_pw_and_mn() {
        // The hj212 Java library's answer to the real-time example, CRC C241 (checked by hand
        // with the Appendix A algorithm in Python as well).
        let rt = ok(REALTIME_EXAMPLE);
        assert_eq!(
            acknowledgement(&rt).as_deref(),
            Some(
                "##0087QN=20160801085000001;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;\
                 Flag=4;CP=&&&&C241\r\n"
            )
        );
        // No answer when the flag does not ask (Flag=4), for a 2005 packet without a flag,
        // or for a command (1062) rather than data.
        assert_eq!(acknowledgement(&hourly(4)), None);
        assert_eq!(acknowledgement(&ok(V2005_EXAMPLE)), None);
        assert_eq!(acknowledgement(&ok(STANDARD_EXAMPLE)), None);
        // A 2005 packet that asks (Flag=1) is answered in 2005 form.
        let answer = acknowledgement(&hourly(1)).unwrap();
        assert!(answer.contains(";Flag=0;CP=&&&&"), "{answer}");
        assert_eq!(ok(&answer).cn, codes::CN_DATA_ACK);
    }

    #[test]
    fn split_packets_merge_and_refuse_what_does_not_fit() {
        let whole = hourly(5);
        let mut one = whole.clone();
        let mut two = whole.clone();
        one.flag = Some(7);
        two.flag = Some(7);
        (one.pnum, one.pno, two.pnum, two.pno) = (Some(2), Some(1), Some(2), Some(2));
        one.cp.values.truncate(1);
        two.cp.values.remove(0);
        // Each part is a packet of its own on the wire.
        for part in [&one, &two] {
            let text = frame(&part.data_segment()).unwrap();
            assert_eq!(parse(text.as_bytes()).as_ref(), Ok(part));
        }
        assert_eq!(merge(&[two.clone(), one.clone()]), Ok(whole.clone()));
        // A part missing, a part twice, a part of another logger, a value in two parts.
        assert!(merge(std::slice::from_ref(&one)).is_err());
        assert!(merge(&[one.clone(), one.clone()]).is_err());
        let mut stranger = two.clone();
        stranger.mn = "33072300000002".into();
        assert!(merge(&[one.clone(), stranger]).is_err());
        let mut twice = two.clone();
        twice.cp.values = one.cp.values.clone();
        let e = merge(&[one.clone(), twice]).unwrap_err();
        assert!(e.to_string().contains("w01018-Avg"), "{e}");
        assert!(merge(&[two]).is_err(), "no part 1");
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_the_parser_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let _ = packet_length(&bytes);
            let _ = parse(&bytes);
        }

        /// Text made of the characters packets are made of, framed with a correct CRC so
        /// that it reaches the field parser.
        #[test]
        fn no_data_segment_makes_the_parser_panic(segment in "[A-Za-z0-9=;,&.\\-]{0,120}") {
            let framed = frame(&segment).unwrap();
            if let Ok(p) = parse(framed.as_bytes()) {
                // Whatever parses writes back to something that parses the same.
                proptest::prop_assert_eq!(parse_segment(&p.data_segment()), Ok(p.clone()));
                let _ = acknowledgement(&p);
                let _ = merge(std::slice::from_ref(&p));
            }
        }

        /// A valid header and CP items built from the standard's field names with values that
        /// may or may not be numbers and flags: parsed or refused, and what parses round trips.
        #[test]
        fn cp_items_parse_or_are_refused(
            cp in "(DataTime=20[0-9]{12};|[aw][0-9]{5}-(Rtd|Avg|Min|Max|Cou|ZsAvg|Flag|EFlag)=[-0-9.eNFMSDCTB]{1,6}[;,]){0,8}",
        ) {
            let segment = format!(
                "QN=20261206190000123;ST=32;CN=2061;PW=123456;MN=A1;Flag=5;CP=&&{cp}&&"
            );
            let framed = frame(&segment).unwrap();
            if let Ok(p) = parse(framed.as_bytes()) {
                proptest::prop_assert_eq!(parse_segment(&p.data_segment()), Ok(p.clone()));
                proptest::prop_assert!(acknowledgement(&p).is_some());
            }
        }

        #[test]
        fn mutated_packets_are_errors_not_panics(at in 0usize..200, byte in proptest::num::u8::ANY) {
            let mut bytes = frame(&hourly(7).data_segment()).unwrap().into_bytes();
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn every_malformed_part_is_named() {
        let good = frame(&hourly(5).data_segment()).unwrap();
        // Framing.
        for (bad, what) in [
            ("", "cut short"),
            ("#", "cut short"),
            ("$$0010", "header"),
            ("##00a1", "four decimal"),
            ("##0003QN=CRC!\r\n", "hex"),
        ] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(what), "{bad:?}: {e}");
        }
        let e = packet_length(b"GET / HTTP/1.1").unwrap_err();
        assert_eq!(e.kind(), "framing");
        assert_eq!(packet_length(b"##01"), Ok(None));
        assert!(packet_length(b"##0x").is_err());
        // Every prefix of a good packet, and a byte too many.
        for n in 0..good.len() {
            assert!(parse(&good.as_bytes()[..n]).is_err(), "{n}");
        }
        assert!(parse(format!("{good}x").as_bytes()).is_err());
        // A wrong length that lands the CRC elsewhere; the end not \r\n.
        let e = parse(good.replacen("##0", "##1", 1).as_bytes()).unwrap_err();
        assert_eq!(e.kind(), "framing");
        let e = parse(good.replace("\r\n", "\n\n").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("\\r\\n"), "{e}");
        // The CRC: one character of the data changed.
        let e = parse(good.replace("40.1", "40.2").as_bytes()).unwrap_err();
        assert_eq!(e.kind(), "crc");
        assert!(e.to_string().contains("Appendix A"), "{e}");

        // Fields: each class of mistake, framed with a correct CRC so the field is reached.
        let field_error = |segment: &str| -> String {
            parse(frame(segment).unwrap().as_bytes())
                .unwrap_err()
                .to_string()
        };
        let base = "QN=20261206190000123;ST=32;CN=2061;PW=123456;MN=33072300000001;Flag=5;";
        for (segment, what) in [
            (base.to_string(), "CP"),
            (format!("{base}CP=&&"), "&&"),
            ("QN=2026;ST=32;CN=2061;MN=A;CP=&&&&".to_string(), "QN"),
            ("ST=3;CN=2061;MN=A;CP=&&&&".to_string(), "ST"),
            ("ST=32;CN=20611;MN=A;CP=&&&&".to_string(), "CN"),
            ("ST=32;CN=2061;CP=&&&&".to_string(), "MN"),
            ("ST=32;CN=2061;MN=A B;CP=&&&&".to_string(), "MN"),
            ("CN=2061;MN=A;CP=&&&&".to_string(), "ST"),
            ("ST=32;CN=2061;MN=A;Flag=256;CP=&&&&".to_string(), "Flag"),
            ("ST=32;ST=32;CN=2061;MN=A;CP=&&&&".to_string(), "twice"),
            ("ST=32;CN=2061;MN=A;XX=1;CP=&&&&".to_string(), "XX"),
            (
                "ST=32;CN=2061;MN=A;Flag=7;PNUM=2;CP=&&&&".to_string(),
                "PNUM",
            ),
            ("ST=32;CN=2061;MN=A;PNUM=2;PNO=3;CP=&&&&".to_string(), "PNO"),
            (format!("{base}CP=&&DataTime=20261306180000&&"), "DataTime"),
            (format!("{base}CP=&&w01018-Avg=abc&&"), "w01018-Avg"),
            (format!("{base}CP=&&w01018-Avg=NaN&&"), "not a number"),
            (format!("{base}CP=&&w01018-Avg=1,w01018-Avg=2&&"), "twice"),
            (format!("{base}CP=&&w01018-Flag=X&&"), "data flag"),
            (format!("{base}CP=&&w01018-Avg&&"), "'='"),
            (format!("{base}CP=&&-Avg=1&&"), "pollutant code"),
        ] {
            let e = field_error(&segment);
            assert!(e.contains(what), "{segment:?}: {e}");
        }
        // Not text.
        let raw = [
            b"##0002".as_slice(),
            &[0xFF, 0xFE],
            format!("{:04X}\r\n", crc16(&[0xFF, 0xFE])).as_bytes(),
        ]
        .concat();
        assert!(parse(&raw).unwrap_err().to_string().contains("not text"));
        // Too long to frame.
        assert!(frame(&"x".repeat(MAX_DATA + 1)).is_err());
    }
}
