//! `shopfloor dtu listen`: a port an installer points a DTU at, to see it arrive.
//!
//! Every connection is shown with its first bytes (hex and text), the configured DTU they
//! match or none, and every packet after them with the time since the last identical one, so
//! the heartbeat and its period show themselves. With a poll asked for, a registered (or any,
//! without a config) connection is sent one read of holding registers (function code 3, read
//! only) after its first bytes and every 10 s after that.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::DialInListener;
use super::stream::{
    self, Expected, Framing, Identified, Identity, Piece, Splitter, ascii, hex, identify,
};

/// What to listen for.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub port: u16,
    /// The DTUs of a config's `[[dial_in]]` listeners, to name what arrives.
    pub dtus: Vec<Known>,
    /// `UNIT:ADDRESS:COUNT` of holding registers to read.
    pub poll: Option<(u8, u16, u16)>,
    pub framing: Framing,
}

/// A configured DTU as the command knows it.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: String,
    pub identity: Identity,
    pub heartbeat: Vec<u8>,
}

/// The DTUs of every listener of a config.
pub fn known(listeners: &[DialInListener]) -> Vec<Known> {
    listeners
        .iter()
        .flat_map(|l| l.dtus.iter())
        .filter_map(|d| {
            Some(Known {
                id: d.id.clone(),
                identity: d.identity().ok()?,
                heartbeat: d.heartbeat_bytes().unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses `UNIT:ADDRESS:COUNT`.
pub fn parse_poll(text: &str) -> Result<(u8, u16, u16), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || {
        format!(
            "--poll `{text}`: write UNIT:ADDRESS:COUNT, e.g. 1:0:10 (unit 1–247, holding registers from ADDRESS, COUNT 1–125)"
        )
    };
    let [unit, address, count] = parts.as_slice() else {
        return Err(bad());
    };
    let unit: u8 = unit.parse().map_err(|_| bad())?;
    let address: u16 = address.parse().map_err(|_| bad())?;
    let count: u16 = count.parse().map_err(|_| bad())?;
    if !(1..=247).contains(&unit) || !(1..=125).contains(&count) {
        return Err(bad());
    }
    Ok((unit, address, count))
}

/// Listens on `port` until the process ends; every line for the installer goes to `lines`.
pub async fn listen(
    options: ListenOptions,
    lines: mpsc::UnboundedSender<String>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", options.port)).await?;
    let _ = lines.send(format!("listening on {}", listener.local_addr()?));
    loop {
        let (stream, peer) = listener.accept().await?;
        let options = options.clone();
        let lines = lines.clone();
        tokio::spawn(async move {
            let _ = lines.send(format!("{peer} connected"));
            let why = connection(stream, peer, &options, &lines).await;
            let _ = lines.send(format!("{peer} closed ({why})"));
        });
    }
}

/// How long the first bytes are collected after the first of them arrives.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(500);
/// Between two polls.
const POLL_EVERY: Duration = Duration::from_secs(10);
/// For one answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    options: &ListenOptions,
    lines: &mpsc::UnboundedSender<String>,
) -> String {
    let say = |line: String| {
        let _ = lines.send(format!("{peer} {line}"));
    };
    let mut buf = [0u8; 1024];
    // The first bytes: what arrives within a moment of the first.
    let mut first = Vec::new();
    let mut until: Option<Instant> = None;
    loop {
        let read = match until {
            None => Ok(stream.read(&mut buf).await),
            Some(t) => tokio::time::timeout_at(t, stream.read(&mut buf)).await,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) if first.is_empty() => return "nothing sent".into(),
            Ok(Ok(n)) if n > 0 && first.len() < 512 => {
                first.extend_from_slice(&buf[..n]);
                until.get_or_insert(Instant::now() + FIRST_BYTES_WAIT);
            }
            _ => break,
        }
    }
    let identities: Vec<Identity> = options.dtus.iter().map(|d| d.identity.clone()).collect();
    let matched = match identify(&identities, &first, true) {
        Identified::Dtu { index, len } => options.dtus.get(index).map(|d| (d, len)),
        _ => None,
    };
    let named = match (&matched, options.dtus.is_empty()) {
        (Some((d, _)), _) => format!("→ {}", d.id),
        (None, true) => "(no config given: copy these into `registration_hex`)".into(),
        (None, false) => "→ no configured DTU (copy these into `registration_hex`)".into(),
    };
    say(format!(
        "first bytes: {} \"{}\" {named}",
        hex(&first),
        ascii(&first)
    ));
    let heartbeat = matched
        .map(|(d, _)| d.heartbeat.clone())
        .unwrap_or_default();
    let mut splitter = Splitter::new(options.framing, heartbeat.clone(), Vec::new(), 4096);
    let mut seen: Vec<(Vec<u8>, Instant)> = Vec::new();
    let mut next_poll = options.poll.map(|_| Instant::now());
    let mut transaction = 0u16;
    loop {
        let poll_at = next_poll.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            _ = tokio::time::sleep_until(poll_at), if next_poll.is_some() => {
                let Some((unit, address, count)) = options.poll else { continue };
                transaction = transaction.wrapping_add(1);
                let expected = Expected { unit, function: 3, count, transaction };
                let request = stream::request(options.framing, &expected, address);
                if stream.write_all(&request).await.is_err() {
                    return "write failed".into();
                }
                splitter.clear();
                let line = poll_answer(&mut stream, &mut splitter, &expected, &mut buf).await;
                let end = u32::from(address) + u32::from(count) - 1;
                say(format!("poll unit {unit} holding {address}..{end}: {line}"));
                next_poll = Some(Instant::now() + POLL_EVERY);
            }
            read = stream.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return "closed by the DTU".into(),
                    Ok(n) => n,
                    Err(e) => return e.to_string(),
                };
                let packet = buf[..n].to_vec();
                let now = Instant::now();
                let last = seen.iter_mut().find(|(p, _)| *p == packet);
                let since = match last {
                    Some((_, at)) => {
                        let s = format!(", {:.1} s after the last", now.duration_since(*at).as_secs_f64());
                        *at = now;
                        s
                    }
                    None => {
                        if seen.len() < 64 {
                            seen.push((packet.clone(), now));
                        }
                        String::new()
                    }
                };
                let what = match &matched {
                    Some((d, _)) if packet == heartbeat => format!(" (heartbeat of {})", d.id),
                    _ => String::new(),
                };
                say(format!("packet {} \"{}\"{what}{since}", hex(&packet), ascii(&packet)));
            }
        }
    }
}

