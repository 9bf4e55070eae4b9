//! The disk spool: every record is on disk before any output sends it.
//!
//! Why SQLite (bundled through `rusqlite`): its write-ahead log gives atomic, crash-safe appends
//! that survive SIGKILL and power loss without a recovery step of ours, a torn write can never
//! leave a half record behind, and an engineer on site can open the spool with the stock
//! `sqlite3` tool to see what is waiting. redb would do the first two as well, but it is newer,
//! its file format has changed between major versions, and nobody on a factory floor has a tool
//! to look inside it.
//!
//! Layout: the engine's records arrive in chunks (all lines of one engine step), and each chunk
//! is one row. Each output keeps its own cursor, the id of the last chunk it delivered; a chunk
//! is deleted once every output has passed it. When the spool grows past `max_bytes`, the oldest
//! chunks are deleted whether delivered or not, and their lines are counted as dropped: the
//! newest data is what an operator needs when the link comes back.
//!
//! Durability: the database runs in WAL mode with `synchronous = NORMAL`. A committed append
//! survives a killed process at once; after a power cut SQLite may roll back the last few
//! commits (those since the last WAL sync) but never corrupts the file. `synchronous = FULL`
//! (`[spool] sync = "full"`) syncs every commit, at a large cost in appends per second.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

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
}

/// Figures for health lines and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of line protocol waiting (not counting SQLite's own overhead).
    pub bytes: u64,
    pub chunks: u64,
    pub lines: u64,
    /// When the oldest waiting chunk was appended, in Unix milliseconds.
    pub oldest_ms: Option<i64>,
    /// Lines deleted before every output had them, since the spool was created.
    pub dropped_lines: u64,
    /// Lines appended since this process started.
    pub appended_lines: u64,
}

/// A run of chunks read for one output, joined into one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Id of the last chunk in the batch: the cursor after it is delivered.
    pub last_id: i64,
    pub lines: usize,
    /// Lines separated by `\n`, with a trailing `\n`.
    pub body: Vec<u8>,
}

/// How hard the spool syncs to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// WAL sync at checkpoints: survives a crash of the process, may lose the last commits on
    /// power loss.
    #[default]
    Normal,
    /// Sync every commit.
    Full,
}

/// The appending side of the spool. One process owns it.
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    max_bytes: u64,
    stats: SpoolStats,
}

