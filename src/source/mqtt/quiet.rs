//! Quiet pauses: the connection's socket does not wake the runtime while the task pauses.
//!
//! At low rates the task reads in rounds (see `Pacer` in the module above): it pauses so that
//! the next messages arrive together. But a tokio socket is registered with the runtime's
//! `epoll` for as long as it exists, edge-triggered, so every segment the broker sends during
//! the pause still wakes a runtime worker, which finds no task waiting on the socket and goes
//! back to sleep. On the benchmark at 1,000 messages a second with rounds of 250 ms that was
//! about 60 wake-ups a second out of 130, each costing more than a message's own decoding
//! (docs/BENCHMARKS.md, issue 21, sixth round).
//!
//! Linux's `SO_RCVLOWAT` tells the kernel not to report the socket readable (nor wake its
//! waiters) until that many bytes are buffered, and lowering it again reports at once what is
//! buffered (`tcp_set_rcvlowat` calls `tcp_data_ready`). So the task raises it for the pause
//! and lowers it to 1 before it reads: the broker's segments queue in the kernel, within TCP's
//! receive window as before, and the runtime sleeps. The mark is [`MARK`] (512 KiB, far more
//! than a pause brings at the rates where pauses are taken: 100 ms at 1,000 messages of 200
//! bytes a second is 20 KB); the kernel grows the socket's receive buffer to hold it, and
//! still wakes the runtime when its receive window runs short, so the broker is never held up
//! by it. A pause that brings more only means a wake-up the pause did not save.
//!
//! ## Acknowledged at once
//!
//! A quiet pause must still let the broker send. Brokers write each message as it comes, and
//! Mosquitto does so with Nagle's algorithm on (its `set_tcp_nodelay` is off by default): after
//! one small segment it holds the next until TCP acknowledges the first. The agent's kernel
//! takes the connection for an interactive one (it answers every read with PUBACKs) and delays
//! its TCP acknowledgements to ride on the next PUBACK, so during a pause the broker sent one
//! message and held the rest until the pause ended (seen with strace on the benchmark: after
//! every pause, one message in the socket, the round's other sixteen a round trip after its
//! PUBACK). So before a pause the socket is also set to acknowledge at once (`TCP_QUICKACK`;
//! the kernel returns to delaying after the next PUBACKs, hence once per pause).
//!
//! rumqttc does not hand out its socket, so the socket is found by what the task knows: it is
//! the one socket connected to the broker's port that appeared while the task connected. When
//! that is not one socket (another connection to the same broker opened at the same moment, a
//! proxy, a Unix socket, `/proc` not mounted), pauses stay as they were: correct, just not
//! quiet. Before each pause the socket's inode is compared with the one found, so a descriptor
//! number that was closed and reused is never touched.

/// The receive low-water mark during a pause.
const MARK: i32 = 512 << 10;

/// Sockets connected to a port: (descriptor, inode) pairs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sockets(Vec<(i32, u64)>);

/// The connection's socket while it is known.
#[derive(Debug)]
pub struct Quiet {
    fd: i32,
    inode: u64,
    raised: bool,
}

impl Sockets {
    /// The process's TCP sockets whose peer's port is `port`.
    #[cfg(target_os = "linux")]
    pub fn to_port(port: u16) -> Sockets {
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return Sockets(found);
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Some(inode) = std::fs::read_link(entry.path()).ok().and_then(|link| {
                let link = link.to_str()?;
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            }) else {
                continue;
            };
            if peer_port(fd) == Some(port) {
                found.push((fd, inode));
            }
        }
        found.sort_unstable();
        Sockets(found)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn to_port(_port: u16) -> Sockets {
        Sockets::default()
    }

    /// The one socket in `self` that was not in `before`, if there is exactly one.
    pub fn new_since(&self, before: &Sockets) -> Option<Quiet> {
        let mut new = self.0.iter().filter(|s| !before.0.contains(s));
        let &(fd, inode) = new.next()?;
        if new.next().is_some() {
            return None;
        }
        Some(Quiet {
            fd,
            inode,
            raised: false,
        })
    }
}

impl Quiet {
    /// Before a pause: the socket stays quiet until [`MARK`] bytes have arrived, and the
    /// kernel acknowledges what arrives at once (see "Acknowledged at once").
    pub fn hold(&mut self) {
        if inode_of(self.fd) == Some(self.inode)
            && set_int(self.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, MARK)
        {
            self.raised = true;
            set_int(self.fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
        }
    }

    /// After the pause: what arrived is reported at once, and every byte wakes the task again.
    pub fn release(&mut self) {
        if std::mem::take(&mut self.raised) {
            set_int(self.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, 1);
        }
    }
}

#[cfg(target_os = "linux")]
fn peer_port(fd: i32) -> Option<u16> {
    // SAFETY: getpeername writes at most `len` bytes into the storage it is given and sets
    // `len`; the storage is large enough for any address family.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, (&raw mut storage).cast(), &mut len) != 0 {
            return None;
        }
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                let a = &*(&raw const storage).cast::<libc::sockaddr_in>();
                Some(u16::from_be(a.sin_port))
            }
            libc::AF_INET6 => {
                let a = &*(&raw const storage).cast::<libc::sockaddr_in6>();
                Some(u16::from_be(a.sin6_port))
            }
            _ => None,
        }
    }
}

fn inode_of(fd: i32) -> Option<u64> {
    // SAFETY: fstat writes into the struct it is given.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some(st.st_ino as u64)
    }
}

fn set_int(fd: i32, level: libc::c_int, option: libc::c_int, value: i32) -> bool {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// Whether `fd` is reported readable within `ms` milliseconds.
    fn readable(fd: i32, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    #[test]
    fn the_new_socket_to_the_port_is_found_and_kept_quiet_until_released() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = Sockets::to_port(port);
        let ours = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut quiet = Sockets::to_port(port)
            .new_since(&before)
            .expect("one new socket to the port");
        assert_eq!(quiet.fd, ours.as_raw_fd());

        // Held: what the peer sends (a message's worth) does not make the socket readable.
        quiet.hold();
        peer.write_all(&[0x30; 200]).unwrap();
        assert!(!readable(ours.as_raw_fd(), 100), "readable while held");
        // Released: it is reported at once.
        quiet.release();
        assert!(
            readable(ours.as_raw_fd(), 1000),
            "not readable after release"
        );
    }

    #[test]
    fn two_new_sockets_to_the_port_are_not_told_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = Sockets::to_port(port);
        let _a = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _b = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(Sockets::to_port(port).new_since(&before).is_none());
        // With one of them known before, the other is found.
        let after_a = Sockets(
            Sockets::to_port(port)
                .0
                .into_iter()
                .filter(|&(fd, _)| fd == _a.as_raw_fd())
                .collect(),
        );
        let found = Sockets::to_port(port).new_since(&after_a).expect("b");
        assert_eq!(found.fd, _b.as_raw_fd());
    }

    #[test]
    fn a_descriptor_reused_by_another_socket_is_not_touched() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = Sockets::to_port(port);
        let ours = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut quiet = Sockets::to_port(port).new_since(&before).unwrap();
        // The descriptor now belongs to another socket (a different inode).
        quiet.inode += 1;
        quiet.hold();
        assert!(!quiet.raised);
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"x").unwrap();
        assert!(readable(ours.as_raw_fd(), 1000));
    }
}
