//! HJ 212's code tables: system codes (ST), command codes (CN), data flags and the pollutant
//! codes an outlet's logger sends most, with names and units.
//!
//! The pollutant codes are those of HJ 212-2017 Appendix B (tables B.1 water and B.2 air, six
//! characters: `w01018`), each with the three-character code HJ/T 212-2005 used for the same
//! pollutant (`011`) so that older loggers map to the same signal. Codes and units were taken
//! from the standard's tables as reproduced in the public pollutant lists of logger
//! operation software (e.g. the `polcodeList17.js` and `polcodeList05.js` tables of
//! lingkejia/bocon-operation-app), where each gives the default unit first: wastewater flow
//! `w00000` in L/s with its total (`Cou`) in m³, exhaust flow `a00000` in m³/s. A logger can be
//! set to another unit (m³/h is common for wastewater flow); the config then says so. Any
//! code not in the table is configured with its name and unit.

use std::fmt;

/// A data flag (数据标记): the state of the analyser when the value was taken. Kept with every
/// value; a value flagged as maintenance or calibration never raises an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataFlag {
    /// N: the analyser works normally.
    Normal,
    /// F: the analyser (or the plant) is stopped.
    Stopped,
    /// M: maintenance.
    Maintenance,
    /// S: a value set by hand.
    Manual,
    /// D: the analyser is faulty.
    Fault,
    /// C: calibration.
    Calibration,
    /// T: over the analyser's measuring range.
    OverRange,
    /// B: communication with the analyser failed.
    CommunicationFault,
}

impl DataFlag {
    pub fn parse(text: &str) -> Option<DataFlag> {
        Some(match text {
            "N" => DataFlag::Normal,
            "F" => DataFlag::Stopped,
            "M" => DataFlag::Maintenance,
            "S" => DataFlag::Manual,
            "D" => DataFlag::Fault,
            "C" => DataFlag::Calibration,
            "T" => DataFlag::OverRange,
            "B" => DataFlag::CommunicationFault,
            _ => return None,
        })
    }

    /// The letter on the wire, which is also what the store's `flag` field holds.
    pub fn as_str(self) -> &'static str {
        match self {
            DataFlag::Normal => "N",
            DataFlag::Stopped => "F",
            DataFlag::Maintenance => "M",
            DataFlag::Manual => "S",
            DataFlag::Fault => "D",
            DataFlag::Calibration => "C",
            DataFlag::OverRange => "T",
            DataFlag::CommunicationFault => "B",
        }
    }

    /// Whether a value with this flag may be judged against a limit: not while the analyser
    /// is maintained, calibrated, stopped, faulty or unreachable.
    pub fn may_alert(self) -> bool {
        matches!(
            self,
            DataFlag::Normal | DataFlag::OverRange | DataFlag::Manual
        )
    }
}

impl fmt::Display for DataFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The system code (ST): what kind of monitoring the logger belongs to.
pub fn system_name(st: u8) -> Option<&'static str> {
    Some(match st {
        21 => "surface water quality (地表水质量监测)",
        22 => "air quality (空气质量监测)",
        23 => "acoustic environment quality (声环境质量监测)",
        24 => "groundwater quality (地下水质量监测)",
        25 => "soil quality (土壤质量监测)",
        26 => "seawater quality (海水质量监测)",
        27 => "volatile organic compounds (挥发性有机物监测)",
        31 => "air pollution source (大气环境污染源)",
        32 => "surface water pollution source (地表水体环境污染源)",
        33 => "groundwater pollution source (地下水体环境污染源)",
        34 => "marine pollution source (海洋环境污染源)",
        35 => "soil pollution source (土壤环境污染源)",
        36 => "noise pollution source (声环境污染源)",
        37 => "vibration pollution source (振动环境污染源)",
        38 => "radioactive pollution source (放射性环境污染源)",
        39 => "construction site dust (工地扬尘污染源)",
        41 => "electromagnetic pollution source (电磁环境污染源)",
        51 => "flue gas emission process (烟气排放过程监控)",
        52 => "wastewater discharge process (污水排放过程监控)",
        91 => "system interaction (系统交互)",
        _ => return None,
    })
}

