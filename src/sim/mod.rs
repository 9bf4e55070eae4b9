//! `shopfloor sim`: a Modbus TCP server that simulates a small workshop, for the demo, for
//! tests, and for an engineer who wants to try a config before the real machines are wired.
//!
//! The server is written against the bytes of the protocol rather than a server framework: the
//! simulator must be able to misbehave on purpose (late, wrong or missing answers), and every
//! request it receives is visible to tests, which check that the agent only ever reads.

pub mod fault;
pub mod mqtt;
pub mod plc;
pub mod rtu;
pub mod workshop;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::shutdown::Shutdown;
pub use fault::{Fault, FaultKind};
pub use workshop::{METER_UNIT, ScriptedMachine, Workshop};

/// How the simulator frames Modbus on its TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Modbus TCP: MBAP header, no CRC.
    #[default]
    Tcp,
    /// RTU frames (unit, PDU, CRC) in the TCP stream, as a transparent serial server sends
    /// them on from an RS-485 line (and as [`Simulator::serve_rtu`] speaks on a serial line).
    RtuOverTcp,
}

/// Options of `shopfloor sim`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub bind: SocketAddr,
    pub seed: u64,
    pub machines: usize,
    /// 1.0 = states change every few seconds; larger values slow the workshop down.
    pub pace: f64,
    /// Serve the same workshop on this many consecutive ports (from `bind`'s port; with port 0
    /// every listener gets a free port), so a benchmark can give each device its own
    /// connection.
    pub listeners: usize,
    /// Holding registers per machine: the map's 15, then filler that changes every second.
    pub registers: u16,
    pub framing: Framing,
    /// Faults to commit from the start; [`Simulator::set_faults`] changes them later.
    pub faults: Vec<Fault>,
    /// Serve the workshop as S7 or MELSEC PLCs instead of Modbus (see [`plc`]); `framing` and
    /// `faults` are then not used.
    pub plc: Option<plc::PlcProtocol>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 5020)),
            seed: 1,
            machines: 4,
            pace: 1.0,
            listeners: 1,
            registers: workshop::MACHINE_REGISTERS,
            framing: Framing::Tcp,
            faults: Vec::new(),
            plc: None,
        }
    }
}

/// One request as the simulator received it, for tests that watch what the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRequest {
    pub unit: u8,
    pub function: u8,
}

/// A running simulator.
#[derive(Debug)]
pub struct Simulator {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in port order.
    pub addrs: Vec<SocketAddr>,
    pub workshop: Arc<Workshop>,
    faults: Arc<RwLock<Vec<Fault>>>,
    seen: Option<mpsc::Sender<SeenRequest>>,
}

impl Simulator {
    /// Serves the workshop as RTU frames on `stream` until it closes or `shutdown` fires: a
    /// serial line, such as the master side of a pseudo-terminal whose other side the agent
    /// opens as its serial port.
    pub fn serve_rtu<S>(&self, stream: S, mut shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Shared {
            workshop: self.workshop.clone(),
            faults: self.faults.clone(),
            seen: self.seen.clone(),
            framing: Framing::RtuOverTcp,
        };
        tokio::spawn(async move {
            tokio::select! {
                r = serve_stream(stream, &shared) => {
                    if let Err(e) = r {
                        debug!(error = %e, "serial line closed");
                    }
                }
                _ = shutdown.wait() => {}
            }
        });
    }

    /// Replaces the faults the simulator commits, at once, on every connection.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = faults;
    }
}

/// What every connection of one simulator shares.
struct Shared {
    workshop: Arc<Workshop>,
    faults: Arc<RwLock<Vec<Fault>>>,
    seen: Option<mpsc::Sender<SeenRequest>>,
    framing: Framing,
}

/// Binds the listeners and serves a generated workshop until shutdown. `seen`, when given,
/// receives every request.
pub async fn start(
    options: &SimOptions,
    shutdown: Shutdown,
    seen: Option<mpsc::Sender<SeenRequest>>,
) -> std::io::Result<Simulator> {
    let mut workshop = Workshop::generate(
        options.seed,
        options.machines,
        Timestamp::now(),
        options.pace,
        SignedDuration::from_hours(24),
    );
    workshop.holding_registers = options.registers.max(workshop::MACHINE_REGISTERS);
    info!(
        machines = options.machines,
        seed = options.seed,
        "simulated workshop generated"
    );
    listen(workshop, options, shutdown, seen).await
}

