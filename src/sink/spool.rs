//! The disk spool: every record is on disk before any output sends it.
//!
//! Why SQLite (bundled through `rusqlite`): its write-ahead log gives atomic, crash-safe appends
//! that survive SIGKILL and power loss without a recovery step of ours, a torn write can never
//! leave a half record behind, and an engineer on site can open the spool with the stock
//! `sqlite3` tool to see what is waiting. redb would do the first two as well, but it is newer,
//! its file format has changed between major versions, and nobody on a factory floor has a tool
//! to look inside it.
//!
//! Layout: the lines of one append (everything the spool task collected in one wake-up) are
//! packed into rows of up to [`ROW_BYTES`], oldest first; a row is the unit of storage, of
//! dropping and of acknowledgement. Each output keeps its own cursor, the id of the last row it
//! delivered; a row is deleted once every output has passed it. At start-up each output simply
//! reads on from its cursor, so what was left is sent first, oldest first.
//!
//! Bounds, both checked on every append and once a second:
//! - **bytes** (`max_bytes`): past it the oldest rows are deleted, delivered or not, and their
//!   lines counted as dropped: the newest data is what an operator needs when the link comes
//!   back. The bound counts line-protocol bytes; the file is larger by SQLite's page overhead
//!   (about 1 % for the row sizes used here) plus a WAL of at most [`WAL_LIMIT`] between
//!   checkpoints. Freed pages are reused, so the file stops growing at the bound.
//! - **age** (`max_age`): rows appended longer ago than this are deleted and counted as expired
//!   (data a store would reject as out of retention, or that nobody will look at any more).
//!
//! Both counts persist in the spool file, so a restart does not reset them.
//!
//! A full disk (SQLite's `SQLITE_FULL`) becomes a third bound, like `max_bytes` but lower:
//! what waits at that moment, less a quarter. The append that hit it deletes the oldest rows
//! down to that bound (counted as dropped at the cap, delivered rows first and uncounted) and
//! is tried once more; later appends stay under it, reusing the freed pages, so the file
//! stops growing and the newest records are kept. In WAL mode even a delete needs room (frames
//! in the log, and a checkpoint may grow the database file), so the spool keeps a reserve file
//! of [`RESERVE_BYTES`] beside it (`spool.db-reserve`) and deletes it first: that is the room
//! the way out needs. When the disk has room again, [`Spool::disk_has_room`] lifts the bound
//! and puts the reserve back. An append that still does not fit fails with
//! [`SpoolError::is_disk_full`], and the caller counts its lines as lost.

//! Durability (`sync`): the database runs in WAL mode. A committed append survives a killed
//! process (SIGKILL, a panic, the OOM killer) at once, in every mode: the commit is in the
//! operating system's page cache. Power loss is what the modes differ in:
//! - `normal` (default): `synchronous = NORMAL`, and the spool task syncs the WAL file to the
//!   disk every `sync_interval` (default 1 s; [`Spool::sync_log`], one `fdatasync`). A power cut
//!   loses at most the records of the last interval; the file is never corrupted. On power-up
//!   SQLite replays the synced log, as it does after any crash. The log is copied into the
//!   database file by SQLite's own checkpoints, each time it has grown by
//!   [`AUTOCHECKPOINT_PAGES`]; `synchronous = NORMAL` syncs the log before such a checkpoint and
//!   the database file after it. Rows live for seconds and their freed pages are reused, so
//!   most pages are written many times between two checkpoints and copied once: a checkpoint
//!   every second (the way this was first done) copied and synced the database file every
//!   second as well, about a twentieth of the agent's CPU at 1,000 MQTT messages a second.
//! - `full`: `synchronous = FULL`, every append is synced before it counts as done. Nothing
//!   committed is lost, at the price of one disk sync per append (a few ms on an SD card or
//!   eMMC; the spool task batches appends, so throughput drops far less than per line).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

/// Rows are filled up to about this many bytes: large enough that SQLite's per-row cost
/// vanishes, small enough that dropping the oldest row at the cap loses little.
pub const ROW_BYTES: usize = 64 * 1024;

/// The WAL is truncated back to this size after a checkpoint (`journal_size_limit`).
pub const WAL_LIMIT: i64 = 64 * 1024 * 1024;

/// SQLite checkpoints the WAL into the database file once it holds this many pages
/// (`wal_autocheckpoint`; SQLite's default, set here so that the bound on the log is ours):
/// 4 MiB of 4 KiB pages.
pub const AUTOCHECKPOINT_PAGES: i64 = 1000;