/// Real-time data (实时数据).
pub const CN_REALTIME: u16 = 2011;
/// Minute data (分钟数据).
pub const CN_MINUTE: u16 = 2051;
/// Hourly data (小时数据).
pub const CN_HOURLY: u16 = 2061;
/// Daily data (日历史数据).
pub const CN_DAILY: u16 = 2031;
/// Data acknowledgement (数据应答): what the platform answers to data the logger asked to
/// have acknowledged.
pub const CN_DATA_ACK: u16 = 9014;

/// The command code (CN) in words.
pub fn command_name(cn: u16) -> Option<&'static str> {
    Some(match cn {
        1011 => "read the logger's time (提取现场机时间)",
        1012 => "set the logger's time (设置现场机时间)",
        1013 => "time calibration request (现场机时间校准请求)",
        1061 => "read the real-time data interval (提取实时数据间隔)",
        1062 => "set the real-time data interval (设置实时数据间隔)",
        2011 => "real-time data (实时数据)",
        2012 => "stop real-time data (停止察看实时数据)",
        2021 => "equipment running state (设备运行状态)",
        2031 => "daily data (日历史数据)",
        2041 => "equipment running time, daily (设备运行时间日历史数据)",
        2051 => "minute data (分钟数据)",
        2061 => "hourly data (小时数据)",
        2081 => "logger restart time (数采仪开机时间)",
        3020 => "on-site equipment information (现场机信息)",
        9011 => "request answer (请求应答)",
        9012 => "execution result (执行结果)",
        9013 => "notification answer (通知应答)",
        9014 => "data answer (数据应答)",
        _ => return None,
    })
}

/// Whether a command code carries monitoring data that the logger uploads on its own (and so
/// may ask to have acknowledged with 9014).
pub fn is_data_upload(cn: u16) -> bool {
    ((2000..3000).contains(&cn) && cn != 2012) || cn == 3020
}

/// One pollutant code with its signal name and units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pollutant {
    /// The HJ 212-2017 code.
    pub code: &'static str,
    /// The HJ/T 212-2005 code for the same pollutant, where it had one.
    pub code_2005: Option<&'static str>,
    /// The signal name its values get by default.
    pub signal: &'static str,
    /// The standard's Chinese name.
    pub chinese: &'static str,
    /// The unit of Rtd, Avg, Min and Max (empty for pH).
    pub unit: &'static str,
    /// The unit of Cou, the total over the period, where the pollutant has one.
    pub total_unit: Option<&'static str>,
}

const fn p(
    code: &'static str,
    code_2005: Option<&'static str>,
    signal: &'static str,
    chinese: &'static str,
    unit: &'static str,
    total_unit: Option<&'static str>,
) -> Pollutant {
    Pollutant {
        code,
        code_2005,
        signal,
        chinese,
        unit,
        total_unit,
    }
}

