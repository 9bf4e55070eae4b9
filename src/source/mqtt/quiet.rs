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
//! ## The round's bytes end the pause
//!
//! A pause on a tokio timer costs two wake-ups of a worker: tokio's timer wheel keeps a
//! deadline more than 64 ms away in a coarser level, and the runtime wakes at the start of
//! that level's slot to move it down, then again when it is due (seen with strace: an empty
//! `epoll_wait` return in the middle of nearly every pause). So when the socket is known and
//! the system has `timerfd`, the mark is set to the bytes the round is expected to bring (the
//! pause at the last second's rate of bytes): the kernel wakes the task when they are there,
//! one wake-up, and the read that follows finds the round complete. An [`Alarm`] bounds the
//! pause (half as long again as expected, at most `linger`), for a stream that slowed down or
//! a broker that holds messages back; it is cancelled when the socket comes first. A tokio
//! timer would not do as the bound: one set for more than 64 ms wakes the runtime at the
//! start of its wheel slot, which comes before the round's bytes in most pauses; a `timerfd`
//! wakes it only if it rings.
//!
//! rumqttc does not hand out its socket, so the socket is found by what the task knows: it is
//! the one socket connected to the broker's port that appeared while the task connected. When
//! that is not one socket (another connection to the same broker opened at the same moment, a
//! proxy, a Unix socket, `/proc` not mounted), pauses stay as they were: correct, just not
//! quiet. Before each pause the socket's inode is compared with the one found, so a descriptor
//! number that was closed and reused is never touched.

use std::time::Duration;

/// The receive low-water mark during a pause.
const MARK: i32 = 512 << 10;

/// A one-shot alarm on a Linux `timerfd`, registered with the runtime's `epoll` like a socket
/// (see "The round's bytes end the pause"). Unlike a tokio timer, it wakes the runtime only
/// when it rings, never for the timer wheel's cascade.
pub struct Alarm {
    #[cfg(target_os = "linux")]
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl Alarm {
    /// A new alarm, not set; `None` where there is no `timerfd` (or no runtime to register
    /// it with), and pauses then end on a tokio timer.
    #[cfg(target_os = "linux")]
    pub fn new() -> Option<Alarm> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create has no preconditions and returns a new descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: the `OwnedFd` is a valid, open descriptor, owned by the `AsyncFd` until it is
        // dropped, and its `as_raw_fd` always returns that descriptor. (The task that creates
        // the alarm runs on the agent's runtime, whose I/O driver is enabled: rumqttc needs it.)
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
        .map(|fd| Alarm { fd })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new() -> Option<Alarm> {
        None
    }

    /// Sets the alarm to ring `after` from now, replacing any earlier setting.
    #[cfg(target_os = "linux")]
    pub fn set(&self, after: Duration) -> bool {
        // A zero setting disarms a timerfd: an alarm due at once rings after a nanosecond.
        self.set_time(after.max(Duration::from_nanos(1)))
    }

    /// Disarms the alarm and forgets a ring not waited for (a new setting clears the count of
    /// expirations the kernel keeps).
    #[cfg(target_os = "linux")]
    pub fn cancel(&self) {
        self.set_time(Duration::ZERO);
    }

    #[cfg(target_os = "linux")]
    fn set_time(&self, after: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = libc::itimerspec {
            it_interval: zero,
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: timerfd_settime reads the itimerspec it is given; the old value is not asked.
        unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) == 0 }
    }

    /// Waits until the alarm rings. Returns at once if the runtime cannot watch it, so a pause
    /// never outlasts its bound.
    #[cfg(target_os = "linux")]
    pub async fn rung(&self) {
        use std::os::fd::AsRawFd;
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return;
            };
            let mut count = [0u8; 8];
            // SAFETY: read writes at most 8 bytes into `count`.
            let read = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            if read == 8 {
                return;
            }
            // Not due yet (a ring cancelled after the runtime saw it): wait on.
            ready.clear_ready();
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set(&self, _after: Duration) -> bool {
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub fn cancel(&self) {}

    #[cfg(not(target_os = "linux"))]
    pub async fn rung(&self) {}
}

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
        self.hold_until(MARK as usize);
    }

    /// Before a pause that ends with the round (see "The round's bytes end the pause"): the
    /// socket stays quiet until `bytes` have arrived (at least 1, at most [`MARK`]).
    pub fn hold_until(&mut self, bytes: usize) {
        let mark = bytes.clamp(1, MARK as usize) as i32;
        if inode_of(self.fd) == Some(self.inode)
            && set_int(self.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, mark)
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

    /// A connection to a local listener: the agent's end, the peer's end, and the agent's end
    /// found as the one new socket to the port, as `run` finds it.
    fn connected() -> (std::net::TcpStream, std::net::TcpStream, Quiet) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = Sockets::to_port(port);
        let ours = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (peer, _) = listener.accept().unwrap();
        let quiet = Sockets::to_port(port)
            .new_since(&before)
            .expect("one new socket to the port");
        (ours, peer, quiet)
    }

    #[test]
    fn the_new_socket_to_the_port_is_found_and_kept_quiet_until_released() {
        let (ours, mut peer, mut quiet) = connected();
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
    fn a_socket_held_until_a_round_s_bytes_wakes_when_they_are_there() {
        let (ours, mut peer, mut quiet) = connected();

        // A round of 1000 bytes: 600 do not wake the task, 400 more do.
        quiet.hold_until(1000);
        peer.write_all(&[0x30; 600]).unwrap();
        assert!(
            !readable(ours.as_raw_fd(), 100),
            "readable before the round"
        );
        peer.write_all(&[0x30; 400]).unwrap();
        assert!(
            readable(ours.as_raw_fd(), 1000),
            "not readable with the round"
        );
        quiet.release();
        assert!(!quiet.raised);
    }

    #[test]
    fn an_alarm_rings_when_due_and_a_cancelled_one_never() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let alarm = Alarm::new().expect("timerfd");
            let ms = |n| Duration::from_millis(n);
            // Set for 50 ms: not rung after 20, rung by 1 s.
            assert!(alarm.set(ms(50)));
            assert!(tokio::time::timeout(ms(20), alarm.rung()).await.is_err());
            assert!(tokio::time::timeout(ms(1000), alarm.rung()).await.is_ok());
            // Set for 30 ms and cancelled: not rung 200 ms later.
            assert!(alarm.set(ms(30)));
            alarm.cancel();
            assert!(tokio::time::timeout(ms(200), alarm.rung()).await.is_err());
            // Due, seen by the runtime, then cancelled: the stale readiness does not ring it.
            assert!(alarm.set(ms(1)));
            tokio::time::sleep(ms(20)).await;
            assert!(tokio::time::timeout(ms(0), alarm.rung()).await.is_ok());
            assert!(alarm.set(ms(1)));
            tokio::time::sleep(ms(20)).await;
            alarm.cancel();
            assert!(tokio::time::timeout(ms(100), alarm.rung()).await.is_err());
            // Set again, it rings again.
            assert!(alarm.set(ms(10)));
            assert!(tokio::time::timeout(ms(1000), alarm.rung()).await.is_ok());
        });
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
        let (ours, mut peer, mut quiet) = connected();
        // The descriptor now belongs to another socket (a different inode).
        quiet.inode += 1;
        quiet.hold();
        assert!(!quiet.raised);
        peer.write_all(b"x").unwrap();
        assert!(readable(ours.as_raw_fd(), 1000));
    }
}
