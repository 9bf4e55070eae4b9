//! Energy and water: meter readings to quantities per window, and quantities to tonnes of
//! standard coal (吨标准煤, tce).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::config::{ElectricityMethod, EnergyConfig};
use super::timemodel::nanos;
use super::windows::Window;
use crate::model::Carrier;

/// Electricity by its calorific value (当量值): 3600 kJ/kWh ÷ 29 307 kJ/kgce = 0.1229 kgce/kWh.
pub const ELECTRICITY_CALORIFIC_KGCE_PER_KWH: f64 = 0.1229;

/// Reference coefficients in kgce per base unit, from GB/T 2589-2020 "General principles for
/// calculation of the comprehensive energy consumption", Annex A (reference coefficients of
/// conversion to standard coal). Where the standard gives a range (natural gas 1.1000–1.3300
/// kgce/m³), the mean used in provincial statistics is taken; a site that knows its own figure
/// sets `[energy] kgce_per_unit`. Water is not energy and has no coefficient: it is reported on
/// its own and never folded into energy.
pub fn reference_kgce_per_unit(carrier: Carrier) -> Option<f64> {
    match carrier {
        Carrier::Electricity => Some(ELECTRICITY_CALORIFIC_KGCE_PER_KWH),
        // 38 931 kJ/m³ average low calorific value (35 544 kJ/m³ at the table's mid-range).
        Carrier::NaturalGas => Some(1.2143),
        // 42 652 kJ/kg.
        Carrier::Diesel => Some(1.4571),
        // 50 179 kJ/kg.
        Carrier::Lpg => Some(1.7143),
        // Low-pressure saturated steam, 3763 MJ/t (the 2008 edition's table value; the 2020
        // edition computes steam from its enthalpy, so sites with other steam override it).
        Carrier::Steam => Some(128.6),
        // 0.034 12 kgce/MJ.
        Carrier::Heat => Some(34.12),
        Carrier::Water => None,
    }
}

/// The coefficients in force for a site: the reference table, the electricity method, and the
/// site's own overrides.
#[derive(Debug, Clone)]
pub struct Coefficients {
    pub electricity_method: ElectricityMethod,
    table: BTreeMap<Carrier, f64>,
}

impl Coefficients {
    pub fn new(cfg: &EnergyConfig) -> Self {
        let mut table = BTreeMap::new();
        for carrier in [
            Carrier::Electricity,
            Carrier::NaturalGas,
            Carrier::Diesel,
            Carrier::Lpg,
            Carrier::Steam,
            Carrier::Heat,
        ] {
            if let Some(k) = reference_kgce_per_unit(carrier) {
                table.insert(carrier, k);
            }
        }
        if cfg.electricity_method == ElectricityMethod::Equivalent {
            table.insert(
                Carrier::Electricity,
                cfg.electricity_equivalent_kgce_per_kwh,
            );
        }
        for (carrier, k) in &cfg.kgce_per_unit {
            if *carrier != Carrier::Water {
                table.insert(*carrier, *k);
            }
        }
        Coefficients {
            electricity_method: cfg.electricity_method,
            table,
        }
    }

    /// kgce per base unit of a carrier; `None` for water.
    pub fn kgce_per_unit(&self, carrier: Carrier) -> Option<f64> {
        self.table.get(&carrier).copied()
    }

    /// Tonnes of standard coal for a quantity in the carrier's base unit.
    pub fn tce(&self, carrier: Carrier, quantity: f64) -> Option<f64> {
        self.kgce_per_unit(carrier).map(|k| quantity * k / 1000.0)
    }
}

/// How many base units (kWh, m3, t, kg, GJ) one unit of `unit` is, for a carrier.
pub fn to_base_unit(carrier: Carrier, unit: &str) -> Option<f64> {
    let u = unit.trim();
    let factor = match carrier {
        Carrier::Electricity => match u {
            "kWh" | "kwh" => 1.0,
            "MWh" | "mwh" => 1000.0,
            "Wh" | "wh" => 0.001,
            _ => return None,
        },
        Carrier::NaturalGas => match u {
            "m3" | "Nm3" | "m³" => 1.0,
            _ => return None,
        },
        // A cubic metre of water is a tonne.
        Carrier::Water => match u {
            "t" | "m3" | "m³" => 1.0,
            _ => return None,
        },
        Carrier::Diesel | Carrier::Lpg => match u {
            "kg" => 1.0,
            "t" => 1000.0,
            _ => return None,
        },
        Carrier::Steam => match u {
            "t" => 1.0,
            "kg" => 0.001,
            _ => return None,
        },
        Carrier::Heat => match u {
            "GJ" => 1.0,
            "MJ" => 0.001,
            "kWh" => 0.0036,
            _ => return None,
        },
    };
    Some(factor)
}

