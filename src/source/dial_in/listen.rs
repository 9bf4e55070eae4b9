//! The `[[dial_in]]` listener: DTUs connect, send their registration, and are handed to their
//! own task ([`super::dtu`]).
//!
//! **Every peer is hostile until registered**, and a registration is not authentication
//! (anyone who knows an IMEI can send it). A peer outside `allow`, over `max_connections`,
//! over `max_unregistered` (connections that have not registered yet: the half-open bound) or
//! connecting more often than `max_connects_per_minute` from one address is closed at once.
//! A connection whose first bytes match no DTU is closed as soon as they cannot, or after
//! `registration_timeout`; before registering it may send at most [`FIRST_BYTES_MAX`] bytes.
//! So an unknown peer costs a few KB, a log line at most every [`LOG_EVERY`] per listener
//! (with the bytes it sent in hex and as text, for the installer to copy into the config), and
//! an entry among the unknown DTUs of `/api/health`. Every refusal is counted by reason in
//! `shopfloor_dial_in_refused_total`.
//!
//! **TLS**, when `tls_cert` and `tls_key` are set: the handshake is done in the connection's
//! own task within `registration_timeout`, as on the `[[hj212]]` port.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc};
use tracing::{info, warn};

use super::config::DialInListener;
use super::dtu::{self, Attached, DtuTask};
use super::stream::{Identified, Identity, ascii, hex, identify};
use super::{REFUSED, UnknownDtu, UnknownDtus};
use crate::metrics::Metrics;
use crate::model::SourceEvent;
use crate::shutdown::Shutdown;
use crate::source::hj212::listen::{Gate, Io, accept};

/// The most bytes a connection may send before it has registered.
pub const FIRST_BYTES_MAX: usize = 512;
/// How many first bytes of an unknown connection are logged and listed.
pub const SHOWN_BYTES: usize = 64;
/// A refusal is logged at most this often per listener (the counters count every one).
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// After the start, DTUs get this long to dial in before the ones that have not are logged,
/// in one line per listener (their devices are down, with the reason, in `/api/health` from
/// their first poll on). DTUs reconnect within seconds to a minute of losing their server.
pub const CONNECT_GRACE: Duration = Duration::from_secs(60);
/// How many names of DTUs not connected that line shows.
pub const NAMES_SHOWN: usize = 5;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot listen for DTUs on {addr} ([[dial_in]] `{id}`): {source}; change `listen` or free the port"
    )]
    Bind {
        id: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("[[dial_in]] `{id}`: {reason}; correct `{key}` (`shopfloor check` tells the same)")]
    Tls {
        id: String,
        key: &'static str,
        reason: String,
    },
}

pub use crate::source::hj212::listen::Bound;

impl Bound {
    /// The address the port is bound to (the port the OS chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Binds the listener's port and reads its TLS files, so that a port in use or an unusable
/// certificate stops the agent's start with a clear error.
pub fn bind(cfg: &DialInListener) -> Result<Bound, ListenError> {
    let tls = cfg
        .tls()
        .map_err(|(key, reason)| ListenError::Tls {
            id: cfg.id.clone(),
            key,
            reason,
        })?
        .map(tokio_rustls::TlsAcceptor::from);
    let err = |source| ListenError::Bind {
        id: cfg.id.clone(),
        addr: cfg.listen,
        source,
    };
    let listener = crate::source::hj212::listen::listen_on(cfg.listen).map_err(err)?;
    Ok(Bound { listener, tls })
}

/// What every connection of one listener shares.
struct Shared {
    id: Arc<str>,
    identities: Vec<Identity>,
    /// Each DTU's task, by index in `identities`.
    dtus: Vec<(Arc<str>, dtu::Handoff)>,
    registration_timeout: Duration,
    unregistered: Arc<Semaphore>,
    metrics: Metrics,
    /// The refusal counters by reason, made once: a flood is refused without a lookup.
    refused: Vec<(&'static str, Arc<std::sync::atomic::AtomicU64>)>,
    unknown: UnknownDtus,
    log: Mutex<(Option<Instant>, u64)>,
}

/// The reasons a connection is refused or closed before registering.
const REASONS: [&str; 9] = [
    "not_allowed",
    "connect_rate",
    "connections",
    "unregistered",
    "tls",
    "unknown_registration",
    "registration_timeout",
    "silent",
    "closed",
];

impl Shared {
    /// Counts a refusal by reason and logs it, at most once per [`LOG_EVERY`].
    fn refuse(&self, reason: &'static str, peer: SocketAddr, detail: &str) {
        self.refuse_with(reason, peer, || detail.to_string());
    }

