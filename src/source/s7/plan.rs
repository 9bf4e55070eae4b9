//! Request planning: which Read Var jobs fetch a PLC's fields in as few round trips as the
//! negotiated PDU allows.
//!
//! Three steps, each bounded by the PDU the PLC granted at connection:
//!
//! 1. Fields of one area (one DB, M, I, Q, T, C) that lie within `max_gap` bytes of each other
//!    are merged into one item, the gap included, as long as the item's data still fits one
//!    reply ([`frame::max_item_bytes`]).
//! 2. Items are packed, in address order, into jobs of up to [`frame::MAX_ITEMS`] items whose
//!    request and reply both fit the PDU ([`frame::fits`]): a multi-item Read Var saves a
//!    round trip for each item it carries.
//! 3. Fields with their own `poll` form groups, each planned on its own.
//!
//! Planning is pure and needs the PDU size, so the device plans again after every connection
//! (a PLC replaced by one with a smaller PDU gets smaller jobs); `check --plan` shows the plan
//! for the PDU the config asks for.

use std::fmt;
use std::time::Duration;

use super::address::{Area, Width};
use super::config::S7Device;
use super::frame::{self, ReadItem};

/// The jobs for the fields that share one poll interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollGroup {
    pub poll: Duration,
    pub jobs: Vec<Job>,
}

/// One Read Var job: items that fit one PDU both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub items: Vec<Item>,
}

impl Job {
    /// The items as the frame builder takes them.
    pub fn read_items(&self) -> Vec<ReadItem> {
        self.items.iter().map(|i| i.read).collect()
    }
}

/// One item of a job and the fields it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub read: ReadItem,
    pub fields: Vec<PlannedField>,
}

/// Where a field sits in its item's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedField {
    /// Index into the device's `fields`.
    pub index: usize,
    /// Byte offset of the field in the item's data.
    pub offset: usize,
    /// Bytes the field occupies.
    pub len: usize,
    /// The bit of a bool (0 otherwise).
    pub bit: u8,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.read;
        let n = self.fields.len();
        let s = if n == 1 { "" } else { "s" };
        if r.area.is_element_area() {
            write!(
                f,
                "{}{}..{}{} ({} elements, {n} field{s})",
                r.area,
                r.start,
                r.area,
                r.start + u32::from(r.count) - 1,
                r.count
            )
        } else {
            write!(
                f,
                "{} bytes {}..{} ({} bytes, {n} field{s})",
                r.area,
                r.start,
                r.start + u32::from(r.count) - 1,
                r.count
            )
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data: usize = self.items.iter().map(|i| i.read.reply_bytes()).sum();
        write!(
            f,
            "Read Var, {} item{} ({data} bytes):",
            self.items.len(),
            if self.items.len() == 1 { "" } else { "s" }
        )?;
        for (n, item) in self.items.iter().enumerate() {
            write!(f, "{} {item}", if n == 0 { "" } else { ";" })?;
        }
        Ok(())
    }
}

/// Plans the reads of a device whose config passed `check`, for a PDU of `pdu` bytes: one group
/// per poll interval, shortest first.
pub fn plan(device: &S7Device, pdu: u16) -> Vec<PollGroup> {
    let mut polls: Vec<Duration> = device.fields.iter().map(|f| device.poll_of(f)).collect();
    polls.sort_unstable();
    polls.dedup();
    polls
        .into_iter()
        .map(|poll| PollGroup {
            poll,
            jobs: pack(
                items(device, pdu, |i| device.poll_of(&device.fields[i]) == poll),
                pdu,
            ),
        })
        .collect()
}

/// Step 1: the fields `take` selects, merged into items by area and gap.
fn items(device: &S7Device, pdu: u16, take: impl Fn(usize) -> bool) -> Vec<Item> {
    // (area, first unit, units, field index). A unit is a byte, or a timer/counter element.
    let mut spots: Vec<(Area, u32, u32, usize)> = device
        .fields
        .iter()
        .enumerate()
        .filter(|(i, _)| take(*i))
        .map(|(i, f)| {
            let units = if f.address.area.is_element_area() {
                1
            } else {
                f.bytes()
            };
            (f.address.area, f.address.start, units, i)
        })
        .collect();
    spots.sort_unstable();
    let max_bytes = u32::from(frame::max_item_bytes(pdu));
    let mut out: Vec<Item> = Vec::new();
    for (area, start, units, index) in spots {
        let unit_bytes = if area.is_element_area() { 2 } else { 1 };
        let (limit, gap) = (max_bytes / unit_bytes, device.max_gap / unit_bytes);
        let end = start + units;
        let bit = match device.fields[index].address.width {
            Width::Bit(b) => b,
            _ => 0,
        };
        let field = |item_start: u32| PlannedField {
            index,
            offset: ((start - item_start) * unit_bytes) as usize,
            len: (units * unit_bytes) as usize,
            bit,
        };
        if let Some(item) = out.last_mut()
            && item.read.area == area
        {
            let item_end = item.read.start + u32::from(item.read.count);
            let new_end = end.max(item_end);
            if start <= item_end + gap && new_end - item.read.start <= limit {
                item.read.count = (new_end - item.read.start) as u16;
                item.fields.push(field(item.read.start));
                continue;
            }
        }
        out.push(Item {
            read: ReadItem {
                area,
                start,
                count: units as u16,
            },
            fields: vec![field(start)],
        });
    }
    out
}

