//! The simulated workshop: CNC machines that cycle through states, and an electricity meter.
//!
//! Everything is a pure function of the seed and the time since the start, so two runs with
//! the same seed agree to the register, and a test can ask the simulator when each machine
//! changed state and compare with what the agent stored.
//!
//! Register map of a machine (unit id = machine number, 1…; holding registers, 0-based):
//!
//! | address | signal        | type                 |
//! |---------|---------------|----------------------|
//! | 0       | `run`         | u16, 1 while cutting |
//! | 1       | `power`       | u16, 0 when switched off |
//! | 2       | `spindle_rpm` | u16                  |
//! | 3       | `alarm_code`  | u16, 0 = no alarm    |
//! | 4–5     | `parts`       | u32, ABCD, counts up while running |
//! | 6       | `mode`        | u16, 0 automatic, 1 manual (setup) |
//! | 7–14    | `program`     | string of 8 registers, first character in the high byte |
//! | 15…     | filler        | u16 that change every second, for benchmarks that read many registers |
//!
//! Coils 0 and 1 repeat `run` and `power` as bits. `config/profiles/cnc-iot-box.toml` is this
//! map.
//!
//! The meter (unit id [`METER_UNIT`]; input registers): 0–1 energy in 0.01 kWh as u32 in CDAB
//! order (low word first, as many meters do), 2–3 active power in kW as f32 ABCD.

use jiff::{SignedDuration, Timestamp};

use crate::model::State;

/// Unit id of the simulated electricity meter.
pub const METER_UNIT: u8 = 100;

/// Holding registers of a machine's map (addresses 0..MACHINE_REGISTERS); a workshop can
/// answer for more (see [`Workshop::holding_registers`]).
pub const MACHINE_REGISTERS: u16 = 15;
/// Input registers the meter answers for.
pub const METER_REGISTERS: u16 = 4;

/// Electrical load of a machine in each state, kW.
fn load_kw(state: State) -> f64 {
    match state {
        State::Running => 15.0,
        State::Setup => 5.0,
        State::Idle => 3.0,
        State::Alarm => 2.0,
        State::Stopped | State::Offline => 0.0,
    }
}

/// Load of lighting, compressors and the like, always on.
const BASE_LOAD_KW: f64 = 2.0;

/// One stretch of a machine's timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub state: State,
    /// Offset from the simulation's start.
    pub start: SignedDuration,
    pub length: SignedDuration,
    /// Parts made before this segment began.
    pub parts_before: u32,
    /// Energy used by this machine before this segment began, kWh.
    pub kwh_before: f64,
}

/// One simulated machine.
#[derive(Debug, Clone)]
pub struct SimMachine {
    pub id: String,
    pub spindle_rpm: u16,
    pub cycle_s: f64,
    pub alarm_code: u16,
    /// The program the machine runs, as the `program` string registers hold it.
    pub program: String,
    pub segments: Vec<Segment>,
}

/// The whole workshop: machines with precomputed timelines.
#[derive(Debug, Clone)]
pub struct Workshop {
    pub start: Timestamp,
    pub machines: Vec<SimMachine>,
    /// Holding registers each machine answers for: its map, then filler up to this many.
    pub holding_registers: u16,
    horizon: SignedDuration,
    /// A scripted workshop answers only between `start` and this moment.
    answers_until: Option<Timestamp>,
}

/// One machine of a scripted workshop.
#[derive(Debug, Clone)]
pub struct ScriptedMachine {
    pub steps: Vec<(State, SignedDuration)>,
    pub cycle_s: f64,
    pub spindle_rpm: u16,
    pub alarm_code: u16,
}

/// Numbers the segments of a plan with the parts made and energy used before each.
fn segments(plan: Vec<(State, SignedDuration, SignedDuration)>, cycle_s: f64) -> Vec<Segment> {
    let mut parts = 0u32;
    let mut kwh = 0.0;
    plan.into_iter()
        .map(|(state, start, length)| {
            let seg = Segment {
                state,
                start,
                length,
                parts_before: parts,
                kwh_before: kwh,
            };
            if state == State::Running {
                parts += (length.as_secs_f64() / cycle_s).floor() as u32;
            }
            kwh += load_kw(state) * length.as_secs_f64() / 3600.0;
            seg
        })
        .collect()
}

