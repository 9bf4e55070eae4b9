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
use tokio::net::TcpListener;
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

/// A listener's bound port and, with TLS, its acceptor.
pub struct Bound {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

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
    let std = std::net::TcpListener::bind(cfg.listen).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    let listener = TcpListener::from_std(std).map_err(err)?;
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
    unknown: UnknownDtus,
    log: Mutex<(Option<Instant>, u64)>,
}

impl Shared {
    /// Counts a refusal by reason and logs it, at most once per [`LOG_EVERY`].
    fn refuse(&self, reason: &'static str, peer: SocketAddr, detail: &str) {
        self.metrics
            .counter(
                REFUSED,
                "Dial-in connections refused or closed before registering, by reason: \
                 not_allowed, connect_rate, connections, unregistered, tls, \
                 unknown_registration, registration_timeout, silent, too_long.",
                &[("listener", &self.id), ("reason", reason)],
            )
            .fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.1 += 1;
        if log.0.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
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
    // The DTUs' configs are planned into their tasks and not kept (a thousand DTUs' devices).
    let dtu_count = cfg.dtus.len();
    for dtu in std::mem::take(&mut cfg.dtus) {
        let Ok(identity) = dtu.identity() else {
            continue;
        };
        let (tx, rx) = dtu::arrivals();
        let task = DtuTask::new(&dtu, &cfg.id, &metrics);
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
    let Bound { listener, tls } = bound;
    info!(listener = %cfg.id, addr = %cfg.listen, dtus = dtu_count, tls = tls.is_some(), "listening for dial-in DTUs");
    loop {
        let Some((stream, peer)) = accept(&listener, &mut shutdown, &cfg.id, "dial-in").await
        else {
            break;
        };
        let (slot, unregistered) = match gate.admit(peer.ip()) {
            Ok(permits) => permits,
            Err(turned) => {
                let detail =
                    turned.detail("`max_unregistered` connections have not registered yet");
                shared.refuse(turned.reason("unregistered"), peer, &detail);
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
                if !first.is_empty() {
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
