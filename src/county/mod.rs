//! The county view: every enterprise's indicators, read from the county's store, summed by
//! sector and for the county, and set against the programme's targets (`shopfloor county
//! report`).
//!
//! The stages follow the data: [`targets`] reads the programme's targets and the register of
//! enterprises, [`store`] reads the agents' `fleet` and `green` day windows with InfluxQL,
//! [`aggregate`] does the arithmetic (pure functions: sums of numerators over sums of
//! denominators, never averaged ratios), and [`render`] writes a table, CSV, JSON or a
//! self-contained HTML page.

pub mod aggregate;
pub mod cli;
mod html;
pub mod ingest;
pub mod labels;
pub mod render;
pub mod store;
pub mod targets;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::model::Sector;
use aggregate::{Period, PeriodError, Report};
use store::{Store, StoreError};
use targets::{Registry, Targets};

/// What a report covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRequest {
    /// First local day, included.
    pub from: Date,
    /// Last local day, included.
    pub to: Date,
    /// Only this sector's enterprises.
    pub sector: Option<Sector>,
    /// Read this county's lines instead of the one named in the targets.
    pub county: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Period(#[from] PeriodError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("unknown time zone `{0}` in the targets")]
    TimeZone(String),
}

/// Reads the period's day windows from the store and builds the report. `now` decides which
/// days have begun: days after today are not counted.
pub async fn report(
    store: &Store,
    targets: &Targets,
    registry: &Registry,
    request: &ReportRequest,
    now: Timestamp,
) -> Result<Report, ReportError> {
    let tz = TimeZone::get(&targets.timezone)
        .map_err(|_| ReportError::TimeZone(targets.timezone.clone()))?;
    let today = now.to_zoned_datetime(tz.clone()).date();
    let period = Period::new(request.from, request.to, today)?;
    let county = request.county.as_deref().unwrap_or(&targets.county);
    let lines = store.read_days(county, &period, &tz).await?;
    let mut targets = targets.clone();
    targets.county = county.to_string();
    let mut report = aggregate::aggregate(
        &targets,
        registry,
        &period,
        request.sector,
        lines.fleet,
        lines.green,
        lines.warnings,
    );
    // Nothing matched the county, sector and period: say what the store does hold, so a
    // typo in a tag or a wrong period shows at once.
    let nothing = !report.enterprises.iter().any(|e| e.reporting) && report.unregistered.is_empty();
    if nothing {
        match store.holds().await {
            Ok(holds) => report.store_holds = Some(holds),
            Err(e) => report.warnings.push(format!(
                "nothing matched, and listing what the store holds failed: {e}"
            )),
        }
    }
    Ok(report)
}
