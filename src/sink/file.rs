//! Appends line protocol to a local file: the local store of `shopfloor demo`, and a way to keep
//! a plain-text copy of everything beside a remote store.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::SendError;

#[derive(Debug, Clone)]
pub struct FileWriter {
    name: String,
    path: PathBuf,
}

impl FileWriter {
    pub fn new(name: &str, path: &Path) -> Self {
        FileWriter {
            name: name.to_string(),
            path: path.to_path_buf(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends and syncs one batch. A full disk or a missing directory is retried, like a store
    /// that is down: the records stay in the spool meanwhile. The directory, the open, the
    /// write and the sync are one job on the blocking pool (one hand-over, not one each).
    pub async fn send(&self, body: &[u8]) -> Result<(), SendError> {
        let path = self.path.clone();
        let body = body.to_vec();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(&body)?;
            file.sync_data()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        written.map_err(|e| SendError::Retry {
            reason: format!("cannot write {}: {e}", self.path.display()),
            after: None,
        })
    }
}

/// Keeps a batch the store rejected, with the store's reason, for a person to look at.
///
/// The file is bounded: when this entry would take it past `max_bytes`, it is renamed to
/// `<file>.1`, replacing the one before, and a new file starts; the two together hold at
/// most about twice `max_bytes` (an entry larger than the bound still goes in whole).
/// Returns how many rejected lines went with the replaced `<file>.1`.
pub async fn append_dead_letter(
    path: &Path,
    max_bytes: u64,
    status: u16,
    message: &str,
    body: &[u8],
) -> std::io::Result<u64> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let reason = message.replace('\n', " ");
    let header = format!(
        "# {} rejected with {status}: {reason}\n",
        jiff::Timestamp::now()
    );
    let size = match tokio::fs::metadata(path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let mut deleted = 0;
    if size > 0 && size + (header.len() + body.len()) as u64 > max_bytes {
        let previous = previous_dead_letter(path);
        deleted = match tokio::fs::File::open(&previous).await {
            Ok(file) => records_in(file).await?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        tokio::fs::rename(path, &previous).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    file.write_all(header.as_bytes()).await?;
    file.write_all(body).await?;
    file.sync_data().await?;
    Ok(deleted)
}

/// Where the dead-letter file's previous generation is kept: `<file>.1`.
pub fn previous_dead_letter(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The records in a dead-letter file: its lines but the `#` lines with the reasons, read a
/// piece at a time (the file may be tens of megabytes on a small gateway).
async fn records_in(file: tokio::fs::File) -> std::io::Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut reader = tokio::io::BufReader::new(file);
    let mut buf = vec![0; 64 * 1024];
    let (mut records, mut line_start, mut comment) = (0, true, false);
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(records + u64::from(!line_start && !comment));
        }
        for &b in &buf[..n] {
            if line_start {
                comment = b == b'#';
            }
            line_start = b == b'\n';
            if line_start && !comment {
                records += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn entry(path: &Path, max: u64, records: &[&str]) -> u64 {
        let body: String = records.iter().map(|r| format!("{r}\n")).collect();
        append_dead_letter(path, max, 400, "field type conflict", body.as_bytes())
            .await
            .expect("dead letter written")
    }

    fn records(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn a_full_dead_letter_file_becomes_the_previous_one_and_the_oldest_are_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dead-letter-x.lp");
        let previous = previous_dead_letter(&path);
        assert_eq!(previous, dir.path().join("dead-letter-x.lp.1"));
        // Each entry: a header of about 80 bytes and a record of 8 ("m v=\"1\"\n" and so
        // on); a bound of 200 bytes holds two entries, so the third starts a new file.
        let max = 200;
        assert_eq!(entry(&path, max, &["m v=\"1\""]).await, 0);
        assert_eq!(entry(&path, max, &["m v=\"2\"", "m v=\"3\""]).await, 0);
        assert_eq!(records(&path), ["m v=\"1\"", "m v=\"2\"", "m v=\"3\""]);
        // The third moves the first two entries (three records) to `.1`; nothing was there.
        assert_eq!(entry(&path, max, &["m v=\"4\""]).await, 0);
        assert_eq!(records(&previous), ["m v=\"1\"", "m v=\"2\"", "m v=\"3\""]);
        assert_eq!(records(&path), ["m v=\"4\""]);
        assert_eq!(entry(&path, max, &["m v=\"5\""]).await, 0);
        // The sixth replaces `.1`: its three records are gone and counted.
        assert_eq!(entry(&path, max, &["m v=\"6\""]).await, 3);
        assert_eq!(records(&previous), ["m v=\"4\"", "m v=\"5\""]);
        assert_eq!(records(&path), ["m v=\"6\""]);
        for file in [&path, &previous] {
            let size = std::fs::metadata(file).expect("file").len();
            assert!(size <= max, "{} is {size} bytes", file.display());
        }
    }

    #[tokio::test]
    async fn an_entry_larger_than_the_bound_is_kept_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dead-letter-x.lp");
        let big: Vec<String> = (0..50).map(|i| format!("m v=\"{i}\"")).collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        assert_eq!(entry(&path, 100, &big).await, 0);
        assert_eq!(records(&path).len(), 50);
        // The next entry moves it to `.1`, the one after deletes its 50 records.
        assert_eq!(entry(&path, 100, &["m v=\"a\""]).await, 0);
        assert_eq!(entry(&path, 100, &["m v=\"b\""]).await, 50);
    }

    #[tokio::test]
    async fn records_are_counted_without_the_reasons_and_with_a_last_line_unended() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        // 2 reasons, 3 records, the last without its newline.
        std::fs::write(&path, "# r\na v=1\nb v=2\n# r\nc v=3").expect("write");
        let file = tokio::fs::File::open(&path).await.expect("open");
        assert_eq!(records_in(file).await.expect("read"), 3);
        std::fs::write(&path, "").expect("write");
        let file = tokio::fs::File::open(&path).await.expect("open");
        assert_eq!(records_in(file).await.expect("read"), 0);
    }
}
