//! Dial-in devices: 4G and Ethernet DTUs and serial servers in client mode that connect to the
//! agent, register, keep the link alive with heartbeats, and pass Modbus frames to the RS-485
//! line behind them.
//!
//! The listener ([`listen`]) accepts connections, treats every peer as hostile until its first
//! bytes match a configured DTU's registration, and hands a registered connection to that
//! DTU's task ([`dtu`]). One task per DTU owns its connection and polls the devices behind it,
//! one request at a time, with the DTU's pacing; a DTU that connects again replaces its old
//! connection at once. The stream is taken apart by the pure [`stream::Splitter`]:
//! registration, heartbeats and answers, however the DTU glues them. Register maps, profiles,
//! planning and decoding are the Modbus source's (`source::modbus`), and so is device health.
//!
//! The agent never writes to a machine: [`stream::request`] builds read requests (function
//! codes 1–4) and nothing else, and it is the only thing written to a DTU.

pub mod commission;
pub mod config;
pub mod dtu;
pub mod listen;
pub mod stream;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// Unknown DTUs remembered for `/api/health`, the newest first.
pub const UNKNOWN_KEPT: usize = 32;

/// A connection whose first bytes matched no configured DTU: what the installer copies into
/// the config.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownDtu {
    pub listener: String,
    pub peer: String,
    /// The first bytes it sent (at most [`listen::SHOWN_BYTES`]), as hex pairs.
    pub first_bytes_hex: String,
    /// The same as text, `.` for what is not printable.
    pub first_bytes_ascii: String,
    /// Why it was closed: `unknown_registration`, `registration_timeout`, `silent`.
    pub reason: &'static str,
    pub last_seen: Timestamp,
    /// Connections with these first bytes since the agent started.
    pub times: u64,
}

/// The unknown DTUs the listeners met, shared with the board; bounded to [`UNKNOWN_KEPT`]
/// distinct first-byte patterns.
#[derive(Debug, Clone, Default)]
pub struct UnknownDtus(Arc<Mutex<VecDeque<UnknownDtu>>>);

impl UnknownDtus {
    /// Notes an unknown connection; the same listener and bytes count up one entry.
    pub fn note(&self, mut seen: UnknownDtu) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = list
            .iter()
            .position(|u| u.listener == seen.listener && u.first_bytes_hex == seen.first_bytes_hex)
            && let Some(old) = list.remove(i)
        {
            seen.times = old.times.saturating_add(1);
        }
        list.push_front(seen);
        list.truncate(UNKNOWN_KEPT);
    }

    /// The unknown DTUs, newest first.
    pub fn list(&self) -> Vec<UnknownDtu> {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().cloned().collect()
    }
}

/// The counter of dial-in connections refused or closed before registering, by reason.
pub const REFUSED: &str = "shopfloor_dial_in_refused_total";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_dtus_are_counted_by_their_bytes_and_bounded() {
        let unknown = UnknownDtus::default();
        let seen = |hex: &str| UnknownDtu {
            listener: "l".into(),
            peer: "10.0.0.1:5000".into(),
            first_bytes_hex: hex.into(),
            first_bytes_ascii: String::new(),
            reason: "unknown_registration",
            last_seen: Timestamp::UNIX_EPOCH,
            times: 1,
        };
        unknown.note(seen("31"));
        unknown.note(seen("32"));
        unknown.note(seen("31"));
        let list = unknown.list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].first_bytes_hex.as_str(), list[0].times), ("31", 2));
        for n in 0..100 {
            unknown.note(seen(&format!("{n:02x}ff")));
        }
        assert_eq!(unknown.list().len(), UNKNOWN_KEPT);
    }
}
