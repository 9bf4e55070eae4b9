//! The engine's accumulators on disk, so a restart continues its windows.
//!
//! Saved as JSON (a person on site can read it) by writing a temporary file, syncing it and
//! renaming it over the old one: a crash at any moment leaves either the old state or the new,
//! never half of one. The time between the last save and the restart is accounted as offline,
//! because nobody watched the machines meanwhile.

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::energy::{Counter, EnergyTotals};
use super::timemodel::TimeTotals;
use super::windows::Window;
use crate::model::State;

/// Bumped when the layout changes; a file of another version is set aside, not misread.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub saved_at: Option<Timestamp>,
    pub machines: Vec<SavedMachine>,
    pub meters: Vec<SavedMeter>,
    /// Windows whose green alert has been raised.
    pub alerted: Vec<Window>,
    /// The outlets' discharge per day and the open alerts (absent in files of older agents).
    #[serde(default)]
    pub outlets: SavedOutlets,
}

/// The outlets' state: discharge totals by day and outlet, and the alerts still open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedOutlets {
    pub days: Vec<SavedDay>,
    pub open_alerts: Vec<SavedAlert>,
}

/// One outlet's discharge in one local day, m³, by basis and data time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedDay {
    pub date: jiff::civil::Date,
    pub outlet: String,
    pub daily: Option<f64>,
    pub hourly: Vec<(Timestamp, f64)>,
    pub minute: Vec<(Timestamp, f64)>,
}

/// An open alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAlert {
    pub kind: String,
    pub subject: String,
    pub since: Timestamp,
    pub value: f64,
    pub limit: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMachine {
    pub id: String,
    pub state: State,
    pub since: Timestamp,
    pub accounted_to: Timestamp,
    /// The last valid data, so a reload keeps the offline deadline.
    #[serde(default)]
    pub last_data: Option<Timestamp>,
    pub windows: Vec<(Window, TimeTotals)>,
    pub parts: Counter,
    pub good: Counter,
    pub reject: Counter,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMeter {
    pub id: String,
    pub counter: Counter,
    pub last_rate: Option<(Timestamp, f64)>,
    pub windows: Vec<(Window, EnergyTotals)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot write the engine state {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read the engine state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the engine state {path} is not readable JSON ({source}); it was moved aside")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
}

/// Writes the state atomically.
pub fn save(path: &Path, state: &SavedState) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    // Written as it is serialised, not built in memory first: with 2,000 machines the JSON is
    // some megabytes, which every save would add to the agent's peak.
    let written = std::fs::File::create(&tmp).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut out, state).map_err(std::io::Error::other)?;
        out.flush()?;
        out.get_ref().sync_all()
    });
    if let Err(e) = written {
        // On a full disk the half-written copy would hold the little room there is; the
        // previous state file is untouched.
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable only once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads the saved state, `None` when there is none. A file of another version is renamed to
/// `*.json.v<version>` and a file that cannot be parsed to `*.json.corrupt` (and reported), so
/// neither is overwritten by the next save.
pub fn load(path: &Path) -> Result<Option<SavedState>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    match serde_json::from_slice::<SavedState>(&bytes) {
        Ok(state) if state.version == VERSION => Ok(Some(state)),
        Ok(state) => {
            // Kept beside, not overwritten by the next save, for a downgrade or a person.
            let aside = path.with_extension(format!("json.v{}", state.version));
            let _ = std::fs::rename(path, aside);
            Ok(None)
        }
        Err(source) => {
            let _ = std::fs::rename(path, path.with_extension("json.corrupt"));
            Err(PersistError::Corrupt {
                path: path.display().to_string(),
                source,
            })
        }
    }
}
