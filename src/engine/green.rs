//! Value added (工业增加值) for the green figures: good parts × value added per part, gross
//! output × the value-added rate, or a figure declared for a period.
//!
//! Declared figures come per month or per day. A day without a figure of its own gets its
//! month's figure spread evenly over the month's days; a month without a figure of its own
//! gets the sum of its declared days.

use std::path::Path;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::config::{Declared, Period, parse_period};
use super::windows::{Window, WindowKind};

/// Declared figures, from the config and the declared file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declarations {
    entries: Vec<(Period, f64)>,
}

/// Why the declared file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DeclaredError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclaredFile {
    #[serde(default)]
    declared: Vec<Declared>,
}

impl Declarations {
    pub fn new(declared: &[Declared]) -> Self {
        Declarations {
            entries: declared
                .iter()
                .filter_map(|d| Some((parse_period(&d.period)?, d.value_10k_cny)))
                .collect(),
        }
    }

    /// Reads a file of `[[declared]]` entries and adds them after the config's own (a period
    /// declared in both takes the file's figure, the later word).
    pub fn with_file(mut self, path: &Path) -> Result<Self, DeclaredError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeclaredError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let file: DeclaredFile = toml::from_str(&text).map_err(|e| DeclaredError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        for d in &file.declared {
            let period = parse_period(&d.period).ok_or_else(|| DeclaredError::Parse {
                path: path.display().to_string(),
                message: format!(
                    "period `{}` is neither \"YYYY-MM\" nor \"YYYY-MM-DD\"",
                    d.period
                ),
            })?;
            self.entries.retain(|(p, _)| *p != period);
            self.entries.push((period, d.value_10k_cny));
        }
        Ok(self)
    }

    /// The declared value added for a day or month window, in 10k CNY.
    pub fn value_for(&self, window: &Window, tz: &TimeZone) -> Option<f64> {
        let date = window.start.to_zoned_datetime(tz.clone()).date();
        let month_of = |d: Date| Period::Month {
            year: d.year(),
            month: d.month(),
        };
        let find = |p: Period| {
            self.entries
                .iter()
                .rev()
                .find(|(q, _)| *q == p)
                .map(|(_, v)| *v)
        };
        match window.kind {
            WindowKind::Day => find(Period::Day(date))
                .or_else(|| find(month_of(date)).map(|v| v / f64::from(date.days_in_month()))),
            WindowKind::Month => find(month_of(date)).or_else(|| {
                let days: Vec<f64> = self
                    .entries
                    .iter()
                    .filter_map(|(p, v)| match p {
                        Period::Day(d) if month_of(*d) == month_of(date) => Some(*v),
                        _ => None,
                    })
                    .collect();
                (!days.is_empty()).then(|| days.iter().sum())
            }),
            WindowKind::Hour | WindowKind::Shift => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn window(kind: WindowKind, start: &str) -> Window {
        let start: Timestamp = start.parse().unwrap();
        Window {
            kind,
            start,
            end: start,
            shift: None,
        }
    }

    #[test]
    fn periods_are_months_or_days() {
        assert_eq!(
            parse_period("2026-11"),
            Some(Period::Month {
                year: 2026,
                month: 11
            })
        );
        assert_eq!(
            parse_period("2026-11-30"),
            Some(Period::Day(jiff::civil::date(2026, 11, 30)))
        );
        assert_eq!(parse_period("2026-13"), None);
        assert_eq!(parse_period("November"), None);
    }

    #[test]
    fn a_month_figure_is_spread_over_its_days_and_days_add_up_to_a_month() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let d = Declarations::new(&[
            Declared {
                period: "2026-11".into(),
                value_10k_cny: 900.0,
            },
            Declared {
                period: "2026-12-01".into(),
                value_10k_cny: 31.0,
            },
            Declared {
                period: "2026-12-02".into(),
                value_10k_cny: 29.0,
            },
        ]);
        // 2026-11-30 local day starts 2026-11-29T16:00Z; November: 900 / 30 days = 30.
        let nov30 = window(WindowKind::Day, "2026-11-29T16:00:00Z");
        assert_eq!(d.value_for(&nov30, &tz), Some(30.0));
        let nov = window(WindowKind::Month, "2026-10-31T16:00:00Z");
        assert_eq!(d.value_for(&nov, &tz), Some(900.0));
        // December has only days: 31 + 29 = 60.
        let dec = window(WindowKind::Month, "2026-11-30T16:00:00Z");
        assert_eq!(d.value_for(&dec, &tz), Some(60.0));
        // 2026-12-03 has no figure and December has no month figure.
        let dec3 = window(WindowKind::Day, "2026-12-02T16:00:00Z");
        assert_eq!(d.value_for(&dec3, &tz), None);
    }

    #[test]
    fn the_declared_file_overrides_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("va.toml");
        std::fs::write(
            &path,
            "[[declared]]\nperiod = \"2026-11\"\nvalue_10k_cny = 600.0\n",
        )
        .unwrap();
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let d = Declarations::new(&[Declared {
            period: "2026-11".into(),
            value_10k_cny: 900.0,
        }])
        .with_file(&path)
        .unwrap();
        let nov = window(WindowKind::Month, "2026-10-31T16:00:00Z");
        assert_eq!(d.value_for(&nov, &tz), Some(600.0));
        std::fs::write(
            &path,
            "[[declared]]\nperiod = \"soon\"\nvalue_10k_cny = 1.0\n",
        )
        .unwrap();
        assert!(Declarations::default().with_file(&path).is_err());
    }
}