/// splitmix64: a few lines of well-known PRNG, so the simulator needs no `rand`.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
}

impl Workshop {
    /// A workshop of `machines` CNC machines whose states change every few seconds (scaled by
    /// `pace`: 2.0 makes every segment twice as long). Timelines cover `horizon` and then
    /// repeat.
    pub fn generate(
        seed: u64,
        machines: usize,
        start: Timestamp,
        pace: f64,
        horizon: SignedDuration,
    ) -> Self {
        let mut rng = Rng(seed);
        let pace = if pace.is_finite() && pace > 0.0 {
            pace
        } else {
            1.0
        };
        let machines = (0..machines)
            .map(|i| {
                let spindle_rpm = (rng.range(6000.0, 12000.0) / 100.0).round() as u16 * 100;
                let cycle_s = rng.range(2.0, 6.0).round();
                let alarm_code = [1021, 2003, 3050, 4101][rng.next() as usize % 4];
                let mut plan = Vec::new();
                let mut at = SignedDuration::ZERO;
                // Every machine starts running for a short while, so a demo shows changes fast.
                let mut state = State::Running;
                let mut first = true;
                while at < horizon {
                    let (lo, hi) = match state {
                        State::Running => (8.0, 30.0),
                        State::Idle => (4.0, 12.0),
                        State::Alarm => (3.0, 10.0),
                        State::Stopped => (5.0, 15.0),
                        State::Setup | State::Offline => (4.0, 10.0),
                    };
                    let secs = if first {
                        rng.range(2.0, 8.0)
                    } else {
                        rng.range(lo, hi)
                    } * pace;
                    first = false;
                    let length = SignedDuration::from_millis((secs * 1000.0).round() as i64);
                    plan.push((state, at, length));
                    at += length;
                    state = next_state(state, &mut rng);
                }
                SimMachine {
                    id: format!("cnc{:02}", i + 1),
                    spindle_rpm,
                    cycle_s,
                    alarm_code,
                    program: format!("O{} PART-{:02}", 1000 + rng.next() % 9000, i + 1),
                    segments: segments(plan, cycle_s),
                }
            })
            .collect();
        Workshop {
            start,
            machines,
            holding_registers: MACHINE_REGISTERS,
            horizon,
            answers_until: None,
        }
    }