/// Serves a given workshop (a scripted one, say) on `bind` with Modbus TCP until shutdown.
pub async fn serve(
    workshop: Workshop,
    bind: SocketAddr,
    shutdown: Shutdown,
    seen: Option<mpsc::Sender<SeenRequest>>,
) -> std::io::Result<Simulator> {
    let options = SimOptions {
        bind,
        ..SimOptions::default()
    };
    listen(workshop, &options, shutdown, seen).await
}

/// Serves a given workshop (a scripted one, say) on `bind` as a PLC in `protocol` until
/// shutdown: the PLC twin of [`serve`], for tests that compare a PLC machine with a Modbus one.
pub async fn serve_plc(
    workshop: Workshop,
    bind: SocketAddr,
    protocol: plc::PlcProtocol,
    shutdown: Shutdown,
) -> std::io::Result<Simulator> {
    let options = SimOptions {
        bind,
        plc: Some(protocol),
        ..SimOptions::default()
    };
    listen(workshop, &options, shutdown, None).await
}

/// Binds the listeners `options` asks for and serves `workshop` on them.
async fn listen(
    workshop: Workshop,
    options: &SimOptions,
    shutdown: Shutdown,
    seen: Option<mpsc::Sender<SeenRequest>>,
) -> std::io::Result<Simulator> {
    let workshop = Arc::new(workshop);
    let faults = Arc::new(RwLock::new(options.faults.clone()));
    let shared = Arc::new(Shared {
        workshop: workshop.clone(),
        faults: faults.clone(),
        seen: seen.clone(),
        framing: options.framing,
    });
    let mut addrs = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..options.listeners.max(1) {
        let mut bind = options.bind;
        if bind.port() != 0 {
            let port = u16::try_from(usize::from(bind.port()) + i).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the listeners' ports run past 65535",
                )
            })?;
            bind.set_port(port);
        }
        let listener = TcpListener::bind(bind).await?;
        addrs.push(listener.local_addr()?);
        listeners.push(listener);
    }
    for listener in listeners {
        match options.plc {
            None => tokio::spawn(accept_loop(listener, shared.clone(), shutdown.clone())),
            Some(protocol) => tokio::spawn(plc::serve(
                listener,
                workshop.clone(),
                protocol,
                shutdown.clone(),
            )),
        };
    }
    info!(
        addr = %addrs[0],
        listeners = addrs.len(),
        machines = options.machines,
        seed = options.seed,
        framing = ?options.framing,
        plc = ?options.plc,
        "simulator listening"
    );
    Ok(Simulator {
        addr: addrs[0],
        addrs,
        workshop,
        faults,
        seen,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let _ = stream.set_nodelay(true);
        debug!(%peer, "client connected");
        let (shared, mut stop) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = serve_stream(stream, &shared) => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "client gone");
                    }
                }
                _ = stop.wait() => {}
            }
        });
    }
}

/// Modbus exception codes the simulator answers with.
const ILLEGAL_FUNCTION: u8 = 0x01;
const ILLEGAL_ADDRESS: u8 = 0x02;
const ILLEGAL_VALUE: u8 = 0x03;
const GATEWAY_TARGET_FAILED: u8 = 0x0B;