/// The room kept in `<spool>-reserve` for getting out of a full disk (see the module
/// documentation).
pub const RESERVE_BYTES: u64 = 1024 * 1024;

/// Page cache of each connection, in KiB (SQLite's default is 2000). Every row is written
/// once and read once per output, in order, so cached pages are hardly ever read again: at
/// 100k values a second the default only held 2 MB per connection of pages nobody asks for.
/// What a transaction dirties beyond the cache goes to the WAL early, which it would at commit
/// anyway.
pub const CACHE_KIB: i64 = 256;

/// Errors from the spool database.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("spool database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("spool task failed: {0}")]
    Task(String),
    #[error("cannot sync the spool's log {path} to disk: {source}")]
    Sync {
        path: String,
        source: std::io::Error,
    },
}

impl SpoolError {
    /// Whether SQLite said the disk (or the file system's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        let sql = match self {
            SpoolError::Open { source, .. } => source,
            SpoolError::Sql(e) => e,
            SpoolError::Task(_) => return false,
            SpoolError::Sync { source, .. } => {
                return source.raw_os_error() == Some(libc::ENOSPC);
            }
        };
        sql.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
    }
}

/// Figures for health lines and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of line protocol waiting (not counting SQLite's own overhead).
    pub bytes: u64,
    /// Rows waiting.
    pub chunks: u64,
    pub lines: u64,
    /// When the oldest waiting row was appended, in Unix milliseconds.
    pub oldest_ms: Option<i64>,
    /// Lines deleted before every output had them, at either bound, since the spool was
    /// created.
    pub dropped_lines: u64,
    /// Of those, the lines deleted at the age bound.
    pub expired_lines: u64,
    /// Lines appended since this process started.
    pub appended_lines: u64,
}

/// A run of rows read for one output, joined into one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Id of the last row in the batch: the cursor after it is delivered.
    pub last_id: i64,
    pub lines: usize,
    /// Lines separated by `\n`, with a trailing `\n`.
    pub body: Vec<u8>,
    /// More rows were waiting behind the batch: it is as full as whole rows allow, and the
    /// writer should not wait for more lines before sending it.
    pub more: bool,
}

/// How hard the spool syncs to disk; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// WAL synced at every checkpoint (`sync_interval`): survives a crash of the process, may
    /// lose the last interval on power loss.
    #[default]
    Normal,
    /// Sync every commit.
    Full,
}

/// The spool's bounds and sync policy (`[spool]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    /// `None`: no age bound.
    pub max_age: Option<Duration>,
    pub sync: SyncPolicy,
}

impl Limits {
    /// A byte bound only, `normal` sync: for tests and benchmarks.
    pub fn bytes(max_bytes: u64) -> Self {
        Limits {
            max_bytes,
            max_age: None,
            sync: SyncPolicy::Normal,
        }
    }
}

/// The appending side of the spool. One process owns it.
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    limits: Limits,
    stats: SpoolStats,
    /// The byte bound in force: `max_bytes`, or lower while the disk is full.
    cap: u64,
    /// The reserve file (see the module documentation).
    reserve: std::path::PathBuf,
    /// The write-ahead log, `<spool>-wal`, which [`Spool::sync_log`] syncs.
    wal: std::path::PathBuf,
    /// Lines dropped at the byte bound, for the log (see [`crate::queue::LossLog`]).
    cap_losses: crate::queue::LossLog,
}

fn open_conn(path: &Path, sync: SyncPolicy) -> Result<Connection, SpoolError> {
    let open_err = |source| SpoolError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    let sync = match sync {
        SyncPolicy::Normal => "NORMAL",
        SyncPolicy::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT)
        .map_err(open_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
        .map_err(open_err)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(open_err)?;
    Ok(conn)
}

/// Lines, bytes and rows of the rows with `id <= last`.
fn sums_up_to(tx: &Transaction<'_>, last: i64) -> Result<(u64, u64, u64), SpoolError> {
    let (lines, bytes, rows): (i64, i64, i64) = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(lines),0), COALESCE(SUM(bytes),0), COUNT(*) FROM chunk WHERE id <= ?1",
        )?
        .query_row([last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok((lines as u64, bytes as u64, rows as u64))
}

/// Why rows are deleted, and so which counter their lines go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Every output has them: not a loss.
    Delivered,
    /// Past the byte bound.
    Dropped,
    /// Past the age bound.
    Expired,
}

