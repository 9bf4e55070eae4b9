//! Peers that misbehave on purpose, and the real `shopfloor run` process to aim them at.
//!
//! - [`ModbusServer`]: a Modbus TCP server with one [`ModbusMode`] of misbehaviour (never
//!   answering, answering late, with the wrong transaction or unit id or protocol id, a length of 65535, random
//!   bytes, hanging up, a byte count that does not match the quantity, one byte at a time), or
//!   honest. Registers hold `1000 + address`, so a test can tell a correct answer.
//! - [`Store`]: an HTTP server that takes InfluxDB writes, with a [`StoreMode`] the test can
//!   switch while the agent runs (accepting, never answering, 500 forever, slow).
//! - [`Agent`]: the binary, with its log, `/metrics` and its memory as `/proc` reports it.
//!
//! Everything is plain tokio sockets: these peers are hostile in ways no real service can be
//! told to be.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");

// ---------------------------------------------------------------------------------------------
// Modbus
// ---------------------------------------------------------------------------------------------

/// What a [`ModbusServer`] does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModbusMode {
    /// Answers correctly.
    Honest,
    /// Reads requests and never answers.
    NeverReplies,
    /// Answers correctly, this long after the request.
    Late(Duration),
    /// Answers with the request's transaction id plus one (Modbus TCP only: RTU has none).
    WrongTransactionId,
    /// Sends a header whose length field is 65535, two bytes of PDU, then nothing (Modbus TCP
    /// only).
    Length65535ThenSilence,
    /// Answers with the checksum's bits flipped (RTU only: Modbus TCP has no checksum).
    BadChecksum,
    /// Sends the unit, the function and a byte count of 255, more than any frame holds, two
    /// bytes of data, then nothing (RTU only).
    ByteCount255ThenSilence,
    /// Sends 300 pseudo-random bytes for every request.
    RandomBytes,
    /// Closes the connection once a request has arrived.
    ClosesAfterRequest,
    /// Answers for the unit id one above the one asked.
    OtherUnit,
    /// Answers a read of n registers with n − 1 (header and byte count consistent with each
    /// other, but not with the request).
    ShortByteCount,
    /// Answers correctly, one byte per write with this pause in between.
    OneByteAtATime(Duration),
    /// Answers with a frame whose MBAP protocol id is 1, not 0, and whose length field claims
    /// 100 bytes more than follow (Modbus TCP only): another protocol on the port, or garbage.
    ProtocolIdNotZero,
}

/// How frames travel over the server's TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Modbus TCP: the MBAP header with transaction id and length.
    Tcp,
    /// RTU frames with their CRC, as a transparent serial server forwards them
    /// (`transport = "rtu_over_tcp"`): no header, the length follows from the function.
    Rtu,
}

/// A Modbus server on a loopback port, until the test's runtime ends.
pub struct ModbusServer {
    pub addr: SocketAddr,
}

impl ModbusServer {
    /// A Modbus TCP server.
    pub async fn start(mode: ModbusMode) -> ModbusServer {
        Self::start_framed(mode, Framing::Tcp).await
    }

    pub async fn start_framed(mode: ModbusMode, framing: Framing) -> ModbusServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the Modbus server");
        let addr = listener.local_addr().expect("listener address");
        tokio::spawn(async move {
            let mut seed = 0x2545_F491_4F6C_DD1D_u64;
            while let Ok((stream, _)) = listener.accept().await {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                tokio::spawn(serve_modbus(stream, mode, framing, seed));
            }
        });
        ModbusServer { addr }
    }
}

/// One request as the server read it.
struct Request {
    transaction: u16,
    unit: u8,
    function: u8,
    start: u16,
    count: u16,
}

async fn read_request(stream: &mut TcpStream, framing: Framing) -> Option<Request> {
    if framing == Framing::Rtu {
        // unit, function, start, count, CRC: a read request is always 8 bytes.
        let mut frame = [0u8; 8];
        stream.read_exact(&mut frame).await.ok()?;
        if crc16(&frame[..6]).to_le_bytes() != frame[6..] {
            return None;
        }
        return Some(Request {
            transaction: 0,
            unit: frame[0],
            function: frame[1],
            start: u16::from_be_bytes([frame[2], frame[3]]),
            count: u16::from_be_bytes([frame[4], frame[5]]),
        });
    }
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).await.ok()?;
    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let mut pdu = vec![0u8; len.saturating_sub(1)];
    stream.read_exact(&mut pdu).await.ok()?;
    if pdu.len() < 5 {
        return None;
    }
    Some(Request {
        transaction: u16::from_be_bytes([header[0], header[1]]),
        unit: header[6],
        function: pdu[0],
        start: u16::from_be_bytes([pdu[1], pdu[2]]),
        count: u16::from_be_bytes([pdu[3], pdu[4]]),
    })
}

/// CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF), sent low byte first.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFF_u16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The correct answer to `r`, with `values` registers (or bits) instead of `r.count`.
fn answer(r: &Request, transaction: u16, unit: u8, values: u16, framing: Framing) -> Vec<u8> {
    let mut pdu = vec![r.function];
    match r.function {
        1 | 2 => {
            let bytes = usize::from(values).div_ceil(8);
            pdu.push(bytes as u8);
            // Every other bit set, from the start address.
            pdu.extend((0..bytes).map(|_| 0b0101_0101u8));
        }
        _ => {
            pdu.push((2 * values) as u8);
            for i in 0..values {
                pdu.extend_from_slice(&(1000 + r.start + i).to_be_bytes());
            }
        }
    }
    let mut frame = Vec::with_capacity(9 + pdu.len());
    match framing {
        Framing::Tcp => {
            frame.extend_from_slice(&transaction.to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
            frame.push(unit);
            frame.extend_from_slice(&pdu);
        }
        Framing::Rtu => {
            frame.push(unit);
            frame.extend_from_slice(&pdu);
            let crc = crc16(&frame);
            frame.extend_from_slice(&crc.to_le_bytes());
        }
    }
    frame
}

async fn serve_modbus(mut stream: TcpStream, mode: ModbusMode, framing: Framing, seed: u64) {
    let _ = stream.set_nodelay(true);
    let mut rng = seed | 1;
    let framed_only = |only: Framing| {
        assert_eq!(framing, only, "{mode:?} is a {only:?} mode");
    };
    while let Some(r) = read_request(&mut stream, framing).await {
        let honest = answer(&r, r.transaction, r.unit, r.count, framing);
        let sent = match mode {
            ModbusMode::Honest => stream.write_all(&honest).await,
            ModbusMode::NeverReplies => Ok(()),
            ModbusMode::Late(after) => {
                tokio::time::sleep(after).await;
                stream.write_all(&honest).await
            }
            ModbusMode::WrongTransactionId => {
                framed_only(Framing::Tcp);
                let frame = answer(&r, r.transaction.wrapping_add(1), r.unit, r.count, framing);
                stream.write_all(&frame).await
            }
            ModbusMode::Length65535ThenSilence => {
                framed_only(Framing::Tcp);
                let mut frame = honest[..9].to_vec();
                frame[4] = 0xFF;
                frame[5] = 0xFF;
                stream.write_all(&frame).await
            }
            ModbusMode::BadChecksum => {
                framed_only(Framing::Rtu);
                let mut frame = honest.clone();
                let n = frame.len();
                frame[n - 1] ^= 0xFF;
                frame[n - 2] ^= 0xFF;
                stream.write_all(&frame).await
            }
            ModbusMode::ByteCount255ThenSilence => {
                framed_only(Framing::Rtu);
                let frame = [r.unit, r.function, 0xFF, 0x03, 0xE8];
                stream.write_all(&frame).await
            }
            ModbusMode::RandomBytes => {
                let bytes: Vec<u8> = (0..300)
                    .map(|_| {
                        // xorshift64
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng as u8
                    })
                    .collect();
                stream.write_all(&bytes).await
            }
            ModbusMode::ProtocolIdNotZero => {
                framed_only(Framing::Tcp);
                let mut frame = honest.clone();
                frame[3] = 1;
                let length = u16::from_be_bytes([frame[4], frame[5]]) + 100;
                frame[4..6].copy_from_slice(&length.to_be_bytes());
                stream.write_all(&frame).await
            }
            ModbusMode::ClosesAfterRequest => return,
            ModbusMode::OtherUnit => {
                let frame = answer(&r, r.transaction, r.unit.wrapping_add(1), r.count, framing);
                stream.write_all(&frame).await
            }
            ModbusMode::ShortByteCount => {
                let frame = answer(
                    &r,
                    r.transaction,
                    r.unit,
                    r.count.saturating_sub(1),
                    framing,
                );
                stream.write_all(&frame).await
            }
            ModbusMode::OneByteAtATime(pause) => {
                let mut result = Ok(());
                for byte in &honest {
                    result = stream.write_all(&[*byte]).await;
                    if result.is_err() {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
                result
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A store that misbehaves
// ---------------------------------------------------------------------------------------------

/// How the [`Store`] answers write requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// 204 at once, and the lines are kept.
    Accept,
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// 500 for every request.
    Error500,
    /// Answers 204 (keeping the lines) after this long.
    Slow(Duration),
}

/// An InfluxDB-like HTTP endpoint: every request is a write; the body is plain line protocol
/// (the agent's output must have `gzip = false`).
#[derive(Clone)]
pub struct Store {
    pub url: String,
    mode: Arc<Mutex<StoreMode>>,
    lines: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<AtomicU64>,
}

impl Store {
    pub async fn start(mode: StoreMode) -> Store {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the store");
        let url = format!("http://{}", listener.local_addr().expect("store address"));
        let store = Store {
            url,
            mode: Arc::new(Mutex::new(mode)),
            lines: Arc::new(Mutex::new(Vec::new())),
            requests: Arc::new(AtomicU64::new(0)),
        };
        let handle = store.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle.clone().serve(stream));
            }
        });
        store
    }

    pub fn set_mode(&self, mode: StoreMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    fn mode(&self) -> StoreMode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every line the store accepted, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn serve(self, mut stream: TcpStream) {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            // Headers.
            let head_end = loop {
                if let Some(at) = find(&buf, b"\r\n\r\n") {
                    break at + 4;
                }
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let mut chunk = [0u8; 65536];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf[head_end..head_end + length].to_vec();
            buf.drain(..head_end + length);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let accept = match self.mode() {
                StoreMode::Accept => true,
                StoreMode::Silent => {
                    // Hold the connection open, answering nothing, until the client gives up.
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
                StoreMode::Error500 => false,
                StoreMode::Slow(after) => {
                    tokio::time::sleep(after).await;
                    true
                }
            };
            let response: &[u8] = if accept {
                let text = String::from_utf8_lossy(&body);
                self.lines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(text.lines().map(str::to_string));
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"error\":\"it broke\"}\n"
            };
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The agent process
// ---------------------------------------------------------------------------------------------

/// `shopfloor run` on a config, with its log in the config's directory. Dropping it kills the
/// process.
pub struct Agent {
    child: Child,
    log: PathBuf,
    pub web: SocketAddr,
}

impl Agent {
    /// Writes `config` (which must serve the board on `web`) to `dir` and starts the agent.
    pub fn start(dir: &Path, config: &str, web: SocketAddr) -> Agent {
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).expect("write the agent's config");
        let log = dir.join("agent.log");
        let file = std::fs::File::create(&log).expect("agent log");
        let child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&path)
            // No NO_COLOR: the log goes to a file, not a terminal, and must be plain text
            // by that alone (tests/hostile.rs checks it).
            .env_remove("NO_COLOR")
            .env("SHOPFLOOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start shopfloor run");
        Agent { child, log, web }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the agent has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the agent exited ({status})\n{}", self.log());
        }
    }

    /// `/metrics`, parsed: series text (`name{labels}`) → value. Empty until the board answers.
    /// The board answers only to its own names (DNS rebinding), so `Host` is the loopback address.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.web)).await
        else {
            return BTreeMap::new();
        };
        let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            return BTreeMap::new();
        }
        let mut text = String::new();
        let read = stream.read_to_string(&mut text);
        if !matches!(
            tokio::time::timeout(Duration::from_secs(5), read).await,
            Ok(Ok(_))
        ) {
            return BTreeMap::new();
        }
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// One series of `/metrics` (e.g. `shopfloor_device_up{device="a"}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics().await.get(series).copied().unwrap_or(0.0)
    }

    /// Resident memory now and at its peak, in KiB, from `/proc/<pid>/status`.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("cannot read the agent's /proc status: {e}"));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Asserts that resident memory is now less than `limit_kib` above `before_kib`, and that
    /// its peak stayed under 300 MiB (a generous bound for a debug build).
    pub fn assert_memory_grew_less_than(&self, before_kib: u64, limit_kib: u64, when: &str) {
        let (rss, hwm) = self.memory_kib();
        let growth = rss.saturating_sub(before_kib);
        assert!(
            growth < limit_kib,
            "resident memory grew by {growth} KiB {when} ({before_kib} → {rss} KiB)"
        );
        assert!(hwm < 300 * 1024, "peak resident memory {hwm} KiB {when}");
    }

    /// SIGTERM, then a wait of up to ten seconds, then SIGKILL.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address nothing listens on, for the agent's board.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()))
}

/// The `[site]` and `[agent]` tables every hostile test starts from.
pub fn site(data_dir: &Path, web: SocketAddr) -> String {
    format!(
        r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[agent]
data_dir = "{}"
offline_after = "2s"

[web]
listen = "{web}"
"#,
        data_dir.display()
    )
}

// ---------------------------------------------------------------------------------------------
// A small disk
// ---------------------------------------------------------------------------------------------

/// A tmpfs of a few MiB mounted for one test, unmounted on drop (lazily, so a file the agent
/// still holds open does not keep it mounted).
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`"4m"`) at `dir`; the error says why not (not root, no
    /// permission to mount in this container, no `mount` binary).
    pub fn mount(dir: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk {
            dir: dir.to_path_buf(),
        })
    }

    /// Fills the disk with `name` until only about `leave` bytes are free.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join(name);
        let mut file = std::fs::File::create(&path).expect("create the filler file");
        let block = vec![0xA5u8; 64 * 1024];
        let mut written = 0u64;
        while let Ok(n) = file.write(&block) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        file.set_len(written.saturating_sub(leave))
            .expect("shorten the filler file");
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
