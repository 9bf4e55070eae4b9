//! Reading the agents' day windows from the county's store with InfluxQL over the v1 `/query`
//! endpoint, which InfluxDB 1.x, the 2.x compatibility API (a DBRP mapping names the bucket as
//! a database) and 3.x all answer.
//!
//! One raw query per measurement, with the tags that identify an enterprise selected beside the
//! fields, so that the arithmetic (and its rules for missing and rewritten days) stays in one
//! place, ours: a year of 600 enterprises is about 220 000 rows each. Letting the store sum instead was measured
//! slower on InfluxDB 1.6 (docs/BENCHMARKS.md). A long period is cut into slices queried at
//! once. Queries are sent with `chunked=true`, which keeps the store from building one huge
//! answer in memory; a server that does not chunk answers with one JSON document, which reads
//! the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;

use super::aggregate::{FleetDay, GreenDay, Period, StoreHolds};
use crate::config::{Secret, SecretError};
use crate::engine::indicators::{Fleet, Green};
use crate::line_protocol::contract::{
    MEASUREMENT_FLEET, MEASUREMENT_GREEN, TAG_COUNTY, TAG_EL_METHOD, TAG_ENTERPRISE, TAG_SECTOR,
    TAG_VA_METHOD, TAG_WINDOW, WINDOW_DAY, fleet, green,
};

/// Where the county's store is and how to log in.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// The database (InfluxDB 1.x and 3.x), or the database name a 2.x DBRP mapping gives the
    /// bucket.
    pub database: String,
    pub retention_policy: Option<String>,
    /// InfluxDB 1.x user, with `password`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// InfluxDB 2.x / 3.x API token, sent as `Authorization: Token …`.
    pub token: Option<Secret>,
    /// For the whole of one query, answer included.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store url `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot reach the store at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the store refused the query ({status}): {message}; check the credentials (--username with --password-env/--password-file, or --token-env/--token-file) and --db"
    )]
    Refused { status: u16, message: String },
    #[error("the store answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error(
        "the store's answer is not InfluxQL JSON ({reason}); is --url an InfluxDB /query endpoint?"
    )]
    Answer { reason: String },
    #[error("the store could not run the query: {0}")]
    Statement(String),
}

/// One series of an InfluxQL answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Series {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub values: Vec<Vec<Cell>>,
}

/// One value of a row: a year of a county is a few million of them, so a cell is kept small
/// instead of a whole JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Number(f64),
    /// A tag value selected as a column.
    Text(Box<str>),
    /// Null or a boolean.
    Other,
}

