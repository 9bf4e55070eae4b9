//! MELSEC throughput benchmark: N simulated MELSEC PLCs (MC protocol, 3E binary frames) × M
//! data registers, polled every second by the agent in its own process, written to a local
//! VictoriaMetrics.
//!
//! ```sh
//! cargo bench --bench melsec                              # 100 × 100 and 100 × 1000
//! cargo bench --bench melsec -- --devices 100 --registers 1000 --seconds 30 --warmup 10
//! ```
//!
//! The method is the Modbus benchmark's (`benches/support/fleet.rs`): here `shopfloor sim
//! --plc melsec --listeners N` serves one PLC per port, and N `[[melsec]]` devices (Q family)
//! use one profile of M `u16` fields, `D0` to `D{M-1}`: the same program in every PLC, as a
//! line of identical presses would have it. The simulator serves its first machine's words
//! there (its map, then filler that changes every second), so every PLC answers with the
//! same values; what the agent does per word does not depend on them. The planner reads M
//! words in batch reads of at most 960 words: one request per PLC for 100 words, two for
//! 1000.
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

/// The benchmark PLC's device map: D0 … D{M-1} as u16 fields.
fn profile(registers: u16) -> String {
    let mut p = String::from("description = \"benchmark PLC\"\n");
    for r in 0..registers {
        let _ = write!(p, "[[field]]\nsignal = \"r{r}\"\naddress = \"D{r}\"\n");
    }
    p
}

fn devices(base_port: u16, devices: usize) -> String {
    let mut c = String::new();
    for i in 1..=devices {
        let _ = write!(
            c,
            "[[melsec]]\nid = \"d{i:03}\"\nhost = \"127.0.0.1\"\nport = {}\nfamily = \"q\"\npoll = \"1s\"\nprofile = \"bench\"\nmachine = \"m{i:03}\"\n\n",
            usize::from(base_port) + i - 1,
        );
    }
    c
}

fn main() {
    fleet::main(&fleet::Bench {
        protocol: "MELSEC",
        name: "melsec",
        sim_args: |_, registers| fleet::plc_sim_args("melsec", registers),
        devices,
        profile,
    });
}