impl Spool {
    /// Opens (or creates) the spool and registers the outputs that read it. Cursors of outputs
    /// no longer configured are removed, so a retired output does not pin the spool.
    pub fn open(path: &Path, limits: Limits, outputs: &[String]) -> Result<Self, SpoolError> {
        let mut conn = open_conn(path, limits.sync)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS chunk (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 at_ms INTEGER NOT NULL,
                 lines INTEGER NOT NULL,
                 bytes INTEGER NOT NULL,
                 body BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS cursor (output TEXT PRIMARY KEY, acked INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        let tx = conn.transaction()?;
        {
            let names: Vec<String> = tx
                .prepare("SELECT output FROM cursor")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for name in names.iter().filter(|n| !outputs.contains(n)) {
                tx.execute("DELETE FROM cursor WHERE output = ?1", [name])?;
            }
            for name in outputs {
                tx.execute(
                    "INSERT OR IGNORE INTO cursor (output, acked) VALUES (?1, 0)",
                    [name],
                )?;
            }
        }
        tx.commit()?;
        let mut reserve = path.as_os_str().to_owned();
        reserve.push("-reserve");
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut spool = Spool {
            conn,
            limits,
            stats: SpoolStats::default(),
            cap: limits.max_bytes,
            reserve: reserve.into(),
            wal: wal.into(),
            cap_losses: crate::queue::LossLog::new(
                "spool full: oldest records dropped at the byte bound",
                std::time::Duration::from_secs(60),
            ),
        };
        spool.make_reserve();
        spool.refresh_stats()?;
        spool.trim()?;
        Ok(spool)
    }

    /// Reads every figure from the database; a full scan, so only at start-up.
    fn refresh_stats(&mut self) -> Result<(), SpoolError> {
        let (bytes, chunks, lines): (i64, i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(bytes),0), COUNT(*), COALESCE(SUM(lines),0) FROM chunk",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let counter = |name: &str| -> Result<u64, SpoolError> {
            let value: Option<i64> = self
                .conn
                .query_row("SELECT value FROM counter WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(value.unwrap_or(0) as u64)
        };
        // The file keeps the two causes apart: `dropped_lines` there counts the byte bound only.
        self.stats.expired_lines = counter("expired_lines")?;
        self.stats.dropped_lines = counter("dropped_lines")? + self.stats.expired_lines;
        self.stats.bytes = bytes as u64;
        self.stats.chunks = chunks as u64;
        self.stats.lines = lines as u64;
        self.stats.oldest_ms = self.oldest_ms()?;
        Ok(())
    }

    /// The append time of the first row. Rows are appended in time order (unless the clock
    /// was set back), so this is the oldest, found without a scan.
    fn oldest_ms(&self) -> Result<Option<i64>, SpoolError> {
        Ok(self
            .conn
            .prepare_cached("SELECT at_ms FROM chunk ORDER BY id LIMIT 1")?
            .query_row([], |r| r.get(0))
            .optional()?)
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends chunks (each a list of lines) in one transaction, packed into rows of about
    /// [`ROW_BYTES`] in order, then enforces the bounds. On a full disk the oldest rows make
    /// room (see the module documentation); the result is how many lines that dropped.
    pub fn append<C: AsRef<[String]>>(
        &mut self,
        chunks: &[C],
        now_ms: i64,
    ) -> Result<u64, SpoolError> {
        match self.insert(chunks, now_ms) {
            Err(e) if e.is_disk_full() => {
                // The reserve's room lets the log be checkpointed and the delete be written.
                let _ = std::fs::remove_file(&self.reserve);
                let _ = self.checkpoint();
                // Delivered rows go first and uncounted, as at the byte bound.
                let _ = self.trim();
                let bringing: u64 = chunks
                    .iter()
                    .flat_map(|c| c.as_ref())
                    .map(|l| l.len() as u64 + 1)
                    .sum();
                // Never below a few rows: with nothing waiting the disk is full of something else, and
                // a bound of 0 would drop every record as it comes.
                let floor = 4 * ROW_BYTES as u64;
                self.cap = self
                    .cap
                    .min((self.stats.bytes - self.stats.bytes / 4).max(floor));
                let excess = (self.stats.bytes + bringing).saturating_sub(self.cap);
                let dropped = self.drop_oldest(excess)?;
                let _ = self.checkpoint();
                tracing::error!(
                    dropped_lines = dropped,
                    total_dropped = self.stats.dropped_lines - self.stats.expired_lines,
                    bound_bytes = self.cap,
                    "disk full: the spool keeps at most bound_bytes until the disk has room, dropping the oldest records; free space on the spool's disk"
                );
                self.insert(chunks, now_ms)?;
                Ok(dropped.max(1))
            }
            other => other.map(|()| 0),
        }
    }

    /// The disk has room again: back to `max_bytes`, and the reserve is put back.
    pub fn disk_has_room(&mut self) {
        self.cap = self.limits.max_bytes;
        self.make_reserve();
    }

    /// Writes the reserve file unless it is there (best effort: a disk too full for it is
    /// what the reserve is for, and the spool works without it). Written, not sized, so the
    /// file system really allocates it.
    fn make_reserve(&self) {
        use std::io::Write as _;
        let exists = std::fs::metadata(&self.reserve).is_ok_and(|m| m.len() >= RESERVE_BYTES);
        if exists {
            return;
        }
        let written = std::fs::File::create(&self.reserve).and_then(|mut f| {
            let block = [0u8; 64 * 1024];
            for _ in 0..RESERVE_BYTES / block.len() as u64 {
                f.write_all(&block)?;
            }
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&self.reserve);
            tracing::warn!(file = %self.reserve.display(), error = %e, "cannot write the spool's disk reserve; a full disk may then cost records");
        }
    }

    fn insert<C: AsRef<[String]>>(&mut self, chunks: &[C], now_ms: i64) -> Result<(), SpoolError> {
        let tx = self.write_transaction()?;
        let mut added_bytes = 0u64;
        let mut added_lines = 0u64;
        let mut added_rows = 0u64;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chunk (at_ms, lines, bytes, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut body: Vec<u8> = Vec::new();
            let mut lines = 0usize;
            let mut flush = |body: &mut Vec<u8>, lines: &mut usize| -> Result<(), SpoolError> {
                if *lines > 0 {
                    insert.execute(params![now_ms, *lines as i64, body.len() as i64, &*body])?;
                    added_bytes += body.len() as u64;
                    added_lines += *lines as u64;
                    added_rows += 1;
                }
                body.clear();
                *lines = 0;
                Ok(())
            };
            for line in chunks.iter().flat_map(|c| c.as_ref()) {
                if lines > 0 && body.len() + line.len() + 1 > ROW_BYTES {
                    flush(&mut body, &mut lines)?;
                }
                body.extend_from_slice(line.as_bytes());
                body.push(b'\n');
                lines += 1;
            }
            flush(&mut body, &mut lines)?;
        }
        tx.commit()?;
        if added_rows > 0 && self.stats.oldest_ms.is_none() {
            self.stats.oldest_ms = Some(now_ms);
        }
        self.stats.bytes += added_bytes;
        self.stats.lines += added_lines;
        self.stats.chunks += added_rows;
        self.stats.appended_lines += added_lines;
        if self.stats.bytes > self.cap {
            self.enforce_cap()?;
        } else {
            self.cap_losses.recovered();
        }
        Ok(())
    }

    /// A write transaction that takes SQLite's write lock at `BEGIN` (`IMMEDIATE`), so it waits
    /// out a writer's acknowledgement within `busy_timeout`. A deferred transaction that reads
    /// first and writes next cannot wait: if an acknowledgement committed in between, SQLite
    /// refuses the upgrade at once with "database is locked" (`SQLITE_BUSY_SNAPSHOT`), which is
    /// what trimming under load ran into.
    fn write_transaction(&mut self) -> Result<Transaction<'_>, SpoolError> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// At shutdown: the log gets the total of what the byte bound dropped in this run.
    pub fn finish(&mut self) {
        self.cap_losses.finish();
    }

    /// Deletes rows up to `last` and moves the figures by what went.
    fn remove_up_to(&mut self, last: i64, why: Removal) -> Result<u64, SpoolError> {
        let tx = self.write_transaction()?;
        let (lines, bytes, rows) = sums_up_to(&tx, last)?;
        tx.prepare_cached("DELETE FROM chunk WHERE id <= ?1")?
            .execute([last])?;
        let counter = match why {
            Removal::Delivered => None,
            Removal::Dropped => Some("dropped_lines"),
            Removal::Expired => Some("expired_lines"),
        };
        if let Some(name) = counter.filter(|_| lines > 0) {
            tx.prepare_cached(
                "INSERT INTO counter (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = value + ?2",
            )?
            .execute(params![name, lines as i64])?;
        }
        tx.commit()?;
        self.stats.lines -= lines.min(self.stats.lines);
        self.stats.bytes -= bytes.min(self.stats.bytes);
        self.stats.chunks -= rows.min(self.stats.chunks);
        match why {
            Removal::Delivered => {}
            Removal::Dropped => self.stats.dropped_lines += lines,
            Removal::Expired => {
                self.stats.dropped_lines += lines;
                self.stats.expired_lines += lines;
            }
        }
        self.stats.oldest_ms = self.oldest_ms()?;
        Ok(lines)
    }

    /// The id of the last row in the oldest run of rows that `take` accepts, reading from the
    /// front of the queue (cheap: the body blobs are not read).
    fn front_run(&self, mut take: impl FnMut(i64, u64) -> bool) -> Result<Option<i64>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, at_ms, bytes FROM chunk ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut last = None;
        while let Some(row) = rows.next()? {
            let (id, at_ms, bytes): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            if !take(at_ms, bytes as u64) {
                break;
            }
            last = Some(id);
        }
        Ok(last)
    }

    /// Deletes the oldest rows until the spool fits its byte bound; counts their lines as
    /// dropped. Delivered rows go first and uncounted, so only real losses are counted.
    fn enforce_cap(&mut self) -> Result<(), SpoolError> {
        self.trim()?;
        if self.stats.bytes <= self.cap {
            self.cap_losses.recovered();
            return Ok(());
        }
        let lines = self.drop_oldest(self.stats.bytes - self.cap)?;
        // At the bound every append drops a little: the log says how much once a minute, and
        // the total when it stops and at shutdown.
        if lines > 0 {
            self.cap_losses.lost(lines);
        } else {
            self.cap_losses.recovered();
        }
        Ok(())
    }

    /// Deletes the oldest rows holding at least `bytes`, delivered or not, and counts their
    /// lines as dropped (returned).
    fn drop_oldest(&mut self, bytes: u64) -> Result<u64, SpoolError> {
        let mut excess = bytes;
        let cut = self.front_run(|_, bytes| {
            let more = excess > 0;
            excess = excess.saturating_sub(bytes);
            more
        })?;
        match cut {
            Some(cut) => self.remove_up_to(cut, Removal::Dropped),
            None => Ok(0),
        }
    }

    /// Deletes rows older than the age bound; counts their lines as expired.
    pub fn expire(&mut self, now_ms: i64) -> Result<(), SpoolError> {
        let Some(max_age) = self.limits.max_age else {
            return Ok(());
        };
        let cutoff = now_ms.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        if self.stats.oldest_ms.is_none_or(|oldest| oldest >= cutoff) {
            return Ok(());
        }
        self.trim()?;
        if let Some(cut) = self.front_run(|at_ms, _| at_ms < cutoff)? {
            let lines = self.remove_up_to(cut, Removal::Expired)?;
            tracing::warn!(
                expired_lines = lines,
                total_expired = self.stats.expired_lines,
                max_age = ?max_age,
                "records older than the spool's max_age dropped"
            );
        }
        Ok(())
    }

    /// Deletes rows every output has delivered.
    pub fn trim(&mut self) -> Result<(), SpoolError> {
        let acked: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(acked) FROM cursor")?
            .query_row([], |r| r.get(0))?;
        // No output at all: nobody reads the spool, nothing needs to be kept.
        let last = acked.unwrap_or(i64::MAX);
        let first: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM chunk ORDER BY id LIMIT 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        if first.is_some_and(|first| first <= last) {
            self.remove_up_to(last, Removal::Delivered)?;
        }
        Ok(())
    }

    /// Syncs the write-ahead log to disk (`fdatasync`), so that every committed append
    /// survives a power cut: what `sync_interval` bounds for the `normal` policy (see the
    /// module documentation). The log is opened for each sync rather than kept open: SQLite may
    /// truncate it, and a sync of a file it had replaced would sync nothing.
    pub fn sync_log(&self) -> Result<(), SpoolError> {
        let synced = std::fs::File::open(&self.wal).and_then(|log| log.sync_data());
        match synced {
            Ok(()) => Ok(()),
            // No log: nothing was written since SQLite last removed it, nothing to sync.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SpoolError::Sync {
                path: self.wal.display().to_string(),
                source: e,
            }),
        }
    }

