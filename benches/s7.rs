//! S7 throughput benchmark: N simulated Siemens S7 PLCs (ISO-on-TCP) × M words of a data
//! block, polled every second by the agent in its own process, written to a local
//! VictoriaMetrics.
//!
//! ```sh
//! cargo bench --bench s7                                  # 100 × 100 and 100 × 1000
//! cargo bench --bench s7 -- --devices 100 --registers 1000 --seconds 30 --warmup 10
//! ```
//!
//! The method is the Modbus benchmark's (`benches/support/fleet.rs`): here `shopfloor sim
//! --plc s7 --listeners N` serves one PLC per port, and N `[[s7]]` devices (rack 0, slot 1,
//! the PDU size the simulator grants, 960) use one profile of M `word` fields, `DB1.DBW0` to
//! `DB1.DBW{2M-2}`: the same program in every PLC. The simulator serves its first machine's
//! words in DB1 (its map, then filler that changes every second), so every PLC answers with
//! the same values; what the agent does per word does not depend on them.
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

/// The benchmark PLC's address map: DB1.DBW0 … as unsigned words.
fn profile(registers: u16) -> String {
    let mut p = String::from("description = \"benchmark PLC\"\n");
    for r in 0..u32::from(registers) {
        let _ = write!(
            p,
            "[[field]]\nsignal = \"r{r}\"\naddress = \"DB1.DBW{}\"\ntype = \"word\"\n",
            2 * r
        );
    }
    p
}

fn devices(base_port: u16, devices: usize) -> String {
    let mut c = String::new();
    for i in 1..=devices {
        let _ = write!(
            c,
            "[[s7]]\nid = \"d{i:03}\"\nhost = \"127.0.0.1\"\nport = {}\nrack = 0\nslot = 1\npoll = \"1s\"\nprofile = \"bench\"\nmachine = \"m{i:03}\"\n\n",
            usize::from(base_port) + i - 1,
        );
    }
    c
}

fn main() {
    fleet::main(&fleet::Bench {
        protocol: "S7",
        name: "s7",
        sim_args: |_, registers| fleet::plc_sim_args("s7", registers),
        devices,
        profile,
    });
}
