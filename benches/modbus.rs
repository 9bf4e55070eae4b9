//! Modbus throughput benchmark: N simulated Modbus TCP devices × M holding registers, polled
//! every second by the agent in its own process, written to a local VictoriaMetrics.
//!
//! ```sh
//! cargo bench --bench modbus                              # 100 × 100 and 100 × 1000
//! cargo bench --bench modbus -- --devices 100 --registers 100 --seconds 60
//! ```
//!
//! The method (three processes, CPU from /proc, RSS sampled, points counted by
//! VictoriaMetrics) is `benches/support/fleet.rs`'s, shared with the PLC benchmarks; here:
//! `shopfloor sim --listeners N` (one port per device, so every device has its own
//! connection), and N `[[modbus]]` devices using one profile of M holding registers.
//!
//! This is a benchmark, not a test: `cargo test --all-targets` builds it and runs it without
//! `--bench`, and then it only says how to run it.

#[path = "support/process.rs"]
mod process;

#[path = "support/fleet.rs"]
mod fleet;

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;

fn sim_args(devices: usize, registers: u16) -> Vec<String> {
    vec![
        "--machines".into(),
        devices.min(99).to_string(),
        "--registers".into(),
        registers.max(15).to_string(),
    ]
}

/// The profile of the benchmark's device model: M holding registers as u16 fields.
fn profile(registers: u16) -> String {
    let mut p = String::from("description = \"benchmark device\"\n");
    for r in 0..registers {
        let _ = write!(
            p,
            "[[field]]\nsignal = \"r{r}\"\nregister = \"holding\"\naddress = {r}\n"
        );
    }
    p
}

fn devices(base_port: u16, devices: usize) -> String {
    let mut c = String::new();
    // Every device is the same model: one profile of M registers, as a site with a hundred
    // identical boxes would write it (inline maps of 100k fields cost ~100 MB just to parse).
    for i in 1..=devices {
        let _ = write!(
            c,
            "[[modbus]]\nid = \"d{i:03}\"\naddress = \"127.0.0.1:{}\"\nunit = {}\npoll = \"1s\"\nprofile = \"bench\"\nmachine = \"m{i:03}\"\n\n",
            usize::from(base_port) + i - 1,
            // Units 1…99 are the simulator's machines (100 is its meter); past 99 they repeat,
            // which is fine since each device has a port of its own.
            (i - 1) % 99 + 1,
        );
    }
    c
}

fn main() {
    fleet::main(&fleet::Bench {
        protocol: "Modbus",
        name: "modbus",
        sim_args,
        devices,
        profile,
    });
}