    /// Copies what it can of the WAL into the database file (a passive checkpoint, which
    /// syncs both): at shutdown, and to get out of a full disk.
    pub fn checkpoint(&mut self) -> Result<(), SpoolError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// The reading side of the spool for one output: its own connection and cursor.
#[derive(Debug)]
pub struct SpoolReader {
    conn: Connection,
    output: String,
    acked: i64,
}

impl SpoolReader {
    pub fn open(path: &Path, output: &str) -> Result<Self, SpoolError> {
        let conn = open_conn(path, SyncPolicy::Normal)?;
        let acked: i64 = conn
            .query_row(
                "SELECT acked FROM cursor WHERE output = ?1",
                [output],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(SpoolReader {
            conn,
            output: output.to_string(),
            acked,
        })
    }

    /// The oldest undelivered rows, whole, up to `max_lines` lines and `max_bytes` bytes (at
    /// least one row, however large). Rows the spool dropped meanwhile are simply not there: a
    /// writer re-reads after a failed send so that it never delivers what was already counted
    /// as dropped.
    pub fn next_batch(
        &mut self,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, SpoolError> {
        // Every row holds at least one line, so max_lines + 1 rows always fill the batch or
        // show that more is waiting.
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, lines, body FROM chunk WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(max_lines.max(1)).unwrap_or(i64::MAX - 1) + 1;
        let mut rows = stmt.query(params![self.acked, limit])?;
        let mut batch: Option<Batch> = None;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let lines = row.get::<_, i64>(1)? as usize;
            let body = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            match batch.as_mut() {
                Some(b) if b.lines + lines > max_lines || b.body.len() + body.len() > max_bytes => {
                    b.more = true;
                    break;
                }
                Some(b) => {
                    b.last_id = id;
                    b.lines += lines;
                    b.body.extend_from_slice(body);
                }
                None => {
                    batch = Some(Batch {
                        last_id: id,
                        lines,
                        body: body.to_vec(),
                        more: false,
                    })
                }
            }
        }
        Ok(batch)
    }

    /// What this output has not delivered yet: its lines and when the oldest of them was
    /// appended (Unix ms). Reads the rows' small columns past the cursor, not their bodies.
    pub fn backlog(&mut self) -> Result<(u64, Option<i64>), SpoolError> {
        let (lines, oldest): (i64, Option<i64>) = self
            .conn
            .prepare_cached("SELECT COALESCE(SUM(lines),0), MIN(at_ms) FROM chunk WHERE id > ?1")?
            .query_row([self.acked], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((lines.max(0) as u64, oldest))
    }

    /// Records that everything up to `last_id` is delivered.
    pub fn ack(&mut self, last_id: i64) -> Result<(), SpoolError> {
        self.conn
            .prepare_cached("UPDATE cursor SET acked = ?2 WHERE output = ?1 AND acked < ?2")?
            .execute(params![self.output, last_id])?;
        self.acked = self.acked.max(last_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m,k={prefix} v={i}i {i}")).collect()
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_as_well_as_lines_but_holds_at_least_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let mut spool = Spool::open(&path, Limits::bytes(1 << 20), &["a".to_string()]).unwrap();
        // Three rows of 2 lines each; "m,k=x v=0i 0\n" is 13 bytes and "m,k=x v=1i 1\n" too,
        // so each row's body is 26 bytes.
        for (i, prefix) in ["x", "y", "z"].into_iter().enumerate() {
            spool.append(&[lines(prefix, 2)], 1000 + i as i64).unwrap();
        }
        let mut a = SpoolReader::open(&path, "a").unwrap();
        // 60 bytes: two rows (52) fit, a third (78) would not, whatever the line limit.
        let first = a.next_batch(1000, 60).unwrap().unwrap();
        assert_eq!((first.lines, first.body.len(), first.more), (4, 52, true));
        a.ack(first.last_id).unwrap();
        // 10 bytes is less than one row: the row goes whole, alone, rather than never.
        let second = a.next_batch(1000, 10).unwrap().unwrap();
        assert_eq!(
            (second.lines, second.body.len(), second.more),
            (2, 26, false)
        );
        assert!(second.body.starts_with(b"m,k=z v=0i 0\n"));
    }

    #[test]
    fn each_output_reads_from_its_own_cursor_and_acked_chunks_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let outputs = vec!["a".to_string(), "b".to_string()];
        let mut spool = Spool::open(&path, Limits::bytes(1 << 20), &outputs).unwrap();
        spool.append(&[lines("x", 3)], 1000).unwrap();
        spool.append(&[lines("y", 2)], 2000).unwrap();
        assert_eq!(spool.stats().lines, 5);

        let mut a = SpoolReader::open(&path, "a").unwrap();
        let mut b = SpoolReader::open(&path, "b").unwrap();
        // Batch limit 4 lines: the first chunk (3) fits, the second (2) would exceed it.
        let first = a.next_batch(4, usize::MAX).unwrap().unwrap();
        assert_eq!(first.lines, 3);
        assert!(first.more, "the second row waits behind it");
        a.ack(first.last_id).unwrap();
        // Each output's backlog counts from its own cursor: a has the second append (2 lines,
        // appended at 2000 ms) left, b all five since 1000 ms.
        assert_eq!(a.backlog().unwrap(), (2, Some(2000)));
        assert_eq!(b.backlog().unwrap(), (5, Some(1000)));
        let second = a.next_batch(4, usize::MAX).unwrap().unwrap();
        assert_eq!(second.lines, 2);
        assert!(!second.more);
        assert!(second.body.starts_with(b"m,k=y v=0i 0\n"));
        a.ack(second.last_id).unwrap();
        assert_eq!(a.next_batch(4, usize::MAX).unwrap(), None);
        assert_eq!(a.backlog().unwrap(), (0, None));

        // Output b has delivered nothing, so nothing may be trimmed yet.
        spool.trim().unwrap();
        assert_eq!(spool.stats().lines, 5);
        let all = b.next_batch(100, usize::MAX).unwrap().unwrap();
        assert_eq!(all.lines, 5);
        b.ack(all.last_id).unwrap();
        spool.trim().unwrap();
        assert_eq!(spool.stats().lines, 0);
        assert_eq!(spool.stats().oldest_ms, None);
    }

    #[test]
    fn past_the_cap_the_oldest_chunks_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        // Each line "m,k=x v=0i 0\n" is 13 bytes; a chunk of 10 lines is 130 bytes.
        let mut spool = Spool::open(&path, Limits::bytes(300), &["out".into()]).unwrap();
        for i in 0..3 {
            spool.append(&[lines(&i.to_string(), 10)], i).unwrap();
        }
        // 390 bytes > 300: the oldest chunk (130) goes, 260 stay.
        let stats = spool.stats();
        assert_eq!(
            (stats.bytes, stats.lines, stats.dropped_lines),
            (260, 20, 10)
        );
        let mut reader = SpoolReader::open(&path, "out").unwrap();
        let batch = reader.next_batch(1000, usize::MAX).unwrap().unwrap();
        assert!(batch.body.starts_with(b"m,k=1 "), "the newest survive");
        // The dropped count survives a restart.
        drop(spool);
        let spool = Spool::open(&path, Limits::bytes(300), &["out".into()]).unwrap();
        assert_eq!(spool.stats().dropped_lines, 10);
    }

    #[test]
    fn what_is_left_at_start_up_is_read_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        {
            let mut spool = Spool::open(&path, Limits::bytes(1 << 20), &["out".into()]).unwrap();
            spool.append(&[lines("old", 1)], 1).unwrap();
            spool.append(&[lines("new", 1)], 2).unwrap();
        }
        let spool = Spool::open(&path, Limits::bytes(1 << 20), &["out".into()]).unwrap();
        assert_eq!(spool.stats().oldest_ms, Some(1));
        let mut reader = SpoolReader::open(&path, "out").unwrap();
        let batch = reader.next_batch(1, usize::MAX).unwrap().unwrap();
        assert!(batch.body.starts_with(b"m,k=old"));
    }

