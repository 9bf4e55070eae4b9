//! The programme's indicators as pure functions over plain numbers.
//!
//! Every ratio is returned as `None` when its denominator is zero, never as 0 or NaN: "no
//! planned time" is not "zero utilisation". The county adds numerators and denominators across
//! enterprises ([`Fleet::add`]) and divides once; it never averages ratios.

use crate::model::Carrier;
use serde::{Deserialize, Serialize};

/// `numerator / denominator`, or `None` without a positive denominator.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0 && numerator.is_finite()).then(|| numerator / denominator)
}

/// Availability (ISO 22400-2): actual production time ÷ planned busy time.
pub fn availability(running_in_planned_s: f64, planned_busy_s: f64) -> Option<f64> {
    ratio(running_in_planned_s, planned_busy_s)
}

/// Effectiveness (performance): ideal cycle time × parts made ÷ actual production time.
pub fn effectiveness(ideal_cycle_s: f64, parts_total: i64, running_s: f64) -> Option<f64> {
    ratio(ideal_cycle_s * parts_total as f64, running_s)
}

/// Quality rate: good parts ÷ parts made.
pub fn quality(parts_good: i64, parts_total: i64) -> Option<f64> {
    ratio(parts_good as f64, parts_total as f64)
}

/// OEE = availability × effectiveness × quality, where all three exist.
pub fn oee(
    availability: Option<f64>,
    effectiveness: Option<f64>,
    quality: Option<f64>,
) -> Option<f64> {
    Some(availability? * effectiveness? * quality?)
}

/// The fleet of one enterprise (or, summed, of a sector or the county) in one window: the
/// numerators and denominators of the digital-workshop indicators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// Production machines in the register.
    pub machines_total: u64,
    /// Digital machines (数字化设备) in the register.
    pub machines_digital: u64,
    /// CNC machines (数控设备) in the register.
    pub machines_cnc: u64,
    /// Machines that delivered valid data in the window.
    pub machines_networked: u64,
    /// Digital machines that delivered valid data in the window.
    pub machines_digital_networked: u64,
    /// Running time inside planned busy time, summed over networked CNC machines.
    pub cnc_running_s: f64,
    /// Planned busy time, summed over networked CNC machines.
    pub cnc_planned_s: f64,
}

impl Fleet {
    /// Machine networking rate (机器联网率) over the whole register.
    pub fn networking_rate(&self) -> Option<f64> {
        ratio(self.machines_networked as f64, self.machines_total as f64)
    }

    /// The two-step national definition: networked digital machines ÷ digital machines
    /// (数字化设备联网率).
    pub fn networking_rate_digital(&self) -> Option<f64> {
        ratio(
            self.machines_digital_networked as f64,
            self.machines_digital as f64,
        )
    }

    /// CNC rate (数控化率): CNC machines ÷ production machines.
    pub fn cnc_rate(&self) -> Option<f64> {
        ratio(self.machines_cnc as f64, self.machines_total as f64)
    }

    /// CNC utilisation (数控设备利用率): summed running ÷ summed planned busy time.
    pub fn cnc_utilisation(&self) -> Option<f64> {
        ratio(self.cnc_running_s, self.cnc_planned_s)
    }

    /// Two fleets together: numerators and denominators add.
    pub fn add(&self, other: &Fleet) -> Fleet {
        Fleet {
            machines_total: self.machines_total + other.machines_total,
            machines_digital: self.machines_digital + other.machines_digital,
            machines_cnc: self.machines_cnc + other.machines_cnc,
            machines_networked: self.machines_networked + other.machines_networked,
            machines_digital_networked: self.machines_digital_networked
                + other.machines_digital_networked,
            cnc_running_s: self.cnc_running_s + other.cnc_running_s,
            cnc_planned_s: self.cnc_planned_s + other.cnc_planned_s,
        }
    }
}

/// Which green figures the enterprise measures at all: a figure no meter measures is "not
/// measured" (absent from `green` lines, `null` in the API, 未计量 on the board), never 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metered {
    /// A meter of any energy carrier (everything but water) with a reading to account.
    pub energy: bool,
    /// An electricity meter with a reading to account.
    pub electricity: bool,
    /// A water meter with a reading to account.
    pub water: bool,
}

impl Metered {
    /// From each meter's carrier and whether it measured (delivered a reading in the window).
    pub fn of(meters: impl IntoIterator<Item = (Carrier, bool)>) -> Metered {
        let mut m = Metered::default();
        for (carrier, accounted) in meters {
            if !accounted {
                continue;
            }
            match carrier {
                Carrier::Water => m.water = true,
                Carrier::Electricity => {
                    m.electricity = true;
                    m.energy = true;
                }
                _ => m.energy = true,
            }
        }
        m
    }
}

