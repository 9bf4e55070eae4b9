//! `shopfloor sim`: a Modbus TCP server that simulates a small workshop, for the demo, for
//! tests, and for an engineer who wants to try a config before the real machines are wired.
//!
//! The server is written against the bytes of the protocol rather than a server framework: the
//! simulator must be able to misbehave on purpose (late, wrong or missing answers), and every
//! request it receives is visible to tests, which check that the agent only ever reads.

pub mod mqtt;
pub mod workshop;

use std::net::SocketAddr;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::shutdown::Shutdown;
pub use workshop::{METER_UNIT, ScriptedMachine, Workshop};

/// Options of `shopfloor sim`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub bind: SocketAddr,
    pub seed: u64,
    pub machines: usize,
    /// 1.0 = states change every few seconds; larger values slow the workshop down.
    pub pace: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 5020)),
            seed: 1,
            machines: 4,
            pace: 1.0,
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
    pub addr: SocketAddr,
    pub workshop: Arc<Workshop>,
}

/// Binds the listener and serves a generated workshop until shutdown. `seen`, when given,
/// receives every request.
pub async fn start(
    options: &SimOptions,
    shutdown: Shutdown,
    seen: Option<mpsc::Sender<SeenRequest>>,
) -> std::io::Result<Simulator> {
    let workshop = Workshop::generate(
        options.seed,
        options.machines,
        Timestamp::now(),
        options.pace,
        SignedDuration::from_hours(24),
    );
    info!(
        machines = options.machines,
        seed = options.seed,
        "simulated workshop generated"
    );
    serve(workshop, options.bind, shutdown, seen).await
}

/// Serves a given workshop (a scripted one, say) until shutdown.
pub async fn serve(
    workshop: Workshop,
    bind: SocketAddr,
    shutdown: Shutdown,
    seen: Option<mpsc::Sender<SeenRequest>>,
) -> std::io::Result<Simulator> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let workshop = Arc::new(workshop);
    info!(%addr, "simulator listening");
    tokio::spawn(accept_loop(listener, workshop.clone(), shutdown, seen));
    Ok(Simulator { addr, workshop })
}

async fn accept_loop(
    listener: TcpListener,
    workshop: Arc<Workshop>,
    mut shutdown: Shutdown,
    seen: Option<mpsc::Sender<SeenRequest>>,
) {
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
        debug!(%peer, "client connected");
        let (workshop, seen, mut stop) = (workshop.clone(), seen.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = serve_connection(stream, &workshop, seen.as_ref()) => {
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

async fn serve_connection(
    mut stream: TcpStream,
    workshop: &Workshop,
    seen: Option<&mpsc::Sender<SeenRequest>>,
) -> std::io::Result<()> {
    let mut header = [0u8; 7];
    loop {
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
        let unit = header[6];
        if let Some(seen) = seen {
            let _ = seen.try_send(SeenRequest {
                unit,
                function: pdu[0],
            });
        }
        let reply = answer(workshop, unit, &pdu, Timestamp::now());
        let mut frame = Vec::with_capacity(7 + reply.len());
        frame.extend_from_slice(&header[0..4]);
        frame.extend_from_slice(&((reply.len() + 1) as u16).to_be_bytes());
        frame.push(unit);
        frame.extend_from_slice(&reply);
        stream.write_all(&frame).await?;
    }
}

/// The response PDU to a request PDU: pure, so it is tested without a socket.
pub fn answer(workshop: &Workshop, unit: u8, pdu: &[u8], at: Timestamp) -> Vec<u8> {
    let function = pdu[0];
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
    let limit = if bits { 2000 } else { 125 };
    if count == 0 || count > limit {
        return exception(ILLEGAL_VALUE);
    }
    if !workshop.answers(at) {
        return exception(GATEWAY_TARGET_FAILED);
    }
    let table: Vec<u16> = if unit == METER_UNIT {
        match function {
            4 => workshop.meter_registers(at).to_vec(),
            _ => return exception(ILLEGAL_ADDRESS),
        }
    } else {
        let Some(machine) = usize::from(unit).checked_sub(1) else {
            return exception(GATEWAY_TARGET_FAILED);
        };
        let Some(regs) = workshop.machine_registers(machine, at) else {
            return exception(GATEWAY_TARGET_FAILED);
        };
        match function {
            1 | 2 => vec![regs[0], regs[1]],
            3 => regs.to_vec(),
            _ => return exception(ILLEGAL_ADDRESS),
        }
    };
    let (start, end) = (usize::from(start), usize::from(start) + usize::from(count));
    let Some(values) = table.get(start..end) else {
        return exception(ILLEGAL_ADDRESS);
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
            .find(|t| w.state(0, *t) == Some(crate::config::State::Running))
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
        assert_eq!(
            answer(&w, 1, &[3, 0, 6, 0, 2], at),
            vec![0x83, ILLEGAL_ADDRESS]
        );
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
