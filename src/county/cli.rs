//! `shopfloor county …`: the county's commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::civil::Date;

use super::ingest::{self, IngestConfig};
use super::labels::Lang;
use super::render::{self, Format};
use super::store::{Store, StoreOptions};
use super::targets::{Registry, Targets};
use super::{ReportRequest, report};
use crate::config::Secret;
use crate::model::Sector;
use crate::shutdown::Shutdown;

#[derive(Debug, clap::Subcommand)]
pub enum CountyCommand {
    /// Every enterprise's, sector's and the county's indicators over a period, against the
    /// programme's targets, read from the county's store.
    Report(Box<ReportArgs>),
    /// Check the targets and the register of enterprises, reporting every mistake with its
    /// line and column.
    Check(Files),
    /// Subscribe to every enterprise's uplink on the county's MQTT broker and write the
    /// indicators into the county's store. SIGTERM or Ctrl-C stops it.
    Ingest(IngestArgs),
}

impl CountyCommand {
    /// The command prints its result and exits (not the long-running ingest).
    pub fn prints_and_exits(&self) -> bool {
        !matches!(self, CountyCommand::Ingest(_))
    }
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The ingest's config (see config/county-ingest.toml).
    #[arg(short, long)]
    pub config: PathBuf,
    /// Only check the config, reporting every problem with its line and column.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, clap::Args)]
pub struct Files {
    /// The programme's targets.
    #[arg(long, default_value = "config/targets.toml")]
    pub targets: PathBuf,
    /// The register of the enterprises in the programme.
    #[arg(long, default_value = "config/enterprises.toml")]
    pub enterprises: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub files: Files,
    /// First day of the period (local date, e.g. 2026-11-01).
    #[arg(long, value_parser = parse_date)]
    pub from: Date,
    /// Last day of the period, included. Days after today are not counted.
    #[arg(long, value_parser = parse_date)]
    pub to: Date,
    /// Only this sector: doors, cups, cookware, power_tools, leisure, castings or other.
    #[arg(long, value_parser = parse_sector)]
    pub sector: Option<Sector>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Language of the HTML report.
    #[arg(long, value_enum, default_value_t = Lang::Zh)]
    pub lang: Lang,
    /// Write the report here instead of to standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Read this county's lines instead of the `county` in the targets file.
    #[arg(long)]
    pub county: Option<String>,
    /// The store's base URL: InfluxDB 1.x, 2.x (compatibility API) or 3.x.
    #[arg(long, default_value = "http://127.0.0.1:8086")]
    pub url: String,
    /// Database (1.x, 3.x), or the database a 2.x DBRP mapping gives the bucket.
    #[arg(long)]
    pub db: String,
    /// Retention policy (default: the database's default).
    #[arg(long)]
    pub rp: Option<String>,
    /// InfluxDB 1.x user; the password comes from --password-env or --password-file.
    #[arg(long)]
    pub username: Option<String>,
    /// Environment variable holding the password.
    #[arg(long, requires = "username", conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// File holding the password (a trailing newline is ignored).
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding an InfluxDB 2.x / 3.x token.
    #[arg(long, conflicts_with_all = ["username", "token_file"])]
    pub token_env: Option<String>,
    /// File holding an InfluxDB 2.x / 3.x token.
    #[arg(long, conflicts_with = "username")]
    pub token_file: Option<PathBuf>,
    /// How long one query may take, answer included.
    #[arg(long, default_value = "120s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

fn parse_date(s: &str) -> Result<Date, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not a date: write it as 2026-11-01"))
}

fn parse_sector(s: &str) -> Result<Sector, String> {
    Sector::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Sector::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown sector `{s}`: one of {}", all.join(", "))
    })
}

fn secret(env: &Option<String>, file: &Option<PathBuf>) -> Option<Secret> {
    match (env, file) {
        (Some(name), _) => Some(Secret::Env(name.clone())),
        (None, Some(path)) => Some(Secret::File(path.clone())),
        (None, None) => None,
    }
}

fn load(files: &Files) -> Result<(Targets, Registry)> {
    // Both files are checked before either error is reported, so one run shows every mistake.
    let targets = Targets::load(&files.targets);
    let registry = Registry::load(&files.enterprises);
    match (targets, registry) {
        (Ok(t), Ok(r)) => Ok((t, r)),
        (Err(a), Err(b)) => anyhow::bail!("{a}\n{b}"),
        (Err(e), _) | (_, Err(e)) => anyhow::bail!("{e}"),
    }
}

/// Runs a county command; `shutdown` gives the signal that stops a long-running one.
pub async fn run(command: CountyCommand, shutdown: impl FnOnce() -> Shutdown) -> Result<()> {
    match command {
        CountyCommand::Check(files) => check(&files),
        CountyCommand::Report(args) => run_report(*args).await,
        CountyCommand::Ingest(args) => run_ingest(&args, shutdown).await,
    }
}

async fn run_ingest(args: &IngestArgs, shutdown: impl FnOnce() -> Shutdown) -> Result<()> {
    let config = IngestConfig::load(&args.config).map_err(|d| anyhow::anyhow!("{d}"))?;
    if args.check {
        println!(
            "{}: ok: subscribes to {} on {}, {} output(s)",
            args.config.display(),
            config.filter(),
            config.broker.address,
            config.influx.len() + config.file.len()
        );
        return Ok(());
    }
    let shutdown = shutdown();
    let running = ingest::start(&config, shutdown)
        .await
        .context("cannot start the county ingest")?;
    running.finished().await;
    Ok(())
}

fn check(files: &Files) -> Result<()> {
    let (targets, registry) = load(files)?;
    let sector_specific: usize = targets.sectors.values().map(|t| t.len()).sum();
    println!(
        "{}: ok: county {}, {} programme-wide targets, {} sector targets",
        files.targets.display(),
        targets.county,
        targets.programme.len(),
        sector_specific
    );
    let mut per_sector = Vec::new();
    for sector in Sector::ALL {
        let n = registry
            .enterprises
            .iter()
            .filter(|e| e.sector == sector)
            .count();
        per_sector.push(format!("{} {n}", sector.as_str()));
    }
    println!(
        "{}: ok: {} enterprises ({})",
        files.enterprises.display(),
        registry.enterprises.len(),
        per_sector.join(", ")
    );
    Ok(())
}

async fn run_report(args: ReportArgs) -> Result<()> {
    let (targets, registry) = load(&args.files)?;
    let store = Store::new(&StoreOptions {
        url: args.url.clone(),
        database: args.db.clone(),
        retention_policy: args.rp.clone(),
        username: args.username.clone(),
        password: secret(&args.password_env, &args.password_file),
        token: secret(&args.token_env, &args.token_file),
        timeout: args.timeout,
    })?;
    let request = ReportRequest {
        from: args.from,
        to: args.to,
        sector: args.sector,
        county: args.county.clone(),
    };
    let report = report(
        &store,
        &targets,
        &registry,
        &request,
        jiff::Timestamp::now(),
    )
    .await?;
    let text = render::render(&report, args.format, args.lang);
    if args.format != Format::Table {
        for warning in &report.warnings {
            eprintln!("warning: {warning}");
        }
    }
    match &args.output {
        Some(path) => write(path, &text)?,
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write the report to standard output")?;
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