/// What a new counter reading meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CounterStep {
    /// The first reading: nothing to count yet.
    First,
    /// Consumption since the previous reading.
    Delta(f64),
    /// The counter went down and a wrap past the modulus was not plausible: it was reset, and
    /// counts from zero.
    Reset(f64),
    /// The counter passed its modulus and started again.
    Rollover(f64),
}

impl CounterStep {
    pub fn delta(self) -> f64 {
        match self {
            CounterStep::First => 0.0,
            CounterStep::Delta(d) | CounterStep::Reset(d) | CounterStep::Rollover(d) => d,
        }
    }
}

/// How a falling counter may have wrapped: the modulus it counts to, and what bounds the
/// consumption a wrap implies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wrap {
    /// The counter's modulus (1 000 000 for a register that counts to 999 999.99), in the
    /// counter's units.
    pub modulus: f64,
    /// The most the meter can count per hour (its rated maximum: kW for kWh), when known.
    pub max_rate: Option<f64>,
}

/// How many times the recent rate a wrap may imply and still be taken as one.
pub const RECENT_RATE_MARGIN: f64 = 2.0;

/// A cumulative counter (parts, kWh, m³): turns readings into increments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub last: Option<f64>,
    pub last_at: Option<Timestamp>,
    /// When the reading last changed (a counter with a coarse last digit stands still for
    /// several polls): the consumption a wrap implies is judged over the time since.
    #[serde(default)]
    pub changed_at: Option<Timestamp>,
    /// The rate between the last two changes, in counter units per hour.
    #[serde(default)]
    pub recent_rate: Option<f64>,
}

impl Counter {
    /// Takes a reading. A rise is consumption. A drop is a wrap past `wrap`'s modulus when the
    /// consumption that implies (modulus − last + value) is plausible, a reset (a replaced
    /// meter, a cleared counter) otherwise; see [`wrap_is_plausible`].
    pub fn step(&mut self, value: f64, at: Timestamp, wrap: Option<Wrap>) -> CounterStep {
        let step = match self.last {
            None => CounterStep::First,
            Some(last) if value >= last => CounterStep::Delta(value - last),
            Some(last) => match wrap {
                Some(w) => {
                    let implied = w.modulus - last + value;
                    let since = self.changed_at.or(self.last_at).unwrap_or(at);
                    let hours = at.duration_since(since).as_secs_f64().max(0.0) / 3600.0;
                    if wrap_is_plausible(implied, hours, last, w, self.recent_rate) {
                        CounterStep::Rollover(implied)
                    } else {
                        CounterStep::Reset(value.max(0.0))
                    }
                }
                None => CounterStep::Reset(value.max(0.0)),
            },
        };
        if self.last != Some(value) {
            if let (CounterStep::Delta(d) | CounterStep::Rollover(d), Some(since)) =
                (step, self.changed_at.or(self.last_at))
            {
                let hours = at.duration_since(since).as_secs_f64() / 3600.0;
                if hours > 0.0 {
                    self.recent_rate = Some(d / hours);
                }
            } else if let CounterStep::Reset(_) = step {
                self.recent_rate = None;
            }
            self.changed_at = Some(at);
        }
        self.last = Some(value);
        self.last_at = Some(at);
        step
    }
}

/// Whether a drop of a counter with modulus `wrap.modulus` from `last` is a wrap that consumed
/// `implied` in `hours`:
///
/// - with the meter's rated maximum (`max_rate`, units per hour): `implied` ≤ max_rate × hours;
/// - else with a recent rate: `implied` ≤ [`RECENT_RATE_MARGIN`] × recent rate × hours;
/// - else (no rate known yet): `last` was in the top tenth below the modulus.
///
/// `hours` runs from the last change of the reading, so a coarse last digit that stood still
/// for a while does not make a true wrap look too fast.
pub fn wrap_is_plausible(
    implied: f64,
    hours: f64,
    last: f64,
    wrap: Wrap,
    recent_rate: Option<f64>,
) -> bool {
    if !(implied.is_finite() && implied >= 0.0) {
        return false;
    }
    match (wrap.max_rate, recent_rate) {
        (Some(max), _) => implied <= max * hours,
        (None, Some(rate)) => implied <= RECENT_RATE_MARGIN * rate * hours,
        (None, None) => last >= wrap.modulus * 0.9,
    }
}

