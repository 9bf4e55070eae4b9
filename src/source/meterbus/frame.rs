//! The framing DL/T 645 and CJ/T 188 share: a wake-up preamble of `FE` bytes, a frame that
//! starts with `68`, a fixed header whose last byte is the data length, the data, a checksum
//! that is the byte sum of everything from the first `68` to the data, and `16`.
//!
//! Each protocol says how long its header is and what stands in it; the search for the frame,
//! the bounds on the preamble and the checksum are here, once. Pure functions, no I/O.

/// The frame's start and end bytes.
pub const START: u8 = 0x68;
pub const END: u8 = 0x16;
/// The wake-up byte meters need before a frame to switch their receiver on.
pub const WAKE_UP: u8 = 0xFE;
/// Wake-up bytes skipped before an answer at most. Meters send up to four; a few serial
/// servers and repeaters add their own. More than this is line noise, not a preamble.
pub const MAX_PREAMBLE: usize = 16;

/// The byte sum mod 256 both standards use as the checksum.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Appends the checksum of `frame[from..]` and the end byte: the last step of building a
/// request, `from` being where the preamble ends.
pub fn seal(frame: &mut Vec<u8>, from: usize) {
    let cs = checksum(&frame[from..]);
    frame.extend_from_slice(&[cs, END]);
}

/// What is wrong with the bytes where a frame should be. Each protocol words it for its own
/// engineers (which baud rate to try, which converter to check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// More wake-up bytes in a row than [`MAX_PREAMBLE`].
    Preamble(usize),
    /// Not `68` where the frame must start.
    NotStart(u8),
    /// The whole frame is `total` bytes but `got` arrived.
    Length {
        got: usize,
        total: usize,
    },
    Checksum {
        sent: u8,
        computed: u8,
    },
    /// Not `16` at the end.
    End(u8),
}

/// A frame found in a buffer: its preamble's length and its whole length, preamble included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub preamble: usize,
    pub total: usize,
}

/// Where the frame at the start of `buf` ends, once its header of `header` bytes (from the
/// `68`, the length byte last) is there; `None` while more bytes are needed to know.
pub fn locate(buf: &[u8], header: usize) -> Result<Option<Located>, Framing> {
    let preamble = buf.iter().take_while(|b| **b == WAKE_UP).count();
    if preamble > MAX_PREAMBLE {
        return Err(Framing::Preamble(preamble));
    }
    let Some(start) = buf.get(preamble) else {
        return Ok(None);
    };
    if *start != START {
        return Err(Framing::NotStart(*start));
    }
    let Some(length) = buf.get(preamble + header - 1) else {
        return Ok(None);
    };
    Ok(Some(Located {
        preamble,
        total: preamble + header + usize::from(*length) + 2,
    }))
}

/// Checks one whole frame (preamble allowed, nothing after it): its length, checksum and end
/// byte. Returns the frame from its `68` to the end of its data.
pub fn body(bytes: &[u8], header: usize) -> Result<&[u8], Framing> {
    let got = bytes.len();
    let Some(at) = locate(bytes, header)? else {
        return Err(Framing::Length { got, total: 0 });
    };
    if got != at.total {
        return Err(Framing::Length {
            got,
            total: at.total,
        });
    }
    let body = &bytes[at.preamble..at.total - 2];
    let (sent, computed) = (bytes[at.total - 2], checksum(body));
    if sent != computed {
        return Err(Framing::Checksum { sent, computed });
    }
    if bytes[at.total - 1] != END {
        return Err(Framing::End(bytes[at.total - 1]));
    }
    Ok(body)
}

/// How many bytes of noise come before the first byte that can begin a frame (`FE` or `68`)
/// within the first `limit` bytes: a stray byte a line driver makes when it switches
/// direction, which a meter's answer may follow. `None` when there is no such byte.
pub fn noise_before_frame(buf: &[u8], limit: usize) -> Option<usize> {
    buf.iter()
        .take(limit)
        .position(|b| *b == WAKE_UP || *b == START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_found_after_its_preamble_and_checked() {
        // 68, two header bytes, length 1, data 05; checksum 0x68 + 1 + 2 + 1 + 5 = 0x71.
        let mut f = vec![WAKE_UP, WAKE_UP, START, 1, 2, 1, 5];
        seal(&mut f, 2);
        assert_eq!(f[7..], [0x71, END]);
        assert_eq!(
            locate(&f, 4),
            Ok(Some(Located {
                preamble: 2,
                total: 9
            }))
        );
        assert_eq!(body(&f, 4), Ok(&f[2..7]));
        assert_eq!(locate(&f[..4], 4), Ok(None));
        let mut bad = f.clone();
        bad[6] = 6;
        assert_eq!(
            body(&bad, 4),
            Err(Framing::Checksum {
                sent: 0x71,
                computed: 0x72
            })
        );
        let mut bad = f.clone();
        bad[8] = 0x17;
        assert_eq!(body(&bad, 4), Err(Framing::End(0x17)));
        assert_eq!(locate(&[0x00], 4), Err(Framing::NotStart(0)));
        assert_eq!(locate(&[WAKE_UP; 17], 4), Err(Framing::Preamble(17)));
        assert_eq!(noise_before_frame(&[0x00, 0x00, WAKE_UP], 4), Some(2));
        assert_eq!(noise_before_frame(&[0x00; 8], 4), None);
    }
}
