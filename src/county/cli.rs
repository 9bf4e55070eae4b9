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
    /// Write a commented targets.toml (Wuyi's programme filled in) and enterprises.toml to
    /// start from.
    Init(InitArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The directory to write targets.toml and enterprises.toml into (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
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

/// Where the county's two files are looked for, in this order: the flag; the ingest config's
/// `[ingest] targets` / `enterprises` (`--ingest-config`, or [`SYSTEM_INGEST_CONFIG`] when it
/// exists); `config/targets.toml` / `config/enterprises.toml` under the working directory;
/// `/etc/shopfloor/`. Every command says which file it read.
#[derive(Debug, clap::Args)]
pub struct Files {
    /// The programme's targets (see `shopfloor county init`).
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// The register of the enterprises in the programme.
    #[arg(long)]
    pub enterprises: Option<PathBuf>,
    /// The county ingest's config, whose `[ingest] targets` and `enterprises` name the files.
    #[arg(long)]
    pub ingest_config: Option<PathBuf>,
}

/// The ingest config an installed county server keeps (deploy/county).
pub const SYSTEM_INGEST_CONFIG: &str = "/etc/shopfloor/county-ingest.toml";

/// The two files found, each with how it was found.
pub struct Found {
    pub targets: (PathBuf, String),
    pub enterprises: (PathBuf, String),
}

impl Files {
    pub fn find(&self) -> Result<Found> {
        let ingest_path = self
            .ingest_config
            .clone()
            .or_else(|| Some(PathBuf::from(SYSTEM_INGEST_CONFIG)).filter(|p| p.exists()));
        let ingest = match &ingest_path {
            Some(p) if self.targets.is_none() || self.enterprises.is_none() => {
                // Only the two paths are wanted: the broker's password need not be at hand.
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                let table: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("{} is not valid TOML", p.display()))?;
                let path = |key: &str| {
                    table
                        .get("ingest")
                        .and_then(|i| i.get(key))
                        .and_then(|v| v.as_str())
                        .map(PathBuf::from)
                };
                let dir = p.parent().unwrap_or(Path::new(".")).to_path_buf();
                Some((p.clone(), dir, (path("targets"), path("enterprises"))))
            }
            _ => None,
        };
        let pick = |flag: &Option<PathBuf>,
                    from_ingest: Option<&PathBuf>,
                    name: &str|
         -> Result<(PathBuf, String)> {
            if let Some(p) = flag {
                return Ok((p.clone(), format!("--{}", name.trim_end_matches(".toml"))));
            }
            if let (Some((config, dir, _)), Some(p)) = (&ingest, from_ingest) {
                return Ok((dir.join(p), format!("named in {}", config.display())));
            }
            let candidates = [
                PathBuf::from("config").join(name),
                PathBuf::from("/etc/shopfloor").join(name),
            ];
            candidates
                .iter()
                .find(|p| p.exists())
                .map(|p| (p.clone(), "found by default".to_string()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no {name}: looked for --{flag}, the ingest config's [ingest] {flag}, {} and {}; `shopfloor county init --dir DIR` writes one to start from",
                        candidates[0].display(),
                        candidates[1].display(),
                        flag = name.trim_end_matches(".toml"),
                    )
                })
        };
        let i = ingest.as_ref().map(|(_, _, i)| i);
        Ok(Found {
            targets: pick(&self.targets, i.and_then(|i| i.0.as_ref()), "targets.toml")?,
            enterprises: pick(
                &self.enterprises,
                i.and_then(|i| i.1.as_ref()),
                "enterprises.toml",
            )?,
        })
    }
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
    /// table (for the terminal), csv (with a BOM, for Excel), json, or html (one
    /// self-contained page with charts).
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

fn load(files: &Files) -> Result<(Targets, Registry, Found)> {
    let found = files.find()?;
    for (what, (path, how)) in [
        ("targets", &found.targets),
        ("enterprises", &found.enterprises),
    ] {
        eprintln!("{what}: {} ({how})", path.display());
    }
    // Both files are checked before either error is reported, so one run shows every mistake.
    let targets = Targets::load(&found.targets.0);
    let registry = Registry::load(&found.enterprises.0);
    match (targets, registry) {
        (Ok(t), Ok(r)) => Ok((t, r, found)),
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
        CountyCommand::Init(args) => init(&args),
    }
}

/// The files `county init` writes: the shipped samples, Wuyi's programme filled in.
const INIT_FILES: [(&str, &str); 2] = [
    ("targets.toml", include_str!("../../config/targets.toml")),
    (
        "enterprises.toml",
        include_str!("../../config/enterprises.toml"),
    ),
];

fn init(args: &InitArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let paths: Vec<PathBuf> = INIT_FILES.iter().map(|(n, _)| args.dir.join(n)).collect();
    if !args.force
        && let Some(existing) = paths.iter().find(|p| p.exists())
    {
        anyhow::bail!(
            "{} exists; pass --force to replace it (the other file is not written either)",
            existing.display()
        );
    }
    for (path, (_, text)) in paths.iter().zip(INIT_FILES) {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "edit the register, then: shopfloor county check --targets {} --enterprises {}",
        paths[0].display(),
        paths[1].display()
    );
    Ok(())
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
    let (targets, registry, found) = load(files)?;
    let sector_specific: usize = targets.sectors.values().map(|t| t.len()).sum();
    println!(
        "{}: ok: county {}, {} programme-wide targets, {} sector targets",
        found.targets.0.display(),
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
        found.enterprises.0.display(),
        registry.enterprises.len(),
        per_sector.join(", ")
    );
    Ok(())
}

async fn run_report(args: ReportArgs) -> Result<()> {
    let (targets, registry, found) = load(&args.files)?;
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
    let mut report = report;
    report.sources = vec![
        found.targets.0.display().to_string(),
        found.enterprises.0.display().to_string(),
    ];
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
