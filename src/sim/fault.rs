//! Faults the simulator can be told to commit, so the agent's fault handling is tested
//! against a device that misbehaves the way real ones do: not answering, answering late,
//! refusing, or hanging up.

use std::str::FromStr;
use std::time::Duration;

/// What a faulty unit does instead of answering normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Reads the request and never answers (a dead unit behind a live gateway).
    NoReply,
    /// Answers after this long (a slow device, or a busy gateway).
    Delay(Duration),
    /// Answers with this exception code (2 illegal address, 4 device failure, 6 busy, …).
    Exception(u8),
    /// Closes the connection without answering (a gateway that drops idle clients, a
    /// restarting device).
    Drop,
}

/// A fault for one unit (or all) on every n-th request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The unit that misbehaves; `None` for every unit.
    pub unit: Option<u8>,
    pub kind: FaultKind,
    /// 1: every request; n: every n-th request a connection sends to the unit.
    pub every: u32,
}

/// The fault for the `nth` request (counted from 1 on its connection) to `unit`, if any: the
/// first matching entry wins.
pub fn pick(faults: &[Fault], unit: u8, nth: u64) -> Option<&FaultKind> {
    faults
        .iter()
        .find(|f| f.unit.is_none_or(|u| u == unit) && nth.is_multiple_of(u64::from(f.every.max(1))))
        .map(|f| &f.kind)
}

impl FromStr for Fault {
    type Err = String;

    /// `UNIT:KIND[:EVERY]`, where UNIT is a unit id or `*`, and KIND is `no-reply`,
    /// `delay=300ms`, `exception=2` or `drop`. Example: `3:no-reply`, `*:drop:50`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "`{text}` is not a fault: write UNIT:KIND[:EVERY], e.g. 3:no-reply, 2:delay=300ms, 4:exception=2, *:drop:50"
            )
        };
        let mut parts = text.split(':');
        let (Some(unit), Some(kind)) = (parts.next(), parts.next()) else {
            return Err(usage());
        };
        let every = match parts.next() {
            Some(n) => n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(usage)?,
            None => 1,
        };
        if parts.next().is_some() {
            return Err(usage());
        }
        let unit = match unit {
            "*" => None,
            u => Some(u.parse::<u8>().map_err(|_| usage())?),
        };
        let kind = match kind.split_once('=') {
            None if kind == "no-reply" => FaultKind::NoReply,
            None if kind == "drop" => FaultKind::Drop,
            Some(("delay", d)) => FaultKind::Delay(crate::config::parse_duration(d)?),
            Some(("exception", c)) => FaultKind::Exception(
                c.parse::<u8>()
                    .ok()
                    .filter(|c| (1..=0x7F).contains(c))
                    .ok_or_else(usage)?,
            ),
            _ => return Err(usage()),
        };
        Ok(Fault { unit, kind, every })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_the_command_line_form() {
        assert_eq!(
            "3:no-reply".parse(),
            Ok(Fault {
                unit: Some(3),
                kind: FaultKind::NoReply,
                every: 1
            })
        );
        assert_eq!(
            "*:delay=300ms:4".parse(),
            Ok(Fault {
                unit: None,
                kind: FaultKind::Delay(Duration::from_millis(300)),
                every: 4
            })
        );
        assert_eq!(
            "2:exception=6".parse::<Fault>().map(|f| f.kind),
            Ok(FaultKind::Exception(6))
        );
        for bad in [
            "3",
            "x:drop",
            "3:explode",
            "3:exception=0",
            "3:drop:0",
            "3:drop:1:2",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_fault_hits_its_unit_on_every_nth_request() {
        let faults = vec![
            Fault {
                unit: Some(2),
                kind: FaultKind::Drop,
                every: 3,
            },
            Fault {
                unit: None,
                kind: FaultKind::Exception(4),
                every: 2,
            },
        ];
        // Unit 2: requests 3 and 6 are dropped; 2 and 4 hit the catch-all exception.
        let unit2: Vec<_> = (1..=6).map(|n| pick(&faults, 2, n).cloned()).collect();
        assert_eq!(
            unit2,
            vec![
                None,
                Some(FaultKind::Exception(4)),
                Some(FaultKind::Drop),
                Some(FaultKind::Exception(4)),
                None,
                Some(FaultKind::Drop),
            ]
        );
        assert_eq!(pick(&faults, 7, 1), None);
    }
}