/// Serves one connection (a TCP stream, or anything else that carries bytes both ways) until
/// the client hangs up, a frame cannot be read, or a `drop` fault ends it.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    shared: &Shared,
) -> std::io::Result<()> {
    // Requests per unit on this connection, for faults that hit every n-th one.
    let mut counts: HashMap<u8, u64> = HashMap::new();
    loop {
        let (head, unit, pdu) = match shared.framing {
            Framing::Tcp => read_mbap(&mut stream).await?,
            Framing::RtuOverTcp => match rtu::read_request(&mut stream).await? {
                Some((unit, pdu)) => (Vec::new(), unit, pdu),
                // A frame with a bad CRC: a real device stays silent.
                None => continue,
            },
        };
        if let Some(seen) = &shared.seen {
            // Drops the newest when full: the simulator never waits for its observer (see
            // `crate::queue`).
            let _ = seen.try_send(SeenRequest {
                unit,
                function: pdu.first().copied().unwrap_or(0),
            });
        }
        let nth = counts.entry(unit).or_default();
        *nth += 1;
        let fault = {
            let faults = shared.faults.read().unwrap_or_else(|e| e.into_inner());
            fault::pick(&faults, unit, *nth).cloned()
        };
        let reply = match fault {
            Some(FaultKind::NoReply) => continue,
            Some(FaultKind::Drop) => return Ok(()),
            Some(FaultKind::Exception(code)) => {
                vec![pdu.first().copied().unwrap_or(0) | 0x80, code]
            }
            Some(FaultKind::Delay(d)) => {
                tokio::time::sleep(d).await;
                answer(&shared.workshop, unit, &pdu, Timestamp::now())
            }
            None => answer(&shared.workshop, unit, &pdu, Timestamp::now()),
        };
        let frame = match shared.framing {
            Framing::Tcp => {
                let mut frame = Vec::with_capacity(7 + reply.len());
                frame.extend_from_slice(&head[0..4]);
                frame.extend_from_slice(&((reply.len() + 1) as u16).to_be_bytes());
                frame.push(unit);
                frame.extend_from_slice(&reply);
                frame
            }
            Framing::RtuOverTcp => rtu::frame(unit, &reply),
        };
        stream.write_all(&frame).await?;
    }
}

/// Reads one Modbus TCP request: (MBAP header, unit, PDU).
async fn read_mbap<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<(Vec<u8>, u8, Vec<u8>)> {
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).await?;
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    // The length counts the unit id (already read) and the PDU, at most 253 bytes.
    if !(2..=254).contains(&length) || header[2..4] != [0, 0] {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad MBAP header",
        ));
    }
    let mut pdu = vec![0u8; length - 1];
    stream.read_exact(&mut pdu).await?;
    Ok((header.to_vec(), header[6], pdu))
}