    /// [`Shared::refuse`], with the log's words made only when a line is logged.
    fn refuse_with(&self, reason: &'static str, peer: SocketAddr, detail: impl FnOnce() -> String) {
        match self.refused.iter().find(|(r, _)| *r == reason) {
            Some((_, counter)) => counter.fetch_add(1, Ordering::Relaxed),
            None => {
                refused_counter(&self.metrics, &self.id, reason).fetch_add(1, Ordering::Relaxed)
            }
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.1 += 1;
        if log.0.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            let detail = detail();
            warn!(listener = %self.id, %peer, reason, refused = log.1, "dial-in: {detail} (refusals since the last such line; all are counted in {REFUSED})");
            *log = (Some(Instant::now()), 0);
        }
    }

    /// An unknown connection's first bytes: refused, logged and listed for `/api/health`.
    fn unknown(&self, reason: &'static str, peer: SocketAddr, first: &[u8]) {
        let shown = &first[..first.len().min(SHOWN_BYTES)];
        let detail = match reason {
            "silent" => {
                "a connection that sent nothing within `registration_timeout`, closed".to_string()
            }
            _ => format!(
                "a connection whose first bytes match no [[dial_in.dtu]] registration, closed: \
                 hex {} | text {:?}. If this is your DTU, put its registration into the config \
                 (`registration_hex = \"{}\"`)",
                hex(shown),
                ascii(shown),
                hex(shown)
            ),
        };
        self.refuse(reason, peer, &detail);
        if first.is_empty() {
            // Nothing to copy into a config: counted and logged, not listed.
            return;
        }
        self.unknown.note(UnknownDtu {
            listener: self.id.to_string(),
            peer: peer.to_string(),
            first_bytes_hex: hex(shown),
            first_bytes_ascii: ascii(shown),
            reason,
            last_seen: Timestamp::now(),
            times: 1,
        });
    }
}

fn refused_counter(
    metrics: &Metrics,
    listener: &str,
    reason: &'static str,
) -> Arc<std::sync::atomic::AtomicU64> {
    metrics.counter(
        REFUSED,
        "Dial-in connections refused or closed before registering, by reason: not_allowed, \
         connect_rate, connections, unregistered, tls, unknown_registration, \
         registration_timeout, silent, closed.",
        &[("listener", listener), ("reason", reason)],
    )
}

/// Accepts DTUs until `shutdown`, and runs one task per configured DTU.
pub async fn run(
    mut cfg: DialInListener,
    bound: Bound,
    unknown: UnknownDtus,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let mut tasks = Vec::new();
    let mut dtus = Vec::new();
    let mut identities = Vec::new();
    let mut connections = Vec::new();
    // The DTUs' configs are planned into their tasks and not kept (a thousand DTUs' devices).
    let dtu_count = cfg.dtus.len();
    for dtu in std::mem::take(&mut cfg.dtus) {
        let Ok(identity) = dtu.identity() else {
            continue;
        };
        let (tx, rx) = dtu::arrivals();
        let task = DtuTask::new(&dtu, &cfg.id, &metrics);
        connections.push((Arc::<str>::from(task.id()), task.connections()));
        dtus.push((Arc::from(task.id()), tx));
        identities.push(identity);
        tasks.push(tokio::spawn(dtu::run(
            task,
            rx,
            events.clone(),
            shutdown.clone(),
        )));
    }
    let shared = Arc::new(Shared {
        id: Arc::from(cfg.id.as_str()),
        identities,
        dtus,
        registration_timeout: cfg.registration_timeout,
        unregistered: Arc::new(Semaphore::new(cfg.max_unregistered)),
        refused: REASONS
            .iter()
            .map(|r| (*r, refused_counter(&metrics, &cfg.id, r)))
            .collect(),
        metrics,
        unknown,
        log: Mutex::new((None, 0)),
    });
    let mut gate = Gate::new(
        cfg.allowed(),
        cfg.max_connects_per_minute,
        cfg.max_connections,
        shared.unregistered.clone(),
    );
    tasks.push(tokio::spawn(not_connected_summary(
        shared.id.clone(),
        connections,
        shutdown.clone(),
    )));
    let labels = [("listener", cfg.id.as_str())];
    let peak_open = shared.metrics.gauge(
        "shopfloor_dial_in_connections_peak",
        "The most connections a dial-in listener has held open at once (registered or not) since the start; at most `max_connections`.",
        &labels,
    );
    let peak_unregistered = shared.metrics.gauge(
        "shopfloor_dial_in_unregistered_peak",
        "The most connections a dial-in listener has held open at once that had not registered yet, since the start; at most `max_unregistered`.",
        &labels,
    );
    let Bound { listener, tls } = bound;
    info!(listener = %cfg.id, addr = %cfg.listen, dtus = dtu_count, tls = tls.is_some(), "listening for dial-in DTUs");
    loop {
        let Some((stream, peer)) = accept(&listener, &mut shutdown, &cfg.id, "dial-in").await
        else {
            break;
        };
        let (slot, unregistered) = match gate.admit(peer.ip()) {
            Ok(permits) => {
                let open = cfg.max_connections.saturating_sub(gate.free_slots());
                peak_open.fetch_max(open as u64, Ordering::Relaxed);
                let waiting = cfg
                    .max_unregistered
                    .saturating_sub(shared.unregistered.available_permits());
                peak_unregistered.fetch_max(waiting as u64, Ordering::Relaxed);
                permits
            }
            Err(turned) => {
                shared.refuse_with(turned.reason("unregistered"), peer, || {
                    turned.detail("`max_unregistered` connections have not registered yet")
                });
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + shared.registration_timeout;
            let stream: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
                    let done = tokio::select! {
                        _ = stop.wait() => return,
                        done = handshake => done,
                    };
                    match done {
                        Ok(Ok(tls)) => Box::new(tls),
                        _ => {
                            shared.refuse(
                                "tls",
                                peer,
                                "no TLS handshake within `registration_timeout` (a DTU speaking plain TCP, or one that does not trust `tls_cert`), closed",
                            );
                            return;
                        }
                    }
                }
            };
            let registered = tokio::select! {
                _ = stop.wait() => return,
                r = register(&shared, stream, peer, deadline) => r,
            };
            drop(unregistered);
            let Some((index, stream, rest)) = registered else {
                return;
            };
            let Some((name, tx)) = shared.dtus.get(index) else {
                return;
            };
            info!(listener = %shared.id, %peer, dtu = %name, "DTU registered");
            let attached = Attached {
                stream,
                peer,
                rest,
                slot,
            };
            tx.send(attached);
        });
    }
    for (_, handoff) in &shared.dtus {
        handoff.close();
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// After [`CONNECT_GRACE`], logs once the DTUs that have not connected since the start: their
/// count and the first [`NAMES_SHOWN`] names (not a line per DTU or device).
async fn not_connected_summary(
    listener: Arc<str>,
    connections: Vec<(Arc<str>, Arc<std::sync::atomic::AtomicU64>)>,
    mut shutdown: Shutdown,
) {
    tokio::select! {
        _ = shutdown.wait() => return,
        _ = tokio::time::sleep(CONNECT_GRACE) => {}
    }
    let missing: Vec<&str> = connections
        .iter()
        .filter(|(_, n)| n.load(Ordering::Relaxed) == 0)
        .map(|(id, _)| &**id)
        .collect();
    if let Some(line) = not_connected_line(&missing, connections.len()) {
        warn!(listener = %listener, missing = missing.len(), "{line}");
    }
}

/// The words of [`not_connected_summary`]'s line; `None` when every DTU has connected.
fn not_connected_line(missing: &[&str], of: usize) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let mut names = missing
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > NAMES_SHOWN {
        names.push_str(&format!(" and {} more", missing.len() - NAMES_SHOWN));
    }
    Some(format!(
        "{} of {of} DTUs have not connected since the start ({names}); their devices are down \
         in /api/health. Check the DTUs' server address and port, and `allow`",
        missing.len()
    ))
}

/// Reads the first bytes until they name a DTU (its index, the stream and the bytes after the
/// registration), or cannot, or the deadline passes (refused and noted; `None`).
async fn register(
    shared: &Shared,
    mut stream: Box<dyn Io>,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<(usize, Box<dyn Io>, Vec<u8>)> {
    let mut first: Vec<u8> = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let room = FIRST_BYTES_MAX - first.len();
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[..room.min(256)])).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => {
                // Closed (or failed) before registering.
                if first.is_empty() {
                    shared.refuse(
                        "closed",
                        peer,
                        "a connection closed before it sent anything (a port scan or a connection flood)",
                    );
                } else {
                    shared.unknown("unknown_registration", peer, &first);
                }
                return None;
            }
            Err(_) => {
                return match identify(&shared.identities, &first, true) {
                    Identified::Dtu { index, len } => Some((index, stream, first.split_off(len))),
                    _ if first.is_empty() => {
                        shared.unknown("silent", peer, &first);
                        None
                    }
                    _ => {
                        shared.unknown("registration_timeout", peer, &first);
                        None
                    }
                };
            }
        };
        first.extend_from_slice(&buf[..n]);
        let full = first.len() >= FIRST_BYTES_MAX;
        match identify(&shared.identities, &first, full) {
            Identified::Dtu { index, len } => {
                let rest = first.split_off(len);
                return Some((index, stream, rest));
            }
            Identified::NeedMore if !full => {}
            _ => {
                shared.unknown("unknown_registration", peer, &first);
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtus_not_connected_are_one_line_with_the_first_names() {
        assert_eq!(not_connected_line(&[], 3), None);
        let names: Vec<String> = (1..=7).map(|n| format!("dtu-{n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let line = not_connected_line(&names, 1000).expect("a line");
        assert!(
            line.starts_with(
                "7 of 1000 DTUs have not connected since the start (`dtu-1`, `dtu-2`, `dtu-3`, \
                 `dtu-4`, `dtu-5` and 2 more)"
            ),
            "{line}"
        );
    }
}