    /// A workshop that follows a script, for tests whose expected figures are worked out by
    /// hand: each machine goes through its `(state, length)` steps from `start`, and the last
    /// step lasts until `until`. Before `start` and from `until` on, no unit answers (the
    /// gateway reports "target failed to respond"), so the agent sees the machines offline.
    pub fn scripted(start: Timestamp, until: Timestamp, machines: Vec<ScriptedMachine>) -> Self {
        let horizon = until
            .duration_since(start)
            .max(SignedDuration::from_secs(1));
        let machines = machines
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let mut at = SignedDuration::ZERO;
                let mut plan = Vec::new();
                let last = m.steps.len().saturating_sub(1);
                for (n, (state, length)) in m.steps.into_iter().enumerate() {
                    let length = if n == last {
                        (horizon - at).max(length)
                    } else {
                        length
                    };
                    plan.push((state, at, length));
                    at += length;
                }
                SimMachine {
                    id: format!("cnc{:02}", i + 1),
                    spindle_rpm: m.spindle_rpm,
                    cycle_s: m.cycle_s,
                    alarm_code: m.alarm_code,
                    program: format!("O{} PART-{:02}", 1001 + i, i + 1),
                    segments: segments(plan, m.cycle_s),
                }
            })
            .collect();
        Workshop {
            start,
            machines,
            holding_registers: MACHINE_REGISTERS,
            horizon,
            answers_until: Some(until),
        }
    }

    /// Whether the simulated devices answer at `at`.
    pub fn answers(&self, at: Timestamp) -> bool {
        match self.answers_until {
            Some(until) => self.start <= at && at < until,
            None => true,
        }
    }

    /// Offset into the timeline for a moment, wrapping at the horizon. Whole cycles of the
    /// horizon are carried separately by the counters.
    fn offset(&self, at: Timestamp) -> (SignedDuration, u64) {
        let elapsed = at.duration_since(self.start).max(SignedDuration::ZERO);
        let horizon = self.horizon.as_millis().max(1);
        let ms = elapsed.as_millis();
        (
            SignedDuration::from_millis((ms % horizon) as i64),
            (ms / horizon) as u64,
        )
    }

    /// The segment a machine is in at `at`, and how far into it.
    fn segment(&self, machine: usize, at: Timestamp) -> Option<(&Segment, SignedDuration, u64)> {
        let m = self.machines.get(machine)?;
        let (offset, laps) = self.offset(at);
        let i = m
            .segments
            .partition_point(|s| s.start <= offset)
            .saturating_sub(1);
        let seg = m.segments.get(i)?;
        Some((seg, offset - seg.start, laps))
    }

    /// The state of machine `machine` (0-based) at `at`.
    pub fn state(&self, machine: usize, at: Timestamp) -> Option<State> {
        self.segment(machine, at).map(|(s, _, _)| s.state)
    }

    /// Every state change of a machine between two moments, as (when, new state).
    pub fn changes(
        &self,
        machine: usize,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<(Timestamp, State)> {
        let Some(m) = self.machines.get(machine) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut lap_start = self.start;
        while lap_start < to {
            for pair in m.segments.windows(2) {
                let at = lap_start + pair[1].start;
                if at > from && at <= to && pair[1].state != pair[0].state {
                    out.push((at, pair[1].state));
                }
            }
            lap_start += self.horizon;
        }
        out
    }

    /// The holding registers of machine `machine` at `at`.
    pub fn machine_registers(
        &self,
        machine: usize,
        at: Timestamp,
    ) -> Option<[u16; MACHINE_REGISTERS as usize]> {
        let m = self.machines.get(machine)?;
        let (seg, into, laps) = self.segment(machine, at)?;
        let parts_per_lap = m.segments.last().map_or(0, |s| {
            s.parts_before
                + if s.state == State::Running {
                    (s.length.as_secs_f64() / m.cycle_s).floor() as u32
                } else {
                    0
                }
        });
        let mut parts = seg
            .parts_before
            .wrapping_add(parts_per_lap.wrapping_mul(laps as u32));
        if seg.state == State::Running {
            parts = parts.wrapping_add((into.as_secs_f64() / m.cycle_s).floor() as u32);
        }
        let s = seg.state;
        let mut regs = [0u16; MACHINE_REGISTERS as usize];
        regs[..7].copy_from_slice(&[
            u16::from(s == State::Running),
            u16::from(s != State::Stopped),
            if s == State::Running {
                m.spindle_rpm
            } else {
                0
            },
            if s == State::Alarm { m.alarm_code } else { 0 },
            (parts >> 16) as u16,
            parts as u16,
            u16::from(s == State::Setup),
        ]);
        let text = m.program.as_bytes();
        for (i, reg) in regs[7..].iter_mut().enumerate() {
            let byte = |n: usize| text.get(n).copied().unwrap_or(0);
            *reg = u16::from_be_bytes([byte(2 * i), byte(2 * i + 1)]);
        }
        Some(regs)
    }

    /// Holding register `address` of machine `machine` past its map: a value that changes every
    /// second, different for every register and machine.
    pub fn filler_register(&self, machine: usize, address: u16, at: Timestamp) -> u16 {
        let seconds = at.duration_since(self.start).as_secs().max(0) as u64;
        (seconds
            .wrapping_mul(31)
            .wrapping_add(u64::from(address) * 7)
            .wrapping_add(machine as u64 * 1009)
            & 0xFFFF) as u16
    }

    /// Cumulative energy of the whole workshop in kWh, and the present load in kW.
    pub fn meter(&self, at: Timestamp) -> (f64, f64) {
        let (_, laps) = self.offset(at);
        let elapsed_h = at
            .duration_since(self.start)
            .max(SignedDuration::ZERO)
            .as_secs_f64()
            / 3600.0;
        let mut kwh = BASE_LOAD_KW * elapsed_h;
        let mut kw = BASE_LOAD_KW;
        for (i, m) in self.machines.iter().enumerate() {
            let Some((seg, into, _)) = self.segment(i, at) else {
                continue;
            };
            let per_lap = m.segments.last().map_or(0.0, |s| {
                s.kwh_before + load_kw(s.state) * s.length.as_secs_f64() / 3600.0
            });
            kwh += per_lap * laps as f64
                + seg.kwh_before
                + load_kw(seg.state) * into.as_secs_f64() / 3600.0;
            kw += load_kw(seg.state);
        }
        (kwh, kw)
    }

    /// The meter's input registers at `at`.
    pub fn meter_registers(&self, at: Timestamp) -> [u16; METER_REGISTERS as usize] {
        let (kwh, kw) = self.meter(at);
        let centi = (kwh * 100.0).floor() as u32;
        let power = (kw as f32).to_bits();
        // CDAB: low word first.
        [
            centi as u16,
            (centi >> 16) as u16,
            (power >> 16) as u16,
            power as u16,
        ]
    }
}

