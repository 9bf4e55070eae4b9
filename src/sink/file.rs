//! Appends line protocol to a local file: the local store of `shopfloor demo`, and a way to keep
//! a plain-text copy of everything beside a remote store.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::influx::SendError;

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
    /// that is down: the records stay in the spool meanwhile.
    pub async fn send(&self, body: &[u8]) -> Result<(), SendError> {
        let retry = |e: std::io::Error| SendError::Retry {
            reason: format!("cannot write {}: {e}", self.path.display()),
            after: None,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(retry)?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(retry)?;
        file.write_all(body).await.map_err(retry)?;
        file.sync_data().await.map_err(retry)?;
        Ok(())
    }
}

/// Keeps a batch the store rejected, with the store's reason, for a person to look at.
pub async fn append_dead_letter(
    path: &Path,
    status: u16,
    message: &str,
    body: &[u8],
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let reason = message.replace('\n', " ");
    let header = format!(
        "# {} rejected with {status}: {reason}\n",
        jiff::Timestamp::now()
    );
    file.write_all(header.as_bytes()).await?;
    file.write_all(body).await?;
    file.sync_data().await
}