/// Waits for the answer to a poll; what to print.
async fn poll_answer(
    stream: &mut TcpStream,
    splitter: &mut Splitter,
    expected: &Expected,
    buf: &mut [u8],
) -> String {
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        match splitter.next(Some(expected)) {
            Ok(Some(Piece::Answer(data))) => {
                let words: Vec<String> = data
                    .chunks_exact(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]).to_string())
                    .collect();
                return words.join(" ");
            }
            Ok(Some(Piece::Exception(code))) => return format!("exception {code}"),
            Ok(Some(_)) | Err(_) => continue,
            Ok(None) => {}
        }
        match tokio::time::timeout_at(deadline, stream.read(buf)).await {
            Ok(Ok(n)) if n > 0 => {
                if splitter.push(&buf[..n]).is_err() {
                    return "too many bytes without an answer".into();
                }
            }
            Ok(_) => return "the connection closed".into(),
            Err(_) => {
                return format!(
                    "no answer within {} s (check the unit id, the DTU's serial settings and its framing)",
                    POLL_TIMEOUT.as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_is_unit_address_and_count() {
        assert_eq!(parse_poll("1:0:10"), Ok((1, 0, 10)));
        assert!(parse_poll("0:0:10").is_err());
        assert!(parse_poll("1:0:200").is_err());
        assert!(parse_poll("1:0").is_err());
    }
}