/// Step 2: items packed in order into jobs that fit the PDU both ways.
fn pack(items: Vec<Item>, pdu: u16) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    for item in items {
        if let Some(job) = jobs.last_mut() {
            let mut reads = job.read_items();
            reads.push(item.read);
            if frame::fits(&reads, pdu) {
                job.items.push(item);
                continue;
            }
        }
        jobs.push(Job { items: vec![item] });
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(fields: &str) -> S7Device {
        let text = format!(
            "[site]\ncounty = \"c\"\nsector = \"doors\"\nenterprise = \"e\"\n[[machine]]\nid = \"p\"\nkind = \"press\"\ncnc = false\n[[s7]]\nid = \"plc\"\nhost = \"h\"\nmachine = \"p\"\nfield = [{fields}]\n"
        );
        match crate::agent::config::load_str(&text, "t.toml") {
            Ok(c) => c.s7[0].clone(),
            Err(d) => panic!("{d}"),
        }
    }

    #[test]
    fn fields_of_one_area_within_the_gap_share_an_item() {
        let d = device(
            r#"{ signal = "run", address = "DB10.DBX0.0" },
               { signal = "fault", address = "DB10.DBX0.1" },
               { signal = "strokes", address = "DB10.DBD2" },
               { signal = "far", address = "DB10.DBW100" },
               { signal = "m", address = "MW20" },
               { signal = "t", address = "T3" },
               { signal = "t2", address = "T5" },"#,
        );
        let groups = plan(&d, 240);
        assert_eq!(groups.len(), 1);
        let jobs = &groups[0].jobs;
        // Four items in one job, in area order: M 20..21, DB10 0..5 (the two bits and the
        // DINT), DB10 100..101 (94 bytes past the gap of 16), T3..T5 (a gap of one element).
        assert_eq!(jobs.len(), 1, "{jobs:#?}");
        let reads = jobs[0].read_items();
        let want = [
            (Area::Flags, 20, 2),
            (Area::DataBlock(10), 0, 6),
            (Area::DataBlock(10), 100, 2),
            (Area::Timers, 3, 3),
        ];
        let got: Vec<_> = reads.iter().map(|r| (r.area, r.start, r.count)).collect();
        assert_eq!(got, want);
        // The DINT at byte 2 of the first item; bit 1 of byte 0; timer 5 at byte 4 of its item.
        let first = &jobs[0].items[1].fields;
        assert_eq!((first[1].offset, first[1].bit), (0, 1));
        assert_eq!((first[2].offset, first[2].len), (2, 4));
        assert_eq!(jobs[0].items[3].fields[1].offset, 4);
        assert_eq!(
            jobs[0].to_string(),
            "Read Var, 4 items (16 bytes): M bytes 20..21 (2 bytes, 1 field); DB10 bytes 0..5 (6 bytes, 3 fields); DB10 bytes 100..101 (2 bytes, 1 field); T3..T5 (3 elements, 2 fields)"
        );
    }

    #[test]
    fn a_big_read_is_split_at_the_pdu() {
        // 100 DINTs back to back: 400 bytes in DB1.
        let fields: String = (0..100)
            .map(|n| format!("{{ signal = \"v{n}\", address = \"DB1.DBD{}\" }},", 4 * n))
            .collect();
        let d = device(&fields);
        // PDU 240: 222 bytes an item at most, so items of 220 (55 DINTs) and 180 bytes; each
        // reply (14 + 4 + 220 = 238; 14 + 4 + 180 = 198) needs a job of its own.
        let jobs = &plan(&d, 240)[0].jobs;
        let counts: Vec<Vec<u16>> = jobs
            .iter()
            .map(|j| j.items.iter().map(|i| i.read.count).collect())
            .collect();
        assert_eq!(counts, vec![vec![220], vec![180]]);
        // PDU 960: 942 bytes an item, so one item of 400 bytes in one job.
        let jobs = &plan(&d, 960)[0].jobs;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].items[0].read.count, 400);
        for pdu in [240, 480, 960] {
            for job in &plan(&d, pdu)[0].jobs {
                assert!(frame::fits(&job.read_items(), pdu), "{pdu}: {job}");
            }
        }
    }

    #[test]
    fn scattered_items_go_many_to_a_job_up_to_the_request_limit() {
        // 30 words 100 bytes apart: 30 items; a 240-byte PDU's request carries at most
        // (240 − 12) / 12 = 19 of them, so 19 + 11.
        let fields: String = (0..30)
            .map(|n| format!("{{ signal = \"w{n}\", address = \"DB2.DBW{}\" }},", 100 * n))
            .collect();
        let d = device(&fields);
        let sizes: Vec<usize> = plan(&d, 240)[0]
            .jobs
            .iter()
            .map(|j| j.items.len())
            .collect();
        assert_eq!(sizes, vec![19, 11]);
        // At 960 the request has room for more, but a job has 20 items at most.
        let sizes: Vec<usize> = plan(&d, 960)[0]
            .jobs
            .iter()
            .map(|j| j.items.len())
            .collect();
        assert_eq!(sizes, vec![20, 10]);
    }

    #[test]
    fn fields_with_their_own_poll_are_planned_apart() {
        let d = device(
            r#"{ signal = "a", address = "MW0" },
               { signal = "b", address = "MW2", poll = "10s" },"#,
        );
        let groups = plan(&d, 240);
        let polls: Vec<u64> = groups.iter().map(|g| g.poll.as_secs()).collect();
        assert_eq!(polls, vec![1, 10]);
        assert!(groups.iter().all(|g| g.jobs.len() == 1));
    }
}