fn next_state(from: State, rng: &mut Rng) -> State {
    let roll = rng.next() % 100;
    match from {
        // After running: mostly idle (waiting for the next blank), sometimes an alarm or setup.
        State::Running => match roll {
            0..55 => State::Idle,
            55..75 => State::Alarm,
            75..90 => State::Setup,
            _ => State::Stopped,
        },
        State::Stopped => State::Setup,
        State::Alarm => {
            if roll < 70 {
                State::Idle
            } else {
                State::Stopped
            }
        }
        _ => {
            if roll < 85 {
                State::Running
            } else {
                State::Stopped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(seed: u64) -> Workshop {
        Workshop::generate(
            seed,
            4,
            Timestamp::UNIX_EPOCH,
            1.0,
            SignedDuration::from_hours(1),
        )
    }

    #[test]
    fn the_same_seed_gives_the_same_workshop() {
        let (a, b) = (shop(7), shop(7));
        let at = Timestamp::from_second(1234).unwrap();
        for i in 0..4 {
            assert_eq!(a.machine_registers(i, at), b.machine_registers(i, at));
        }
        assert_ne!(shop(8).machines[0].segments, a.machines[0].segments);
    }

    #[test]
    fn registers_follow_the_state() {
        let w = shop(1);
        for i in 0..4 {
            for second in (0..3600).step_by(7) {
                let at = Timestamp::from_second(second).unwrap();
                let r = w.machine_registers(i, at).unwrap();
                match w.state(i, at).unwrap() {
                    State::Running => assert!(r[0] == 1 && r[1] == 1 && r[2] > 0 && r[3] == 0),
                    State::Alarm => assert!(r[0] == 0 && r[3] != 0),
                    State::Stopped => assert!(r[0] == 0 && r[1] == 0 && r[2] == 0),
                    State::Setup => assert!(r[0] == 0 && r[6] == 1),
                    State::Idle => assert!(r[0] == 0 && r[1] == 1 && r[3] == 0 && r[6] == 0),
                    State::Offline => unreachable!("the simulator never goes offline by itself"),
                }
                // The program name reads back from its registers, high byte first.
                let text = crate::source::modbus::decode::text(
                    &r[7..],
                    crate::source::modbus::config::ByteOrder::ABCD,
                );
                assert_eq!(text, w.machines[i].program);
            }
        }
    }

    #[test]
    fn every_machine_changes_state_within_ten_seconds_of_the_start() {
        let w = shop(42);
        let ten = Timestamp::from_second(10).unwrap();
        for i in 0..4 {
            assert!(
                !w.changes(i, Timestamp::UNIX_EPOCH, ten).is_empty(),
                "machine {i}"
            );
        }
    }

    #[test]
    fn counters_only_grow_and_energy_matches_the_loads() {
        let w = shop(3);
        let mut last_parts = [0u32; 4];
        let mut last_kwh = 0.0;
        for second in (0..7200).step_by(5) {
            let at = Timestamp::from_second(second).unwrap();
            for (i, last) in last_parts.iter_mut().enumerate() {
                let r = w.machine_registers(i, at).unwrap();
                let parts = (u32::from(r[4]) << 16) | u32::from(r[5]);
                assert!(parts >= *last, "parts fell at {second}s");
                *last = parts;
            }
            let (kwh, _) = w.meter(at);
            assert!(kwh >= last_kwh);
            last_kwh = kwh;
        }
        // Two hours at no less than the 2 kW base load: at least 4 kWh.
        assert!(last_kwh >= 4.0);
    }
}