impl Cell {
    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Number(v) if v.is_finite() => Some(*v),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cell, D::Error> {
        struct CellVisitor;
        impl<'de> serde::de::Visitor<'de> for CellVisitor {
            type Value = Cell;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Cell, E> {
                Ok(Cell::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Cell, E> {
                Ok(Cell::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Cell, E> {
                Ok(Cell::Number(v as f64))
            }
            fn visit_str<E>(self, v: &str) -> Result<Cell, E> {
                Ok(Cell::Text(v.into()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Cell, E> {
                Ok(Cell::Other)
            }
            fn visit_unit<E>(self) -> Result<Cell, E> {
                Ok(Cell::Other)
            }
            fn visit_none<E>(self) -> Result<Cell, E> {
                Ok(Cell::Other)
            }
        }
        d.deserialize_any(CellVisitor)
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

/// What the store holds for a period, as the aggregation takes it.
#[derive(Debug, Default)]
pub struct Lines {
    pub fleet: Vec<FleetDay>,
    pub green: Vec<GreenDay>,
    /// Rows that could not be used, summed up for the report.
    pub warnings: Vec<String>,
}

/// A connection to the county's store.
#[derive(Debug, Clone)]
pub struct Store {
    client: reqwest::Client,
    query_url: Url,
    authorization: Option<HeaderValue>,
}

/// Rows per chunk of a chunked answer.
const CHUNK_ROWS: &str = "10000";

impl Store {
    pub fn new(options: &StoreOptions) -> Result<Store, StoreError> {
        crate::install_crypto_provider();
        let url_err = |reason: String| StoreError::Url {
            url: options.url.clone(),
            reason,
        };
        let mut base = Url::parse(&options.url).map_err(|e| url_err(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(url_err("not an http:// or https:// URL".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut query_url = base.join("query").map_err(|e| url_err(e.to_string()))?;
        {
            let mut q = query_url.query_pairs_mut();
            q.append_pair("db", &options.database);
            if let Some(rp) = &options.retention_policy {
                q.append_pair("rp", rp);
            }
            q.append_pair("epoch", "s")
                .append_pair("chunked", "true")
                .append_pair("chunk_size", CHUNK_ROWS);
        }
        let authorization = match (&options.token, &options.username) {
            (Some(token), _) => Some(format!("Token {}", token.resolve()?)),
            (None, Some(user)) => {
                let password = options
                    .password
                    .as_ref()
                    .map(Secret::resolve)
                    .transpose()?
                    .unwrap_or_default();
                Some(format!(
                    "Basic {}",
                    crate::sink::influx::base64(format!("{user}:{password}").as_bytes())
                ))
            }
            (None, None) => None,
        };
        let authorization = authorization
            .map(|a| {
                let mut v = HeaderValue::from_str(&a).map_err(|_| {
                    url_err("the credentials hold characters a header cannot".into())
                })?;
                v.set_sensitive(true);
                Ok::<_, StoreError>(v)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(StoreError::Client)?;
        Ok(Store {
            client,
            query_url,
            authorization,
        })
    }

    /// Runs one InfluxQL statement and returns its series.
    pub async fn query(&self, influxql: &str) -> Result<Vec<Series>, StoreError> {
        let mut url = self.query_url.clone();
        url.query_pairs_mut().append_pair("q", influxql);
        let mut request = self.client.get(url);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let unreachable = |e: reqwest::Error| StoreError::Unreachable {
            url: self.query_url.origin().ascii_serialization(),
            // The store's address is said once; the whole query URL would bury the reason.
            reason: crate::sink::influx::error_chain(&e.without_url()),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        if !(200..300).contains(&status) {
            let message = answer_error(&body);
            return Err(if matches!(status, 401 | 403) {
                StoreError::Refused { status, message }
            } else {
                StoreError::Status { status, message }
            });
        }
        parse_answer(&body)
    }

    /// The `fleet` and `green` lines of the county's day windows in the period. `tz` is the
    /// county's time zone, whose midnights the agents' day windows start at.
    pub async fn read_days(
        &self,
        county: &str,
        period: &Period,
        tz: &TimeZone,
    ) -> Result<Lines, StoreError> {
        let starts = day_starts(period, tz);
        let days = starts.len().saturating_sub(1);
        if days == 0 {
            return Ok(Lines::default());
        }
        let mut queries = tokio::task::JoinSet::new();
        for (a, b) in slices(days) {
            let filter = format!(
                "WHERE \"{TAG_COUNTY}\" = {} AND \"{TAG_WINDOW}\" = {} AND time >= '{}' AND time < '{}'",
                influxql_string(county),
                influxql_string(WINDOW_DAY),
                starts[a],
                starts[b]
            );
            let fleet = format!(
                "SELECT {}, {} FROM \"{MEASUREMENT_FLEET}\" {filter}",
                columns(FLEET_TAGS),
                columns(FLEET_FIELDS)
            );
            let green = format!(
                "SELECT {}, {} FROM \"{MEASUREMENT_GREEN}\" {filter}",
                columns(GREEN_TAGS),
                columns(GREEN_FIELDS)
            );
            for (is_fleet, q) in [(true, fleet), (false, green)] {
                let store = self.clone();
                queries.spawn(async move { (is_fleet, store.query(&q).await) });
            }
        }
        // Each answer becomes records as it arrives, so that only the answers still being read
        // are held as JSON rows.
        let mut lines = Lines::default();
        let (mut fleet_skipped, mut green_skipped) = (Skipped::default(), Skipped::default());
        while let Some(done) = queries.join_next().await {
            let (is_fleet, series) =
                done.map_err(|e| StoreError::Statement(format!("a query task failed: {e}")))?;
            if is_fleet {
                read_fleet(&series?, &starts, &mut lines.fleet, &mut fleet_skipped);
            } else {
                read_green(&series?, &starts, &mut lines.green, &mut green_skipped);
            }
        }
        fleet_skipped.into_warnings(MEASUREMENT_FLEET, &mut lines.warnings);
        green_skipped.into_warnings(MEASUREMENT_GREEN, &mut lines.warnings);
        Ok(lines)
    }
}

impl Store {
    /// The counties, sectors and enterprises the store's `fleet` and `green` lines carry, for
    /// a report whose filter matched nothing.
    pub async fn holds(&self) -> Result<StoreHolds, StoreError> {
        let mut holds = StoreHolds::default();
        for measurement in [MEASUREMENT_FLEET, MEASUREMENT_GREEN] {
            let q = format!(
                "SHOW TAG VALUES FROM \"{measurement}\" WITH KEY IN (\"{TAG_COUNTY}\", \"{TAG_SECTOR}\", \"{TAG_ENTERPRISE}\")"
            );
            for series in self.query(&q).await? {
                let at = |name: &str| series.columns.iter().position(|c| c == name);
                let (Some(k), Some(v)) = (at("key"), at("value")) else {
                    continue;
                };
                for row in &series.values {
                    let (Some(Cell::Text(key)), Some(Cell::Text(value))) = (row.get(k), row.get(v))
                    else {
                        continue;
                    };
                    let list = match &**key {
                        TAG_COUNTY => &mut holds.counties,
                        TAG_SECTOR => &mut holds.sectors,
                        TAG_ENTERPRISE => &mut holds.enterprises,
                        _ => continue,
                    };
                    if !list.iter().any(|x| **x == **value) {
                        list.push(value.to_string());
                    }
                }
            }
        }
        holds.counties.sort();
        holds.sectors.sort();
        holds.enterprises.sort();
        Ok(holds)
    }
}

/// A long period is read in slices of about this many days, queried at once: InfluxDB 1.x
/// runs a raw query on about one core, so slices let a store with several cores answer a
/// year's report in parallel.
const DAYS_PER_QUERY: usize = 31;

/// At most this many slices (so twice as many queries, `fleet` and `green`) at once.
const MAX_SLICES: usize = 6;

/// The day ranges `[a, b)` a period of `days` days is read in: contiguous, of nearly equal
/// length, together covering every day once.
fn slices(days: usize) -> Vec<(usize, usize)> {
    let n = days.div_ceil(DAYS_PER_QUERY).clamp(1, MAX_SLICES);
    let per = days.div_ceil(n).max(1);
    (0..n)
        .map(|i| (i * per, ((i + 1) * per).min(days)))
        .filter(|(a, b)| a < b)
        .collect()
}

const FLEET_FIELDS: &[&str] = &[
    fleet::MACHINES_TOTAL,
    fleet::MACHINES_DIGITAL,
    fleet::MACHINES_CNC,
    fleet::MACHINES_NETWORKED,
    fleet::MACHINES_DIGITAL_NETWORKED,
    fleet::CNC_RUNNING_S,
    fleet::CNC_PLANNED_S,
    // Optional (written only by an agent whose register holds a robot): after the
    // [`FLEET_REQUIRED`] fields every line carries.
    fleet::MACHINES_ROBOT,
];

/// The leading fields of [`FLEET_FIELDS`] that every `fleet` line carries.
const FLEET_REQUIRED: usize = 7;

/// The tags that identify an enterprise's line, selected beside the fields: InfluxDB 1.6
/// answers that with about a quarter less work than the same rows grouped by the tags
/// (docs/BENCHMARKS.md). An answer grouped by them reads the same.
const FLEET_TAGS: &[&str] = &[TAG_ENTERPRISE, TAG_SECTOR];
const GREEN_TAGS: &[&str] = &[TAG_ENTERPRISE, TAG_SECTOR, TAG_VA_METHOD, TAG_EL_METHOD];

const GREEN_FIELDS: &[&str] = &[
    green::ENERGY_TCE,
    green::ELECTRICITY_KWH,
    green::WATER_T,
    green::VALUE_ADDED_10K_CNY,
    green::WASTEWATER_T,
];

fn columns(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An InfluxQL string literal.
pub fn influxql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The start of every counted day, and the end of the last one.
pub fn day_starts(period: &Period, tz: &TimeZone) -> Vec<Timestamp> {
    let mut starts: Vec<Timestamp> = period
        .days
        .iter()
        .filter_map(|d| d.to_zoned_datetime(tz.clone()).ok().map(|z| z.timestamp()))
        .collect();
    if let Some(last) = period.days.last()
        && let Some(next) = last
            .tomorrow()
            .ok()
            .and_then(|d| d.to_zoned_datetime(tz.clone()).ok())
    {
        starts.push(next.timestamp());
    }
    starts
}

/// The day a window starting at `t` belongs to: the counted day containing it.
fn day_of(starts: &[Timestamp], t: Timestamp) -> Option<usize> {
    let i = starts.partition_point(|s| *s <= t);
    (i > 0 && i < starts.len()).then(|| i - 1)
}

/// The error text of an answer that failed, from its JSON or its first bytes.
fn answer_error(body: &[u8]) -> String {
    serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.error)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars()
                .take(500)
                .collect::<String>()
                .trim()
                .to_string()
        })
}

/// All series of an answer: one JSON document, or one per chunk.
fn parse_answer(body: &[u8]) -> Result<Vec<Series>, StoreError> {
    let mut series = Vec::new();
    for answer in serde_json::Deserializer::from_slice(body).into_iter::<Answer>() {
        let answer = answer.map_err(|e| StoreError::Answer {
            reason: e.to_string(),
        })?;
        if let Some(e) = answer.error {
            return Err(StoreError::Statement(e));
        }
        for result in answer.results {
            if let Some(e) = result.error {
                return Err(StoreError::Statement(e));
            }
            series.extend(result.series);
        }
    }
    Ok(series)
}

/// Where a row's tag value is: in a column (tags selected beside the fields) or, for an
/// answer grouped by tags, in the series' tags.
enum TagAt<'a> {
    Column(usize),
    Series(&'a str),
}

/// Rows of one series with the positions of the wanted fields and tags.
struct Rows<'a> {
    series: &'a Series,
    time: Option<usize>,
    fields: Vec<Option<usize>>,
    tags: Vec<TagAt<'a>>,
}

/// The wanted tags (empty where absent) and fields (`None` where null or absent) of one row.
struct Row<'a> {
    tags: Vec<&'a str>,
    fields: Vec<Option<f64>>,
}

impl<'a> Rows<'a> {
    fn new(series: &'a Series, fields: &[&str], tags: &[&str]) -> Rows<'a> {
        let find = |name: &str| series.columns.iter().position(|c| c == name);
        Rows {
            series,
            time: find("time"),
            fields: fields.iter().map(|f| find(f)).collect(),
            tags: tags
                .iter()
                .map(|t| match find(t) {
                    Some(i) => TagAt::Column(i),
                    None => TagAt::Series(series.tags.get(*t).map_or("", String::as_str)),
                })
                .collect(),
        }
    }

    /// Each row's timestamp and its wanted tags and fields.
    fn each(&self) -> impl Iterator<Item = (Option<Timestamp>, Row<'a>)> + '_ {
        self.series.values.iter().map(|row| {
            let time = self
                .time
                .and_then(|i| row.get(i))
                .and_then(Cell::number)
                .and_then(|s| Timestamp::from_second(s as i64).ok());
            let tags = self
                .tags
                .iter()
                .map(|t| match t {
                    TagAt::Column(i) => row.get(*i).and_then(Cell::text).unwrap_or(""),
                    TagAt::Series(v) => v,
                })
                .collect();
            let fields = self
                .fields
                .iter()
                .map(|i| i.and_then(|i| row.get(i)).and_then(Cell::number))
                .collect();
            (time, Row { tags, fields })
        })
    }
}

/// Counts rows left out, by reason, for one warning each.
#[derive(Default)]
struct Skipped(BTreeMap<String, usize>);

impl Skipped {
    fn add(&mut self, reason: String) {
        *self.0.entry(reason).or_default() += 1;
    }

    fn into_warnings(self, measurement: &str, out: &mut Vec<String>) {
        for (reason, n) in self.0 {
            out.push(format!("{n} {measurement} line(s) left out: {reason}"));
        }
    }
}

fn count(v: f64) -> Option<u64> {
    (v >= 0.0).then(|| v.round() as u64)
}

/// Appends every usable row of `series` as made by `make` (given the row's `tags` and
/// `fields` and its day); a row outside the period, or one `make` refuses with a reason, is
/// counted by reason.
fn read<T>(
    series: &[Series],
    (fields, tags): (&[&str], &[&str]),
    starts: &[Timestamp],
    out: &mut Vec<T>,
    skipped: &mut Skipped,
    make: impl Fn(&Row<'_>, usize) -> Result<T, String>,
) {
    for s in series {
        let rows = Rows::new(s, fields, tags);
        for (time, row) in rows.each() {
            let made = match time.and_then(|t| day_of(starts, t)) {
                Some(day) => make(&row, day),
                None => Err("timestamp outside the period".into()),
            };
            match made {
                Ok(v) => out.push(v),
                Err(reason) => skipped.add(reason),
            }
        }
    }
}

fn read_fleet(
    series: &[Series],
    starts: &[Timestamp],
    out: &mut Vec<FleetDay>,
    skipped: &mut Skipped,
) {
    read(
        series,
        (FLEET_FIELDS, FLEET_TAGS),
        starts,
        out,
        skipped,
        |row, day| {
            let (enterprise, f) = (row.tags[0], &row.fields);
            let missing: Vec<&str> = FLEET_FIELDS[..FLEET_REQUIRED]
                .iter()
                .zip(f)
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| *n)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "enterprise {enterprise} lacks {} (written by an older agent?)",
                    missing.join(", ")
                ));
            }
            let v = |i: usize| f[i].unwrap_or(0.0);
            let (Some(total), Some(digital), Some(cnc), Some(networked), Some(dn)) = (
                count(v(0)),
                count(v(1)),
                count(v(2)),
                count(v(3)),
                count(v(4)),
            ) else {
                return Err(format!(
                    "enterprise {enterprise} has a negative machine count"
                ));
            };
            let robots = match f.get(FLEET_REQUIRED).copied().flatten() {
                None => None,
                Some(r) => Some(count(r).ok_or_else(|| {
                    format!("enterprise {enterprise} has a negative robot count")
                })?),
            };
            Ok(FleetDay {
                enterprise: enterprise.to_string(),
                sector_tag: row.tags[1].to_string(),
                day,
                fleet: Fleet {
                    machines_total: total,
                    machines_digital: digital,
                    machines_cnc: cnc,
                    machines_networked: networked,
                    machines_digital_networked: dn,
                    cnc_running_s: v(5),
                    cnc_planned_s: v(6),
                },
                robots,
            })
        },
    );
}

fn read_green(
    series: &[Series],
    starts: &[Timestamp],
    out: &mut Vec<GreenDay>,
    skipped: &mut Skipped,
) {
    read(
        series,
        (GREEN_FIELDS, GREEN_TAGS),
        starts,
        out,
        skipped,
        |row, day| {
            let f = &row.fields;
            // A field the agent did not write was not measured (no meter of that carrier, no
            // value-added source): it counts in no sum, and is never read as 0.
            let energy_known = f[0].is_some() && f[1].is_some();
            if f[0].is_none() && f[2].is_none() && f[3].is_none() {
                return Err(format!(
                    "enterprise {} has a green line without energy, water or value added",
                    row.tags[0]
                ));
            }
            Ok(GreenDay {
                enterprise: row.tags[0].to_string(),
                sector_tag: row.tags[1].to_string(),
                day,
                green: Green {
                    energy_tce: f[0].unwrap_or(0.0),
                    electricity_kwh: f[1].unwrap_or(0.0),
                    water_t: f[2].unwrap_or(0.0),
                    value_added_10k_cny: f[3].unwrap_or(0.0),
                },
                value_added_known: f[3].is_some(),
                energy_known,
                water_known: f[2].is_some(),
                wastewater_t: f.get(4).copied().flatten(),
                va_method: row.tags[2].to_string(),
                el_method: row.tags[3].to_string(),
            })
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn days_start_at_the_county_midnight() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let p = Period::new(date(2026, 11, 1), date(2026, 11, 2), date(2026, 12, 1)).unwrap();
        let starts = day_starts(&p, &tz);
        let s: Vec<String> = starts.iter().map(|t| t.to_string()).collect();
        // Shanghai is UTC+8: local midnight is 16:00 UTC the day before.
        assert_eq!(
            s,
            vec![
                "2026-10-31T16:00:00Z",
                "2026-11-01T16:00:00Z",
                "2026-11-02T16:00:00Z"
            ]
        );
        assert_eq!(day_of(&starts, starts[0]), Some(0));
        assert_eq!(day_of(&starts, starts[1]), Some(1));
        assert_eq!(day_of(&starts, starts[2]), None);
        assert_eq!(
            day_of(&starts, starts[0] - jiff::SignedDuration::from_secs(1)),
            None
        );
    }

    #[test]
    fn long_periods_are_read_in_contiguous_slices() {
        assert_eq!(slices(30), vec![(0, 30)]);
        // 62 days: two slices of 31.
        assert_eq!(slices(62), vec![(0, 31), (31, 62)]);
        // A year: at most six slices, of ⌈365 / 6⌉ = 61 days, the last 60.
        let year = slices(365);
        assert_eq!(year.len(), 6);
        assert_eq!(year[0], (0, 61));
        assert_eq!(year[5], (305, 365));
        assert!(year.windows(2).all(|w| w[0].1 == w[1].0));
    }

    #[test]
    fn chunked_and_whole_answers_read_alike() {
        let chunk = |v: i64| {
            format!(
                r#"{{"results":[{{"statement_id":0,"series":[{{"name":"fleet","tags":{{"enterprise":"e1","sector":"doors"}},"columns":["time","machines_total"],"values":[[{v},10]]}}],"partial":true}}]}}"#
            )
        };
        let body = format!("{}\n{}\n", chunk(1), chunk(2));
        let series = parse_answer(body.as_bytes()).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[1].values[0][0], Cell::Number(2.0));
        let error =
            parse_answer(br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#)
                .unwrap_err();
        assert!(error.to_string().contains("database not found"), "{error}");
        assert!(matches!(
            parse_answer(b"<html>"),
            Err(StoreError::Answer { .. })
        ));
    }

    #[test]
    fn tags_read_from_columns_or_from_the_series() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let p = Period::new(date(2026, 11, 1), date(2026, 11, 1), date(2026, 12, 1)).unwrap();
        let starts = day_starts(&p, &tz);
        let t = starts[0].as_second();
        let series: Vec<Series> = serde_json::from_value(serde_json::json!([
            {
                "name": "green",
                "columns": ["time", "enterprise", "sector", "va_method", "el_method",
                            "energy_tce", "electricity_kwh", "water_t", "value_added_10k_cny"],
                "values": [[t, "e1", "cups", "parts", "calorific", 1.5, 12000.0, 30.0, null]]
            },
            {
                "name": "green",
                "tags": {"enterprise": "e2", "sector": "doors", "va_method": "declared", "el_method": "equivalent"},
                "columns": ["time", "energy_tce", "electricity_kwh", "water_t", "value_added_10k_cny"],
                "values": [[t, 0.5, 1000.0, 3.0, 2.0]]
            }
        ]))
        .unwrap();
        let mut lines = Lines::default();
        read_green(&series, &starts, &mut lines.green, &mut Skipped::default());
        let got: Vec<(&str, &str, &str, bool)> = lines
            .green
            .iter()
            .map(|g| {
                (
                    g.enterprise.as_str(),
                    g.sector_tag.as_str(),
                    g.va_method.as_str(),
                    g.value_added_known,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("e1", "cups", "parts", false),
                ("e2", "doors", "declared", true)
            ]
        );
    }

    #[test]
    fn unusable_rows_are_counted_not_fatal() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let p = Period::new(date(2026, 11, 1), date(2026, 11, 1), date(2026, 12, 1)).unwrap();
        let starts = day_starts(&p, &tz);
        let t = starts[0].as_second();
        let series: Vec<Series> = serde_json::from_value(serde_json::json!([{
            "name": "fleet",
            "tags": {"enterprise": "e1", "sector": "doors"},
            "columns": ["time", "machines_total", "machines_digital", "machines_cnc",
                        "machines_networked", "machines_digital_networked",
                        "cnc_running_s", "cnc_planned_s"],
            "values": [
                [t, 10, 6, 6, 5, 5, 3600.0, 7200.0],
                [t, 10, null, 6, 5, 5, 3600.0, 7200.0],
                [t - 86400, 10, 6, 6, 5, 5, 3600.0, 7200.0]
            ]
        }]))
        .unwrap();
        let mut lines = Lines::default();
        let mut skipped = Skipped::default();
        read_fleet(&series, &starts, &mut lines.fleet, &mut skipped);
        skipped.into_warnings("fleet", &mut lines.warnings);
        assert_eq!(lines.fleet.len(), 1);
        assert_eq!(lines.fleet[0].fleet.machines_networked, 5);
        assert_eq!(lines.warnings.len(), 2, "{:?}", lines.warnings);
    }
}
