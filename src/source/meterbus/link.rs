//! The wire to a bus of meters: an RS-485 port (tokio-serial) or a serial server's TCP port in
//! transparent mode, one request at a time, with the bus's silence between an answer and the
//! next request.
//!
//! [`Link::exchange`] writes what the protocol built (only read requests exist to be built)
//! and reads until the protocol's [`Framed::frame_length`] says the answer is whole, skipping
//! a few bytes of line noise before it and reading at most the longest frame there can be.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::config::{Bus, Parity};
use super::frame::noise_before_frame;
use super::{Fault, frame::MAX_PREAMBLE};

/// Anything a meter's bytes can come through.
trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// Bytes of noise skipped before an answer's first `FE` or `68` at most.
const NOISE: usize = MAX_PREAMBLE;

/// An open bus.
pub struct Link {
    io: Box<dyn Wire>,
    delay: Duration,
    quiet_since: Instant,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("delay", &self.delay).finish()
    }
}

/// Opens the bus: connects to the serial server, or opens the serial port with the line
/// settings.
pub async fn open(bus: &Bus) -> Result<Link, Fault> {
    let io: Box<dyn Wire> = match (&bus.tcp, &bus.port) {
        (Some(address), _) => {
            let stream = tokio::time::timeout(
                bus.timeout,
                tokio::net::TcpStream::connect(address.as_str()),
            )
            .await
            .map_err(|_| {
                Fault::Connect(format!(
                    "no connection to the serial server {address} within {:?}: check its \
                             address and that it is a TCP server in transparent mode",
                    bus.timeout
                ))
            })?
            .map_err(|e| {
                Fault::Connect(format!(
                    "cannot connect to the serial server {address}: {e}"
                ))
            })?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
        (None, Some(port)) => Box::new(open_serial(bus, port)?),
        (None, None) => return Err(Fault::Connect("the bus has no port".into())),
    };
    Ok(Link {
        io,
        delay: bus.delay,
        quiet_since: Instant::now(),
    })
}

fn open_serial(bus: &Bus, port: &str) -> Result<tokio_serial::SerialStream, Fault> {
    use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};
    tokio_serial::new(port, bus.baud)
        .data_bits(match bus.data_bits {
            7 => DataBits::Seven,
            _ => DataBits::Eight,
        })
        .parity(match bus.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match bus.stop_bits {
            2 => StopBits::Two,
            _ => StopBits::One,
        })
        .open_native_async()
        .map_err(|e| {
            Fault::Connect(format!(
                "cannot open {port}: {e}; check the port's name (ls /dev/ttyUSB* /dev/ttyS*) \
                 and that the agent's user may use it (the dialout group)"
            ))
        })
}

/// A protocol's frames, as the link reads them.
pub trait Framed {
    type Error;
    /// The longest frame there can be, preamble included.
    const MAX_FRAME: usize;
    /// How long the frame at the start of the bytes is (`None`: not yet known), or that they
    /// are no frame.
    fn frame_length(buf: &[u8]) -> Result<Option<usize>, Self::Error>;
    /// The protocol's complaint as the bus task counts it.
    fn fault(e: Self::Error) -> Fault;
}

/// Stale bytes thrown away before a request at most; a line that keeps sending more is
/// reported rather than drained for ever.
const MAX_STALE: usize = 4096;

impl Link {
    /// Throws away what arrived since the last answer (a late answer to a request that timed
    /// out, an echo, noise), so it cannot be taken for the next answer. Does not wait.
    async fn discard_stale(&mut self) -> Result<(), Fault> {
        let mut chunk = [0u8; 256];
        let mut stale = 0;
        loop {
            match tokio::time::timeout(Duration::ZERO, self.io.read(&mut chunk)).await {
                Err(_) => break,
                Ok(Ok(0)) => {
                    return Err(Fault::Transport(
                        "the serial server closed the connection".into(),
                    ));
                }
                Ok(Ok(n)) => stale += n,
                Ok(Err(e)) => return Err(Fault::Transport(e.to_string())),
            }
            if stale > MAX_STALE {
                return Err(Fault::Protocol(format!(
                    "more than {MAX_STALE} bytes arrived unasked: another master or a \
                     chattering device is on the bus"
                )));
            }
        }
        if stale > 0 {
            tracing::debug!(bytes = stale, "stale bytes before a request thrown away");
        }
        Ok(())
    }