    #[test]
    fn rows_older_than_max_age_are_dropped_and_counted_as_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let limits = Limits {
            max_age: Some(Duration::from_secs(60)),
            ..Limits::bytes(1 << 20)
        };
        let mut spool = Spool::open(&path, limits, &["out".into()]).unwrap();
        // Rows appended at 0 s, 30 s and 90 s; at 100 s the cutoff is 40 s: the first two go.
        spool.append(&[lines("a", 4)], 0).unwrap();
        spool.append(&[lines("b", 5)], 30_000).unwrap();
        spool.append(&[lines("c", 6)], 90_000).unwrap();
        spool.expire(100_000).unwrap();
        let stats = spool.stats();
        // Expired lines count among the dropped ones too.
        assert_eq!(
            (stats.lines, stats.expired_lines, stats.dropped_lines),
            (6, 9, 9)
        );
        assert_eq!(stats.oldest_ms, Some(90_000));
        drop(spool);
        let spool = Spool::open(&path, limits, &["out".into()]).unwrap();
        assert_eq!(
            spool.stats().expired_lines,
            9,
            "the count survives a restart"
        );
    }

    #[test]
    fn delivered_rows_are_not_counted_as_dropped_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let mut spool = Spool::open(&path, Limits::bytes(300), &["out".into()]).unwrap();
        spool.append(&[lines("0", 10)], 0).unwrap();
        let mut reader = SpoolReader::open(&path, "out").unwrap();
        let batch = reader.next_batch(100, usize::MAX).unwrap().unwrap();
        reader.ack(batch.last_id).unwrap();
        // 130 delivered + 130 + 130 = 390 > 300, but the delivered row goes first, uncounted.
        spool.append(&[lines("1", 10)], 1).unwrap();
        spool.append(&[lines("2", 10)], 2).unwrap();
        assert_eq!(spool.stats().dropped_lines, 0);
        assert_eq!(spool.stats().lines, 20);
    }

    #[test]
    fn one_append_is_packed_into_rows_of_about_row_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let mut spool = Spool::open(&path, Limits::bytes(1 << 30), &["out".into()]).unwrap();
        // 1000-byte lines (999 + `\n`): 65 fit in 65 536 bytes, the 66th starts a new row.
        let line = "x".repeat(999);
        let chunk: Vec<String> = vec![line; 200];
        spool
            .append(&[chunk[..150].to_vec(), chunk[150..].to_vec()], 7)
            .unwrap();
        // 200 lines = 65 + 65 + 65 + 5.
        let stats = spool.stats();
        assert_eq!((stats.lines, stats.chunks, stats.bytes), (200, 4, 200_000));
        let mut reader = SpoolReader::open(&path, "out").unwrap();
        let first = reader.next_batch(1, usize::MAX).unwrap().unwrap();
        assert_eq!(first.lines, 65, "a batch is at least one whole row");
        // The figures kept along the way equal a fresh count from the file.
        drop(spool);
        let reopened = Spool::open(&path, Limits::bytes(1 << 30), &["out".into()]).unwrap();
        assert_eq!(reopened.stats().lines, 200);
        assert_eq!(reopened.stats().chunks, 4);
    }

    #[test]
    fn synced_without_checkpoints_the_log_stays_bounded_by_sqlite_s_own_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let mut spool = Spool::open(&path, Limits::bytes(1 << 30), &["out".into()]).unwrap();
        let mut reader = SpoolReader::open(&path, "out").unwrap();
        let wal = path.with_file_name("spool.db-wal");
        // 80 appends of 256 KiB (four rows each), each read, acknowledged, trimmed and synced
        // the way the spool task and a writer do it: 20 MiB through the log, five times the
        // autocheckpoint mark of 1000 pages (4 MiB). Nothing calls `checkpoint`.
        let line = "x".repeat(1023);
        let mut largest = 0;
        for _ in 0..80 {
            spool.append(&[vec![line.clone(); 256]], 0).unwrap();
            let batch = reader.next_batch(10_000, usize::MAX).unwrap().unwrap();
            assert_eq!(batch.lines, 256);
            reader.ack(batch.last_id).unwrap();
            spool.trim().unwrap();
            spool.sync_log().unwrap();
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        assert_eq!(spool.stats().lines, 0);
        // SQLite's checkpoints let the log start over: it peaks near the mark plus one
        // append's pages, not at the 20 MiB that went through it.
        assert!(largest < 8 << 20, "the log grew to {largest} bytes");
    }

    #[test]
    fn a_full_disk_lowers_the_bound_drops_the_oldest_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let mut spool = Spool::open(&path, Limits::bytes(1 << 30), &["out".into()]).unwrap();
        assert!(path.with_file_name("spool.db-reserve").exists());
        // SQLite answers SQLITE_FULL once the file reaches max_page_count, as on a full disk.
        let pages: i64 = spool
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        spool
            .conn
            .pragma_update(None, "max_page_count", pages + 100)
            .unwrap();
        // 1000-byte lines, 50 an append: about 12 pages of 4 KiB each, so the disk fills
        // within ten appends; none of forty fails, and the oldest make room.
        let line = "x".repeat(999);
        let mut dropped_for_room = 0;
        for _ in 0..40 {
            dropped_for_room += spool.append(&[vec![line.clone(); 50]], 0).unwrap();
        }
        let stats = spool.stats();
        assert!(dropped_for_room > 0 && stats.dropped_lines > 0, "{stats:?}");
        assert_eq!(stats.appended_lines, 2000);
        assert_eq!(stats.lines + stats.dropped_lines, 2000);
        assert!(
            !path.with_file_name("spool.db-reserve").exists(),
            "the reserve was used"
        );
        // Room again: the reserve comes back and max_bytes is the bound again.
        spool.disk_has_room();
        assert!(path.with_file_name("spool.db-reserve").exists());
        assert_eq!(spool.cap, 1 << 30);
    }
}
