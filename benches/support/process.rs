//! What the benchmarks read of the processes they measure: children killed when dropped, CPU
//! time and memory from `/proc`.

use std::process::Child;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then wait: the process shuts down the way it would under systemd.
    #[allow(dead_code)]
    pub fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// A `/proc/PID/status` figure in kB (`VmRSS:`, `VmHWM:`).
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The value of the first sample in a Prometheus text page whose line starts with `series`
/// (a metric name, with its labels where they matter): what a benchmark counts progress by.
/// `None` when the page could not be fetched or has no such line.
pub async fn scraped(http: &reqwest::Client, url: &str, series: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// The command line when cargo runs the bench as a benchmark (`--bench` among the arguments),
/// else `None`: `cargo test --all-targets` runs bench targets without it.
#[allow(dead_code)] // benches with arguments of their own
pub fn bench_args() -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench").then_some(args)
}

/// The number after `name` in `args` (`--seconds 30`), if there is one.
#[allow(dead_code)] // benches with arguments of their own
pub fn number_arg(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// Starts the agent, `shopfloor run -c CONFIG`, logging warnings and worse to this process's
/// stderr. With `SHOPFLOOR_BENCH_WRAP` set (say `heaptrack -o /tmp/agent`), the agent runs
/// under that command, to see where its memory goes; the figures are then the wrapper's.
#[allow(dead_code)] // benches that run the agent in their own process
pub fn start_agent(config: &std::path::Path) -> Proc {
    let bin = env!("CARGO_BIN_EXE_shopfloor");
    let wrap = std::env::var("SHOPFLOOR_BENCH_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut command = match wrap.next() {
        Some(program) => {
            let mut c = std::process::Command::new(program);
            c.args(wrap).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    Proc(
        command
            .args(["run", "-c"])
            .arg(config)
            .env("SHOPFLOOR_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the agent"),
    )
}

/// The benchmark's own runtime: two workers, as many as the machine has cores.
#[allow(dead_code)] // benches that build their runtime otherwise
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `/proc/loadavg`, for the figures' record of how busy the machine was.
#[allow(dead_code)] // benches that do not print it
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}