    /// Sends `request` after the bus's silence and reads one frame within `timeout`.
    pub async fn exchange<P: Framed>(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Fault> {
        tokio::time::sleep_until(self.quiet_since + self.delay).await;
        let result = self.exchange_now::<P>(request, timeout).await;
        self.quiet_since = Instant::now();
        result
    }

    async fn exchange_now<P: Framed>(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Fault> {
        let transport = |e: std::io::Error| Fault::Transport(e.to_string());
        self.discard_stale().await?;
        self.io.write_all(request).await.map_err(transport)?;
        self.io.flush().await.map_err(transport)?;
        let deadline = Instant::now() + timeout;
        let mut buf: Vec<u8> = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) if buf.is_empty() => return Err(Fault::Silent { timeout }),
                Err(_) => {
                    return Err(Fault::Cut {
                        got: buf.len(),
                        timeout,
                    });
                }
                Ok(Err(e)) => return Err(transport(e)),
                Ok(Ok(0)) => {
                    return Err(Fault::Transport(
                        "the serial server closed the connection".into(),
                    ));
                }
                Ok(Ok(n)) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(skip) = noise_before_frame(&buf, NOISE) {
                buf.drain(..skip);
            } else if buf.len() < NOISE {
                continue;
            }
            match P::frame_length(&buf) {
                Err(e) => return Err(P::fault(e)),
                Ok(Some(total)) if buf.len() >= total => {
                    buf.truncate(total);
                    return Ok(buf);
                }
                Ok(_) if buf.len() >= P::MAX_FRAME => {
                    return Err(Fault::Protocol(format!(
                        "{} bytes without a whole frame",
                        buf.len()
                    )));
                }
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::dlt645::bus::Dlt645;
    use crate::source::dlt645::frame;
    use tokio::io::AsyncWriteExt;

    fn attach(io: tokio::io::DuplexStream) -> Link {
        Link {
            io: Box::new(io),
            delay: Duration::ZERO,
            quiet_since: Instant::now(),
        }
    }

    /// The meter's side: reads the request, then writes `answer` in `chunks`-byte pieces.
    async fn meter(mut io: tokio::io::DuplexStream, answer: Vec<u8>, chunks: usize) {
        let mut request = [0u8; 64];
        let _ = io.read(&mut request).await;
        for piece in answer.chunks(chunks) {
            let _ = io.write_all(piece).await;
            tokio::task::yield_now().await;
        }
        // Hold the line open, silent, until the agent is done.
        let _ = io.read(&mut request).await;
    }

    fn answer() -> Vec<u8> {
        // A read-address answer from 000012345678, with its preamble.
        let a = frame::Address::parse("000012345678").unwrap();
        let mut body = vec![0x68];
        body.extend(a.wire());
        body.extend([0x68, 0x93, 6]);
        body.extend(a.wire().map(|b| b.wrapping_add(0x33)));
        let mut out = vec![0xFE, 0xFE];
        out.extend(&body);
        super::super::frame::seal(&mut out, 2);
        out
    }

    #[tokio::test]
    async fn an_answer_in_pieces_after_line_noise_is_read_whole() {
        let (agent, line) = tokio::io::duplex(1024);
        let mut noisy = vec![0x00, 0x7F];
        noisy.extend(answer());
        // One more byte after the frame is not part of it.
        noisy.push(0x00);
        tokio::spawn(meter(line, noisy, 3));
        let mut link = attach(agent);
        let got = link
            .exchange::<Dlt645>(&frame::read_address_request(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(got, answer());
        assert!(frame::address_reply(&got).is_ok());
    }

    #[tokio::test]
    async fn bytes_that_arrived_unasked_are_not_taken_for_the_answer() {
        let (agent, mut line) = tokio::io::duplex(1024);
        let mut link = attach(agent);
        // A late answer lands between two requests…
        line.write_all(&[0xFE, 0x68, 0x01, 0x02]).await.unwrap();
        tokio::task::yield_now().await;
        // …and the meter then answers the request properly.
        tokio::spawn(meter(line, answer(), 64));
        let got = link
            .exchange::<Dlt645>(&frame::read_address_request(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(got, answer());
    }

    #[tokio::test]
    async fn silence_part_of_a_frame_and_noise_are_told_apart() {
        let timeout = Duration::from_millis(100);
        let (agent, line) = tokio::io::duplex(1024);
        tokio::spawn(meter(line, vec![], 1));
        let e = attach(agent)
            .exchange::<Dlt645>(&frame::read_address_request(), timeout)
            .await
            .unwrap_err();
        assert_eq!(e, Fault::Silent { timeout });
        assert!(e.to_string().contains("A/B wires"), "{e}");

        let (agent, line) = tokio::io::duplex(1024);
        tokio::spawn(meter(line, answer()[..9].to_vec(), 4));
        let e = attach(agent)
            .exchange::<Dlt645>(&frame::read_address_request(), timeout)
            .await
            .unwrap_err();
        assert_eq!(e, Fault::Cut { got: 9, timeout });

        // Twenty bytes of something else: the wrong baud rate, said at once.
        let (agent, line) = tokio::io::duplex(1024);
        tokio::spawn(meter(line, vec![0x55; 20], 20));
        let e = attach(agent)
            .exchange::<Dlt645>(&frame::read_address_request(), timeout)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "protocol");
        assert!(e.to_string().contains("baud rate"), "{e}");
    }
}
