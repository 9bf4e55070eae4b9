//! RTU framing for the simulator: a request is read by its function code's known length, and
//! every frame ends in the CRC-16 that RTU devices check.

use tokio::io::{AsyncRead, AsyncReadExt};

/// CRC-16/MODBUS, as the agent's RTU client checks it.
pub use crate::source::modbus::link::crc16;

/// `unit, pdu…, crc lo, crc hi`.
pub fn frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdu.len() + 3);
    out.push(unit);
    out.extend_from_slice(pdu);
    out.extend_from_slice(&crc16(&out).to_le_bytes());
    out
}

/// Reads one request frame: `Some((unit, pdu))`, or `None` when its CRC is wrong. A function
/// code whose request length the simulator does not know ends the connection, as a serial
/// device that lost the frame boundaries would stop making sense of the line.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut frame = vec![0u8; 2];
    stream.read_exact(&mut frame).await?;
    let rest = match frame[1] {
        // Reads and single writes: address, quantity or value, CRC.
        1..=6 => 6,
        // Multiple writes: address, quantity, byte count, data, CRC.
        15 | 16 => {
            let mut head = [0u8; 5];
            stream.read_exact(&mut head).await?;
            frame.extend_from_slice(&head);
            usize::from(head[4]) + 2
        }
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("function code {other} has no known RTU request length"),
            ));
        }
    };
    let at = frame.len();
    frame.resize(at + rest, 0);
    stream.read_exact(&mut frame[at..]).await?;
    let (body, crc) = frame.split_at(frame.len() - 2);
    if crc16(body).to_le_bytes() != [crc[0], crc[1]] {
        return Ok(None);
    }
    Ok(Some((body[0], body[1..].to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_the_specification_example() {
        // Read holding registers of unit 1, start 0, count 2: 01 03 00 00 00 02, and the
        // CRC that every Modbus reference gives for it, C4 0B (0x0BC4 sent low byte first).
        assert_eq!(
            frame(1, &[3, 0, 0, 0, 2]),
            vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0xC4, 0x0B]
        );
    }

    #[tokio::test]
    async fn requests_are_read_by_length_and_checked() {
        let good = frame(7, &[4, 0, 10, 0, 3]);
        let mut bad = good.clone();
        bad[3] ^= 1;
        let mut bytes: &[u8] = &[good.clone(), bad].concat();
        assert_eq!(
            read_request(&mut bytes).await.unwrap(),
            Some((7, vec![4, 0, 10, 0, 3]))
        );
        assert_eq!(read_request(&mut bytes).await.unwrap(), None);
        let mut unknown: &[u8] = &[1, 0x2B, 0, 0];
        assert!(read_request(&mut unknown).await.is_err());
    }
}