/// Green-manufacturing figures of one enterprise in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Green {
    /// Comprehensive energy consumption, tonnes of standard coal (water excluded).
    pub energy_tce: f64,
    pub electricity_kwh: f64,
    pub water_t: f64,
    /// Value added, 10k CNY (an estimate, labelled with its method).
    pub value_added_10k_cny: f64,
}

impl Green {
    /// Energy per unit of value added (万元增加值能耗), tce per 10k CNY.
    pub fn tce_per_10k_cny(&self) -> Option<f64> {
        ratio(self.energy_tce, self.value_added_10k_cny)
    }

    /// The inverse: value added per tce, 10k CNY per tce.
    pub fn value_added_per_tce(&self) -> Option<f64> {
        ratio(self.value_added_10k_cny, self.energy_tce)
    }

    /// Water per unit of value added (万元增加值用水量), t per 10k CNY.
    pub fn water_t_per_10k_cny(&self) -> Option<f64> {
        ratio(self.water_t, self.value_added_10k_cny)
    }

    pub fn add(&self, other: &Green) -> Green {
        Green {
            energy_tce: self.energy_tce + other.energy_tce,
            electricity_kwh: self.electricity_kwh + other.electricity_kwh,
            water_t: self.water_t + other.water_t,
            value_added_10k_cny: self.value_added_10k_cny + other.value_added_10k_cny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_of_an_eight_hour_shift_with_a_break() {
        // 8 h shift − 0.5 h break = 7.5 h planned busy time; 5 h running → 5 / 7.5 = 0.6667.
        let a = availability(5.0 * 3600.0, 7.5 * 3600.0).unwrap();
        assert!((a - 0.666_666_666_7).abs() < 1e-9);
    }

    #[test]
    fn oee_multiplies_its_three_factors_and_needs_all_of_them() {
        // 300 parts at an ideal 50 s = 15000 s of ideal time in 5 h (18000 s) running → 0.8333;
        // 285 good of 300 → 0.95; availability 0.6667 → OEE = 0.6667 × 0.8333 × 0.95 = 0.5278.
        let a = availability(18_000.0, 27_000.0);
        let e = effectiveness(50.0, 300, 18_000.0);
        let q = quality(285, 300);
        assert!((e.unwrap() - 0.833_333_333).abs() < 1e-6);
        assert!((q.unwrap() - 0.95).abs() < 1e-12);
        assert!((oee(a, e, q).unwrap() - 0.527_777_777).abs() < 1e-6);
        assert_eq!(oee(a, e, None), None);
    }

    #[test]
    fn no_denominator_is_no_ratio() {
        assert_eq!(availability(0.0, 0.0), None);
        assert_eq!(Fleet::default().networking_rate(), None);
        assert_eq!(Green::default().tce_per_10k_cny(), None);
    }

    #[test]
    fn fleet_rates_of_a_small_workshop() {
        // 7 machines, 5 digital, 4 CNC; 4 networked, all digital; CNC running 20 h of 30 h.
        let f = Fleet {
            machines_total: 7,
            machines_digital: 5,
            machines_cnc: 4,
            machines_networked: 4,
            machines_digital_networked: 4,
            cnc_running_s: 20.0 * 3600.0,
            cnc_planned_s: 30.0 * 3600.0,
        };
        // 4 / 7 = 0.5714; 4 / 5 = 0.8; 4 / 7 = 0.5714; 20 / 30 = 0.6667.
        assert!((f.networking_rate().unwrap() - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(f.networking_rate_digital(), Some(0.8));
        assert!((f.cnc_rate().unwrap() - 0.571_428_571).abs() < 1e-6);
        assert!((f.cnc_utilisation().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn green_intensities() {
        // 12 000 kWh × 0.1229 kgce/kWh = 1474.8 kgce = 1.4748 tce; value added 3.0 (10k CNY)
        // → 1.4748 / 3.0 = 0.4916 tce per 10k CNY; inverse 2.0342; water 90 t / 3.0 = 30.
        let g = Green {
            energy_tce: 1.4748,
            electricity_kwh: 12_000.0,
            water_t: 90.0,
            value_added_10k_cny: 3.0,
        };
        assert!((g.tce_per_10k_cny().unwrap() - 0.4916).abs() < 1e-12);
        assert!((g.value_added_per_tce().unwrap() - 2.034_174_125).abs() < 1e-6);
        assert!((g.water_t_per_10k_cny().unwrap() - 30.0).abs() < 1e-12);
    }
}