/// The common wastewater and exhaust pollutants.
pub const POLLUTANTS: &[Pollutant] = &[
    // Wastewater outlets (ST 32).
    p(
        "w00000",
        Some("B01"),
        "wastewater_flow",
        "污水(废水)流量",
        "L/s",
        Some("m³"),
    ),
    p("w01001", Some("001"), "ph", "pH值", "", None),
    p(
        "w01018",
        Some("011"),
        "cod",
        "化学需氧量",
        "mg/L",
        Some("kg"),
    ),
    p(
        "w21003",
        Some("060"),
        "ammonia_nitrogen",
        "氨氮",
        "mg/L",
        Some("kg"),
    ),
    p(
        "w21011",
        Some("101"),
        "total_phosphorus",
        "总磷",
        "mg/L",
        Some("kg"),
    ),
    p(
        "w21001",
        Some("065"),
        "total_nitrogen",
        "总氮",
        "mg/L",
        Some("kg"),
    ),
    p(
        "w01012",
        Some("003"),
        "suspended_solids",
        "悬浮物",
        "mg/L",
        Some("kg"),
    ),
    p(
        "w01019",
        None,
        "permanganate_index",
        "高锰酸盐指数",
        "mg/L",
        Some("kg"),
    ),
    p("w01009", None, "dissolved_oxygen", "溶解氧", "mg/L", None),
    p("w01010", None, "water_temperature", "水温", "°C", None),
    p("w01014", None, "conductivity", "电导率", "μS/cm", None),
    // Exhaust outlets (ST 31).
    p(
        "a00000",
        Some("B02"),
        "exhaust_flow",
        "废气流量",
        "m³/s",
        Some("m³"),
    ),
    p(
        "a34013",
        Some("01"),
        "particulates",
        "烟尘",
        "mg/m³",
        Some("kg"),
    ),
    p("a21026", Some("02"), "so2", "二氧化硫", "mg/m³", Some("kg")),
    p("a21002", Some("03"), "nox", "氮氧化物", "mg/m³", Some("kg")),
    p("a21005", Some("04"), "co", "一氧化碳", "mg/m³", Some("kg")),
    p("a24088", None, "nmhc", "非甲烷总烃", "mg/m³", Some("kg")),
    p("a19001", Some("S01"), "oxygen", "氧气含量", "%", None),
    p(
        "a01011",
        Some("S02"),
        "flue_gas_velocity",
        "烟气流速",
        "m/s",
        None,
    ),
    p(
        "a01012",
        Some("S03"),
        "flue_gas_temperature",
        "烟气温度",
        "°C",
        None,
    ),
    p(
        "a01014",
        Some("S05"),
        "flue_gas_humidity",
        "烟气湿度",
        "%",
        None,
    ),
    p(
        "a01013",
        Some("S08"),
        "flue_gas_pressure",
        "烟气压力",
        "kPa",
        None,
    ),
];

/// The table's entry for a 2017 or a 2005 code.
pub fn pollutant(code: &str) -> Option<&'static Pollutant> {
    POLLUTANTS
        .iter()
        .find(|p| p.code == code || p.code_2005 == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_and_only_a_working_analyser_raises_alerts() {
        for letter in ["N", "F", "M", "S", "D", "C", "T", "B"] {
            assert_eq!(DataFlag::parse(letter).unwrap().as_str(), letter);
        }
        assert_eq!(DataFlag::parse("n"), None);
        assert_eq!(DataFlag::parse("H"), None);
        assert!(DataFlag::Normal.may_alert());
        assert!(!DataFlag::Maintenance.may_alert());
        assert!(!DataFlag::Calibration.may_alert());
        assert!(!DataFlag::Fault.may_alert());
    }

    #[test]
    fn old_and_new_codes_name_the_same_pollutant() {
        assert_eq!(pollutant("011"), pollutant("w01018"));
        assert_eq!(pollutant("w01018").unwrap().signal, "cod");
        assert_eq!(pollutant("B01").unwrap().unit, "L/s");
        assert_eq!(pollutant("w00000").unwrap().total_unit, Some("m³"));
        assert_eq!(pollutant("w99999"), None);
        // No code twice, no 2005 code that is also a 2017 code.
        for (i, a) in POLLUTANTS.iter().enumerate() {
            for b in &POLLUTANTS[i + 1..] {
                assert_ne!(a.code, b.code);
                assert_ne!(a.signal, b.signal);
                assert!(a.code_2005.is_none() || a.code_2005 != b.code_2005);
            }
        }
    }

    #[test]
    fn data_uploads_are_told_from_commands() {
        for cn in [
            CN_REALTIME,
            CN_MINUTE,
            CN_HOURLY,
            CN_DAILY,
            2041,
            2021,
            3020,
        ] {
            assert!(is_data_upload(cn), "{cn}");
        }
        for cn in [1011, 1062, 2012, 9011, 9014] {
            assert!(!is_data_upload(cn), "{cn}");
        }
        assert_eq!(
            system_name(32).map(|s| s.contains("surface water")),
            Some(true)
        );
        assert!(command_name(2061).unwrap().starts_with("hourly"));
        assert_eq!(system_name(99), None);
    }
}