/// The response PDU to a request PDU: pure, so it is tested without a socket.
pub fn answer(workshop: &Workshop, unit: u8, pdu: &[u8], at: Timestamp) -> Vec<u8> {
    let Some(&function) = pdu.first() else {
        return vec![0x80, ILLEGAL_FUNCTION];
    };
    let exception = |code: u8| vec![function | 0x80, code];
    if !(1..=4).contains(&function) {
        return exception(ILLEGAL_FUNCTION);
    }
    if pdu.len() != 5 {
        return exception(ILLEGAL_VALUE);
    }
    let start = u16::from_be_bytes([pdu[1], pdu[2]]);
    let count = u16::from_be_bytes([pdu[3], pdu[4]]);
    let bits = function <= 2;
    let limit = if bits {
        crate::source::modbus::config::MAX_READ_BITS
    } else {
        crate::source::modbus::config::MAX_READ_REGISTERS
    };
    if count == 0 || count > limit {
        return exception(ILLEGAL_VALUE);
    }
    if !workshop.answers(at) {
        return exception(GATEWAY_TARGET_FAILED);
    }
    let (start, end) = (usize::from(start), usize::from(start) + usize::from(count));
    let values: Vec<u16> = if unit == METER_UNIT {
        if function != 4 {
            return exception(ILLEGAL_ADDRESS);
        }
        match workshop.meter_registers(at).get(start..end) {
            Some(v) => v.to_vec(),
            None => return exception(ILLEGAL_ADDRESS),
        }
    } else {
        let Some(machine) = usize::from(unit).checked_sub(1) else {
            return exception(GATEWAY_TARGET_FAILED);
        };
        let Some(regs) = workshop.machine_registers(machine, at) else {
            return exception(GATEWAY_TARGET_FAILED);
        };
        match function {
            1 | 2 => match [regs[0], regs[1]].get(start..end) {
                Some(v) => v.to_vec(),
                None => return exception(ILLEGAL_ADDRESS),
            },
            3 => {
                if end > usize::from(workshop.holding_registers) {
                    return exception(ILLEGAL_ADDRESS);
                }
                (start..end)
                    .map(|a| match regs.get(a) {
                        Some(v) => *v,
                        None => workshop.filler_register(machine, a as u16, at),
                    })
                    .collect()
            }
            _ => return exception(ILLEGAL_ADDRESS),
        }
    };
    if bits {
        let mut bytes = vec![0u8; values.len().div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            if *v != 0 {
                bytes[i / 8] |= 1 << (i % 8);
            }
        }
        let mut out = vec![function, bytes.len() as u8];
        out.extend_from_slice(&bytes);
        out
    } else {
        let mut out = vec![function, (values.len() * 2) as u8];
        for v in values {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Workshop {
        Workshop::generate(
            5,
            4,
            Timestamp::UNIX_EPOCH,
            1.0,
            SignedDuration::from_hours(1),
        )
    }

    #[test]
    fn holding_registers_come_back_big_endian_with_a_byte_count() {
        let w = shop();
        let at = Timestamp::from_second(100).unwrap();
        let regs = w.machine_registers(0, at).unwrap();
        // fc 3, start 2, count 2 → fc, 4 bytes, spindle_rpm and alarm_code.
        let reply = answer(&w, 1, &[3, 0, 2, 0, 2], at);
        let mut expect = vec![3, 4];
        expect.extend_from_slice(&regs[2].to_be_bytes());
        expect.extend_from_slice(&regs[3].to_be_bytes());
        assert_eq!(reply, expect);
    }

    #[test]
    fn coils_are_packed_lsb_first() {
        let w = shop();
        // Find a moment when machine 1 runs: run = power = 1 → bits 0 and 1 → 0b11.
        let at = (0..3600)
            .map(|s| Timestamp::from_second(s).unwrap())
            .find(|t| w.state(0, *t) == Some(crate::model::State::Running))
            .unwrap();
        assert_eq!(answer(&w, 1, &[1, 0, 0, 0, 2], at), vec![1, 1, 0b11]);
    }

    #[test]
    fn writes_and_bad_requests_get_exceptions() {
        let w = shop();
        let at = Timestamp::UNIX_EPOCH;
        // Write single register (fc 6) is refused: the simulator is read-only too.
        assert_eq!(
            answer(&w, 1, &[6, 0, 0, 0, 1], at),
            vec![0x86, ILLEGAL_FUNCTION]
        );
        // The map is 15 registers: 14 + 2 runs past it.
        assert_eq!(
            answer(&w, 1, &[3, 0, 14, 0, 2], at),
            vec![0x83, ILLEGAL_ADDRESS]
        );
        assert_eq!(answer(&w, 1, &[], at), vec![0x80, ILLEGAL_FUNCTION]);
        assert_eq!(
            answer(&w, 1, &[3, 0, 0, 0, 126], at),
            vec![0x83, ILLEGAL_VALUE]
        );
        assert_eq!(
            answer(&w, 9, &[3, 0, 0, 0, 1], at),
            vec![0x83, GATEWAY_TARGET_FAILED]
        );
        assert_eq!(
            answer(&w, METER_UNIT, &[3, 0, 0, 0, 1], at),
            vec![0x83, ILLEGAL_ADDRESS]
        );
    }

    #[test]
    fn filler_registers_follow_the_map_when_a_workshop_has_more() {
        let mut w = shop();
        w.holding_registers = 100;
        let at = Timestamp::from_second(100).unwrap();
        // fc 3, start 14, count 3: the map's last register, then filler 15 and 16.
        let reply = answer(&w, 2, &[3, 0, 14, 0, 3], at);
        let regs = w.machine_registers(1, at).unwrap();
        let mut expect = vec![3, 6];
        for v in [
            regs[14],
            w.filler_register(1, 15, at),
            w.filler_register(1, 16, at),
        ] {
            expect.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(reply, expect);
        assert_eq!(
            answer(&w, 2, &[3, 0, 99, 0, 2], at),
            vec![0x83, ILLEGAL_ADDRESS]
        );
    }

    #[test]
    fn the_meter_reports_energy_low_word_first() {
        let w = shop();
        let at = Timestamp::from_second(3600).unwrap();
        let reply = answer(&w, METER_UNIT, &[4, 0, 0, 0, 2], at);
        let (lo, hi) = (
            u16::from_be_bytes([reply[2], reply[3]]),
            u16::from_be_bytes([reply[4], reply[5]]),
        );
        let centi_kwh = (u32::from(hi) << 16) | u32::from(lo);
        let (kwh, _) = w.meter(at);
        assert_eq!(centi_kwh, (kwh * 100.0).floor() as u32);
    }
}