fn open_conn(path: &Path, sync: SyncPolicy) -> Result<Connection, SpoolError> {
    let open_err = |source| SpoolError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    let sync = match sync {
        SyncPolicy::Normal => "NORMAL",
        SyncPolicy::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(open_err)?;
    Ok(conn)
}

impl Spool {
    /// Opens (or creates) the spool and registers the outputs that read it. Cursors of outputs
    /// no longer configured are removed, so a retired output does not pin the spool.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        sync: SyncPolicy,
        outputs: &[String],
    ) -> Result<Self, SpoolError> {
        let mut conn = open_conn(path, sync)?;
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
        let mut spool = Spool {
            conn,
            max_bytes,
            stats: SpoolStats::default(),
        };
        spool.trim()?;
        spool.refresh_stats()?;
        Ok(spool)
    }

    fn refresh_stats(&mut self) -> Result<(), SpoolError> {
        let (bytes, chunks, lines, oldest): (i64, i64, i64, Option<i64>) = self.conn.query_row(
            "SELECT COALESCE(SUM(bytes),0), COUNT(*), COALESCE(SUM(lines),0), MIN(at_ms) FROM chunk",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let dropped: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM counter WHERE name = 'dropped_lines'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        self.stats.bytes = bytes as u64;
        self.stats.chunks = chunks as u64;
        self.stats.lines = lines as u64;
        self.stats.oldest_ms = oldest;
        self.stats.dropped_lines = dropped.unwrap_or(0) as u64;
        Ok(())
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Appends chunks in one transaction; each chunk is a list of lines. Then enforces the cap.
    pub fn append(&mut self, chunks: &[Vec<String>], now_ms: i64) -> Result<(), SpoolError> {
        let tx = self.conn.transaction()?;
        let mut added_bytes = 0u64;
        let mut added_lines = 0u64;
        let mut added_chunks = 0u64;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chunk (at_ms, lines, bytes, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                let size: usize = chunk.iter().map(|l| l.len() + 1).sum();
                let mut body = Vec::with_capacity(size);
                for line in chunk {
                    body.extend_from_slice(line.as_bytes());
                    body.push(b'\n');
                }
                insert.execute(params![now_ms, chunk.len() as i64, size as i64, body])?;
                added_bytes += size as u64;
                added_lines += chunk.len() as u64;
                added_chunks += 1;
            }
        }
        tx.commit()?;
        if added_chunks > 0 && self.stats.oldest_ms.is_none() {
            self.stats.oldest_ms = Some(now_ms);
        }
        self.stats.bytes += added_bytes;
        self.stats.lines += added_lines;
        self.stats.chunks += added_chunks;
        self.stats.appended_lines += added_lines;
        if self.stats.bytes > self.max_bytes {
            self.enforce_cap()?;
        }
        Ok(())
    }

    /// Deletes the oldest chunks until the spool fits its cap; counts their lines as dropped.
    fn enforce_cap(&mut self) -> Result<(), SpoolError> {
        let excess = self.stats.bytes.saturating_sub(self.max_bytes) as i64;
        let tx = self.conn.transaction()?;
        // The smallest id whose running total of bytes covers the excess.
        let cut: Option<i64> = tx
            .query_row(
                "SELECT id FROM (SELECT id, SUM(bytes) OVER (ORDER BY id) AS run FROM chunk)
                 WHERE run >= ?1 ORDER BY id LIMIT 1",
                [excess],
                |r| r.get(0),
            )
            .optional()?;
        let Some(cut) = cut else {
            return Ok(());
        };
        let lines: i64 = tx.query_row(
            "SELECT COALESCE(SUM(lines),0) FROM chunk WHERE id <= ?1",
            [cut],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM chunk WHERE id <= ?1", [cut])?;
        tx.execute(
            "INSERT INTO counter (name, value) VALUES ('dropped_lines', ?1)
             ON CONFLICT(name) DO UPDATE SET value = value + ?1",
            [lines],
        )?;
        tx.commit()?;
        tracing::warn!(
            dropped_lines = lines,
            max_bytes = self.max_bytes,
            "spool full: oldest records dropped"
        );
        self.refresh_stats()
    }

    /// Deletes chunks every output has delivered.
    pub fn trim(&mut self) -> Result<(), SpoolError> {
        let outputs: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM cursor", [], |r| r.get(0))?;
        let deleted = if outputs == 0 {
            // Nobody reads the spool: nothing needs to be kept.
            self.conn.execute("DELETE FROM chunk", [])?
        } else {
            self.conn.execute(
                "DELETE FROM chunk WHERE id <= (SELECT MIN(acked) FROM cursor)",
                [],
            )?
        };
        if deleted > 0 {
            self.refresh_stats()?;
        }
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

    /// The oldest undelivered chunks, whole, up to about `max_lines` lines (at least one chunk).
    pub fn next_batch(&mut self, max_lines: usize) -> Result<Option<Batch>, SpoolError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, lines, body FROM chunk WHERE id > ?1 ORDER BY id LIMIT 1000",
        )?;
        let mut rows = stmt.query([self.acked])?;
        let mut batch: Option<Batch> = None;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let lines = row.get::<_, i64>(1)? as usize;
            let body: Vec<u8> = row.get(2)?;
            match batch.as_mut() {
                Some(b) if b.lines + lines > max_lines => break,
                Some(b) => {
                    b.last_id = id;
                    b.lines += lines;
                    b.body.extend_from_slice(&body);
                }
                None => {
                    batch = Some(Batch {
                        last_id: id,
                        lines,
                        body,
                    })
                }
            }
        }
        Ok(batch)
    }

    /// Records that everything up to `last_id` is delivered.
    pub fn ack(&mut self, last_id: i64) -> Result<(), SpoolError> {
        self.conn.execute(
            "UPDATE cursor SET acked = ?2 WHERE output = ?1 AND acked < ?2",
            params![self.output, last_id],
        )?;
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
    fn each_output_reads_from_its_own_cursor_and_acked_chunks_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let outputs = vec!["a".to_string(), "b".to_string()];
        let mut spool = Spool::open(&path, 1 << 20, SyncPolicy::Normal, &outputs).unwrap();
        spool.append(&[lines("x", 3), lines("y", 2)], 1000).unwrap();
        assert_eq!(spool.stats().lines, 5);

        let mut a = SpoolReader::open(&path, "a").unwrap();
        let mut b = SpoolReader::open(&path, "b").unwrap();
        // Batch limit 4 lines: the first chunk (3) fits, the second (2) would exceed it.
        let first = a.next_batch(4).unwrap().unwrap();
        assert_eq!(first.lines, 3);
        a.ack(first.last_id).unwrap();
        let second = a.next_batch(4).unwrap().unwrap();
        assert_eq!(second.lines, 2);
        assert!(second.body.starts_with(b"m,k=y v=0i 0\n"));
        a.ack(second.last_id).unwrap();
        assert_eq!(a.next_batch(4).unwrap(), None);

        // Output b has delivered nothing, so nothing may be trimmed yet.
        spool.trim().unwrap();
        assert_eq!(spool.stats().lines, 5);
        let all = b.next_batch(100).unwrap().unwrap();
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
        let mut spool = Spool::open(&path, 300, SyncPolicy::Normal, &["out".into()]).unwrap();
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
        let batch = reader.next_batch(1000).unwrap().unwrap();
        assert!(batch.body.starts_with(b"m,k=1 "), "the newest survive");
        // The dropped count survives a restart.
        drop(spool);
        let spool = Spool::open(&path, 300, SyncPolicy::Normal, &["out".into()]).unwrap();
        assert_eq!(spool.stats().dropped_lines, 10);
    }

    #[test]
    fn what_is_left_at_start_up_is_read_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        {
            let mut spool =
                Spool::open(&path, 1 << 20, SyncPolicy::Normal, &["out".into()]).unwrap();
            spool.append(&[lines("old", 1)], 1).unwrap();
            spool.append(&[lines("new", 1)], 2).unwrap();
        }
        let spool = Spool::open(&path, 1 << 20, SyncPolicy::Normal, &["out".into()]).unwrap();
        assert_eq!(spool.stats().oldest_ms, Some(1));
        let mut reader = SpoolReader::open(&path, "out").unwrap();
        let batch = reader.next_batch(1).unwrap().unwrap();
        assert!(batch.body.starts_with(b"m,k=old"));
    }
}