/// Totals of one meter in one window, in the carrier's base unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnergyTotals {
    pub quantity: f64,
    /// For a meter on a machine: the quantity by the machine's state, in `State::ALL` order.
    pub by_state: [f64; 6],
    /// Stretches without readings longer than `[energy] max_gap`.
    pub gaps: i64,
    /// Counter resets seen.
    pub resets: i64,
    /// Counter wraps past the modulus seen.
    #[serde(default)]
    pub rollovers: i64,
}

/// Spreads `quantity`, consumed evenly over `[from, to)`, over the windows it overlaps. With
/// `from == to` it all goes to the windows containing `to`. `shares` gives the fraction of
/// each state (for by-state totals), or `None`.
pub fn distribute(
    totals: &mut BTreeMap<Window, EnergyTotals>,
    windows: &[Window],
    (from, to): (Timestamp, Timestamp),
    quantity: f64,
    shares: Option<&[f64; 6]>,
) {
    let length = nanos(from, to);
    for window in windows {
        let fraction = if length <= 0 {
            if window.contains(to) { 1.0 } else { 0.0 }
        } else {
            let (s, e) = (window.start.max(from), window.end.min(to));
            if e <= s {
                0.0
            } else {
                nanos(s, e) as f64 / length as f64
            }
        };
        if fraction <= 0.0 {
            continue;
        }
        let t = totals.entry(window.clone()).or_default();
        let q = quantity * fraction;
        t.quantity += q;
        if let Some(shares) = shares {
            for (slot, share) in t.by_state.iter_mut().zip(shares) {
                *slot += q * share;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn electricity_by_calorific_or_equivalent_value() {
        let calorific = Coefficients::new(&EnergyConfig::default());
        // 10 000 kWh × 0.1229 kgce/kWh = 1229 kgce = 1.229 tce.
        assert!((calorific.tce(Carrier::Electricity, 10_000.0).unwrap() - 1.229).abs() < 1e-12);
        let equivalent = Coefficients::new(&EnergyConfig {
            electricity_method: ElectricityMethod::Equivalent,
            electricity_equivalent_kgce_per_kwh: 0.3035,
            ..Default::default()
        });
        // 10 000 kWh × 0.3035 = 3035 kgce = 3.035 tce.
        assert!((equivalent.tce(Carrier::Electricity, 10_000.0).unwrap() - 3.035).abs() < 1e-12);
        // 1000 m³ natural gas × 1.2143 = 1.2143 tce; water has none.
        assert!((calorific.tce(Carrier::NaturalGas, 1000.0).unwrap() - 1.2143).abs() < 1e-12);
        assert_eq!(calorific.tce(Carrier::Water, 1000.0), None);
    }

    #[test]
    fn a_site_override_replaces_the_reference_coefficient() {
        let cfg = EnergyConfig {
            kgce_per_unit: [(Carrier::NaturalGas, 1.1)].into_iter().collect(),
            ..Default::default()
        };
        let c = Coefficients::new(&cfg);
        // 1000 m³ × 1.1 = 1.1 tce.
        assert!((c.tce(Carrier::NaturalGas, 1000.0).unwrap() - 1.1).abs() < 1e-12);
    }

    #[test]
    fn counters_handle_resets_and_rollovers() {
        let mut c = Counter::default();
        assert_eq!(c.step(100.0, t(0), None), CounterStep::First);
        assert_eq!(c.step(130.0, t(1), None), CounterStep::Delta(30.0));
        // A replaced meter restarts at 5: it counted 5 since the reset.
        assert_eq!(c.step(5.0, t(2), None), CounterStep::Reset(5.0));
        // A 16-bit counter (modulus 65 536) at 65 530 reads 4: it counted 65 536 − 65 530 + 4
        // = 10 (65 531 … 65 535 is 5, then 0 … 4 is 5 more). No rate known yet, and 65 530 is
        // in the top tenth (≥ 58 982.4): a wrap.
        let wrap = Some(Wrap {
            modulus: 65_536.0,
            max_rate: None,
        });
        let mut parts = Counter::default();
        parts.step(65_530.0, t(0), wrap);
        assert_eq!(parts.step(4.0, t(1), wrap), CounterStep::Rollover(10.0));
        // 4 → 1000 in a second: a rate of 996 a second. A drop to 10 a second later would mean
        // 65 536 − 1000 + 10 = 64 546 in that second, over 2 × 996 = 1992: a reset.
        parts.step(1000.0, t(2), wrap);
        assert_eq!(parts.step(10.0, t(3), wrap), CounterStep::Reset(10.0));
    }

    #[test]
    fn a_wrap_is_judged_by_the_rated_maximum_or_the_recent_rate() {
        let wrap = Wrap {
            modulus: 1_000_000.0,
            max_rate: Some(10.0),
        };
        // 7.01 kWh in 100 ms is 252 360 kW; the meter's maximum, 10 kW, allows
        // 10 × 0.1 / 3600 = 0.000 28 kWh: a reset, even with the last reading in the top tenth.
        assert!(!wrap_is_plausible(
            7.01,
            0.1 / 3600.0,
            999_992.99,
            wrap,
            None
        ));
        // 0.12 kWh in a minute is 7.2 kW: within 10 kW.
        assert!(wrap_is_plausible(0.12, 1.0 / 60.0, 999_999.94, wrap, None));
        let no_max = Wrap {
            max_rate: None,
            ..wrap
        };
        // Recent rate 3.6 kW: a minute allows 2 × 3.6 / 60 = 0.12 kWh; 0.10 passes, 0.13 not.
        assert!(wrap_is_plausible(
            0.10,
            1.0 / 60.0,
            999_999.94,
            no_max,
            Some(3.6)
        ));
        assert!(!wrap_is_plausible(
            0.13,
            1.0 / 60.0,
            999_999.87,
            no_max,
            Some(3.6)
        ));
        // Nothing known: the top tenth below the modulus (≥ 900 000) decides.
        assert!(wrap_is_plausible(7.01, 0.0, 999_992.99, no_max, None));
        assert!(!wrap_is_plausible(500_000.0, 0.0, 500_000.0, no_max, None));
    }

    #[test]
    fn a_coarse_counter_is_judged_from_its_last_change() {
        // 0.01 kWh resolution at 3.6 kW: the reading moves every 10 s, polled every second.
        let wrap = Some(Wrap {
            modulus: 1_000_000.0,
            max_rate: None,
        });
        let mut c = Counter::default();
        c.step(999_999.98, t(0), wrap);
        for s in 1..10 {
            assert_eq!(c.step(999_999.98, t(s), wrap), CounterStep::Delta(0.0));
        }
        c.step(999_999.99, t(10), wrap);
        // Rate 0.01 kWh / 10 s = 3.6 kW. At 20 s the reading wraps to 0.00: 0.01 kWh in the
        // 10 s since the last change, within 2 × 3.6 × 10 / 3600 = 0.02. Measured from the
        // previous poll (1 s) it would have looked like 36 kW, over the 0.002 kWh allowed.
        for s in 11..20 {
            c.step(999_999.99, t(s), wrap);
        }
        match c.step(0.0, t(20), wrap) {
            CounterStep::Rollover(d) => assert!((d - 0.01).abs() < 1e-6, "{d}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn consumption_across_a_window_boundary_is_split_by_time() {
        let w1 = Window {
            kind: super::super::windows::WindowKind::Hour,
            start: t(0),
            end: t(3600),
            shift: None,
        };
        let w2 = Window {
            start: t(3600),
            end: t(7200),
            ..w1.clone()
        };
        let mut totals = BTreeMap::new();
        // 12 kWh between 00:50 and 01:10 (a 20-minute gap): 10 min in each hour → 6 + 6.
        distribute(
            &mut totals,
            &[w1.clone(), w2.clone()],
            (t(3000), t(4200)),
            12.0,
            None,
        );
        assert!((totals[&w1].quantity - 6.0).abs() < 1e-9);
        assert!((totals[&w2].quantity - 6.0).abs() < 1e-9);
    }

    #[test]
    fn units_convert_to_the_carrier_base_unit() {
        assert_eq!(to_base_unit(Carrier::Electricity, "MWh"), Some(1000.0));
        assert_eq!(to_base_unit(Carrier::Water, "m3"), Some(1.0));
        assert_eq!(to_base_unit(Carrier::Electricity, "m3"), None);
    }
}
