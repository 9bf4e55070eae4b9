//! One ISO-on-TCP connection to a PLC, read only: it can connect (COTP connection request and
//! Setup Communication) and send Read Var, and nothing else, because [`super::frame`] builds
//! nothing else. Every wait is bounded by the device's timeout; every length from the PLC is
//! checked by the frame module before it is used.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, ItemError, ReadItem, S7Error, TPKT_HEADER};

/// Why a poll of a PLC failed as a whole. Each says what happened and what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The host name did not resolve.
    Resolve(String),
    /// No TCP connection (nothing listens on port 102, a firewall, the PLC is off).
    Connect(String),
    /// No answer within the timeout; `what` was being waited for.
    Timeout(&'static str),
    /// The connection broke.
    Transport(String),
    /// The PLC answered, but refused or said something that is not S7.
    S7(S7Error),
    /// The PLC refused the one item asked for (the probe's reads).
    Item(ItemError),
}

impl Fault {
    /// The kind the device health counts the fault under (`source::modbus::health`).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Resolve(_) => "resolve",
            Fault::Connect(_) | Fault::S7(S7Error::Refused(_)) => "connect",
            Fault::Timeout(_) => "timeout",
            Fault::Transport(_) => "transport",
            Fault::S7(S7Error::Malformed(_)) => "protocol",
            Fault::S7(S7Error::Job { .. }) | Fault::Item(_) => "exception",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Resolve(e) => write!(f, "cannot resolve the PLC's host name: {e}"),
            Fault::Connect(e) => write!(
                f,
                "cannot connect: {e} (is the PLC on, its IP address right, and port 102 open \
                 between here and the PLC?)"
            ),
            Fault::Timeout(what) => write!(f, "no answer to {what} within the timeout"),
            Fault::Transport(e) => write!(f, "the connection broke: {e}"),
            Fault::S7(e) => write!(f, "{e}"),
            Fault::Item(e) => write!(f, "the PLC refused the read: {e}"),
        }
    }
}

impl std::error::Error for Fault {}

/// An open connection and what was negotiated on it.
pub struct Connection<S = TcpStream> {
    stream: S,
    /// The PDU size the PLC granted.
    pub pdu: u16,
    next_ref: u16,
    buf: Vec<u8>,
}

/// Connects to `address` (`host:port`), with the two TSAPs, asking for a `pdu`-byte PDU.
pub async fn connect(
    address: &str,
    tsaps: (u16, u16),
    pdu: u16,
    timeout: Duration,
) -> Result<Connection, Fault> {
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| Fault::Timeout("the name lookup"))?
        .map_err(|e| Fault::Resolve(format!("{address}: {e}")))?
        .next()
        .ok_or_else(|| Fault::Resolve(format!("{address}: no address")))?;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(resolved))
        .await
        .map_err(|_| Fault::Timeout("the TCP connection"))?
        .map_err(|e| Fault::Connect(format!("{resolved}: {e}")))?;
    let _ = stream.set_nodelay(true);
    attach(stream, tsaps, pdu, timeout).await
}

/// The ISO and S7 set-up over an open stream: COTP connection request, then Setup
/// Communication.
pub async fn attach<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    (local, remote): (u16, u16),
    pdu: u16,
    timeout: Duration,
) -> Result<Connection<S>, Fault> {
    let mut conn = Connection {
        stream,
        pdu,
        next_ref: 1,
        buf: Vec::with_capacity(usize::from(pdu) + 64),
    };
    let request = frame::connect_request(local, remote);
    match conn
        .exchange(&request, "the ISO connection request", timeout)
        .await
    {
        Ok(()) => {}
        // A PLC with no connection resource for the TSAP often just closes the socket.
        Err(Fault::Transport(e)) => {
            return Err(Fault::S7(S7Error::Refused(format!(
                "it closed the connection at the ISO connection request: {e}"
            ))));
        }
        Err(e) => return Err(e),
    }
    frame::check_connect_confirm(&conn.buf).map_err(Fault::S7)?;
    let pdu_ref = conn.reference();
    conn.exchange(
        &frame::setup_request(pdu_ref, pdu),
        "Setup Communication",
        timeout,
    )
    .await?;
    let granted = frame::setup_reply(&conn.buf, pdu_ref).map_err(Fault::S7)?;
    conn.pdu = granted.min(pdu);
    Ok(conn)
}

/// An I/O error in words: an end of stream or a reset is the PLC closing the connection.
fn transport(e: std::io::Error) -> Fault {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    ) {
        Fault::Transport(format!(
            "the PLC closed the connection (it restarted, lost power, or ended the session): {e}"
        ))
    } else {
        Fault::Transport(e.to_string())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    fn reference(&mut self) -> u16 {
        let r = self.next_ref;
        self.next_ref = self.next_ref.wrapping_add(1).max(1);
        r
    }

    /// Sends `frame` and reads one TPKT into `self.buf`.
    async fn exchange(
        &mut self,
        frame: &[u8],
        what: &'static str,
        timeout: Duration,
    ) -> Result<(), Fault> {
        let io = async {
            self.stream.write_all(frame).await?;
            let mut header = [0u8; TPKT_HEADER];
            self.stream.read_exact(&mut header).await?;
            Ok::<_, std::io::Error>(header)
        };
        let header = tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| Fault::Timeout(what))?
            .map_err(transport)?;
        let len = frame::tpkt_length(&header).map_err(Fault::S7)?;
        self.buf.clear();
        self.buf.extend_from_slice(&header);
        self.buf.resize(len, 0);
        tokio::time::timeout(
            timeout,
            self.stream.read_exact(&mut self.buf[TPKT_HEADER..]),
        )
        .await
        .map_err(|_| Fault::Timeout(what))?
        .map_err(transport)?;
        Ok(())
    }

    /// One Read Var of `items` (which fit the granted PDU: the planner's job). The answer's
    /// bytes, and each item's data range in them or the PLC's reason for refusing it.
    pub async fn read(
        &mut self,
        items: &[ReadItem],
        timeout: Duration,
    ) -> Result<(&[u8], Vec<Result<Range<usize>, ItemError>>), Fault> {
        let pdu_ref = self.reference();
        self.exchange(&frame::read_request(pdu_ref, items), "Read Var", timeout)
            .await?;
        let parts = frame::read_reply(&self.buf, pdu_ref, items).map_err(Fault::S7)?;
        Ok((&self.buf, parts))
    }
}
