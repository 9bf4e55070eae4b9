//! The data contract with the store: every measurement, tag and field name Shopfloor writes,
//! as DESIGN.md ("Data contract with the store") and the README ("What is written") describe
//! them. The engine, the Modbus health lines, the county's reader and ingest and the tests all
//! name lines through these items, so a name is spelt once, and [`MEASUREMENTS`] lists which
//! tags and fields each measurement carries.
//!
//! A name here is a promise to every dashboard and every county query: renaming one, or
//! changing a field's type, breaks them (InfluxDB rejects a whole batch on a field-type
//! conflict). Extend DESIGN's table first, then add the name here and to [`MEASUREMENTS`];
//! `a_renamed_name_fails_here_first` pins every name as text.
//!
//! Measurements and tags are flat constants (`MEASUREMENT_FLEET`, `TAG_WINDOW`); the fields of
//! each measurement sit in a module named after it (`fleet::MACHINES_TOTAL`), since two
//! measurements may each have a field of the same name (`value`).

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// Raw signals: one line per machine or meter per poll or message, one field per signal
/// (the site's own signal names, typed).
pub const MEASUREMENT_SIGNAL: &str = "signal";
/// A machine's state change, and its periodic heartbeat (fields in [`machine_state`]).
pub const MEASUREMENT_MACHINE_STATE: &str = "machine_state";
/// A machine's time model per window (fields in [`machine_time`]).
pub const MEASUREMENT_MACHINE_TIME: &str = "machine_time";
/// The enterprise's machine fleet per window: networking and CNC rates, CNC utilisation
/// (fields in [`fleet`]).
pub const MEASUREMENT_FLEET: &str = "fleet";
/// A meter's consumption per window (fields in [`energy`]).
pub const MEASUREMENT_ENERGY: &str = "energy";
/// The enterprise's green-manufacturing figures (绿色制造) per day and month (fields in
/// [`green`]).
pub const MEASUREMENT_GREEN: &str = "green";
/// A closed window whose green indicator is over its configured limit (fields in
/// [`green_alert`]).
pub const MEASUREMENT_GREEN_ALERT: &str = "green_alert";
/// The agent's own health every minute, and one line per Modbus device (tag [`TAG_DEVICE`])
/// (fields in [`agent`]).
pub const MEASUREMENT_AGENT: &str = "agent";

/// A pollution-source outlet (排污口): one line per pollutant of a data-logger record, stamped
/// with the data time (tags [`TAG_OUTLET`], [`TAG_POLLUTANT`], [`TAG_CN`], [`TAG_UNIT`];
/// fields in [`outlet`]).
pub const MEASUREMENT_OUTLET: &str = "outlet";
/// An alert opened or closed (tags [`TAG_KIND`]: `outlet_limit` or `indicator`, and
/// [`TAG_SUBJECT`]: `<outlet>/<pollutant>` or the indicator's field; fields in [`alert`]).
/// The closed-window `[green]` limits still write [`MEASUREMENT_GREEN_ALERT`] too.
pub const MEASUREMENT_ALERT: &str = "alert";

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

/// On every line: the county, the enterprise's sector ([`crate::model::Sector::as_str`]) and
/// the enterprise, from `[site]`.
pub const TAG_COUNTY: &str = "county";
pub const TAG_SECTOR: &str = "sector";
pub const TAG_ENTERPRISE: &str = "enterprise";

/// On machine lines: the machine's id and kind from the register, and whether it is a CNC
/// machine (`true` / `false`).
pub const TAG_MACHINE: &str = "machine";
pub const TAG_KIND: &str = "kind";
pub const TAG_CNC: &str = "cnc";

/// On meter lines: the meter's id and its carrier ([`crate::model::Carrier::as_str`]).
pub const TAG_METER: &str = "meter";
pub const TAG_CARRIER: &str = "carrier";
/// On `energy` lines: the carrier's base unit, and [`SCOPE_SITE`] or the machine the meter
/// belongs to.
pub const TAG_UNIT: &str = "unit";
pub const TAG_SCOPE: &str = "scope";
/// The `scope` tag of a site meter.
pub const SCOPE_SITE: &str = "site";

/// On window lines: which window ([`WINDOW_HOUR`] …), and the shift's name for shift windows
/// (left out otherwise).
pub const TAG_WINDOW: &str = "window";
pub const TAG_SHIFT: &str = "shift";

/// On `green` and `green_alert` lines: how value added was estimated, and how electricity was
/// converted to standard coal.
pub const TAG_VA_METHOD: &str = "va_method";
pub const TAG_EL_METHOD: &str = "el_method";
/// On `green_alert` lines: the indicator over its limit (a [`green`] field name).
pub const TAG_INDICATOR: &str = "indicator";
/// On the per-device `agent` lines: the Modbus device's id.
pub const TAG_DEVICE: &str = "device";

/// The tags of [`MEASUREMENT_OUTLET`] (outlet id, the pollutant's signal name, the HJ 212
/// command number of the data: 2011 real-time, 2051 minute, 2061 hourly, 2031 daily) and of
/// [`MEASUREMENT_ALERT`] (besides [`TAG_KIND`]).
pub const TAG_OUTLET: &str = "outlet";
pub const TAG_POLLUTANT: &str = "pollutant";
pub const TAG_CN: &str = "cn";
pub const TAG_SUBJECT: &str = "subject";

// ---------------------------------------------------------------------------------------------
// Values of the `window` tag
// ---------------------------------------------------------------------------------------------

/// The `window` tag of an hour window.
pub const WINDOW_HOUR: &str = "1h";
/// The `window` tag of a shift window (the shift's name is in [`TAG_SHIFT`]).
pub const WINDOW_SHIFT: &str = "shift";
/// The `window` tag of a day window: the county reads these.
pub const WINDOW_DAY: &str = "1d";
/// The `window` tag of a month window.
pub const WINDOW_MONTH: &str = "1mo";

// ---------------------------------------------------------------------------------------------
// Fields, by measurement
// ---------------------------------------------------------------------------------------------

/// Fields of [`MEASUREMENT_MACHINE_STATE`]. A state change has `state`, `code`, `previous` and
/// `previous_s`; a heartbeat `state`, `code` and `state_s`.
pub mod machine_state {
    /// The state's name ([`crate::model::State::as_str`]), a string.
    pub const STATE: &str = "state";
    /// The state's code ([`crate::model::State::code`]), an integer stable forever.
    pub const CODE: &str = "code";
    /// The state before the change, a string.
    pub const PREVIOUS: &str = "previous";
    /// Seconds spent in the previous state.
    pub const PREVIOUS_S: &str = "previous_s";
    /// Seconds in the current state so far (heartbeat).
    pub const STATE_S: &str = "state_s";
}

/// Fields of [`MEASUREMENT_MACHINE_TIME`], after ISO 22400-2's time model.
pub mod machine_time {
    use crate::model::State;

    /// Planned busy time (PBT, 计划负荷时间): the shifts minus breaks minus planned stops.
    pub const PLANNED_S: &str = "planned_s";
    /// Planned downtime (maintenance) inside the shifts.
    pub const PLANNED_STOP_S: &str = "planned_stop_s";
    /// Running time inside planned busy time: the numerator of availability.
    pub const RUNNING_PLANNED_S: &str = "running_planned_s";
    pub const RUNNING_S: &str = "running_s";
    pub const SETUP_S: &str = "setup_s";
    pub const IDLE_S: &str = "idle_s";
    pub const ALARM_S: &str = "alarm_s";
    pub const STOPPED_S: &str = "stopped_s";
    pub const OFFLINE_S: &str = "offline_s";
    pub const PARTS_TOTAL: &str = "parts_total";
    /// Written only where good parts are counted.
    pub const PARTS_GOOD: &str = "parts_good";
    /// Ratios, each written only when it exists.
    pub const AVAILABILITY: &str = "availability";
    pub const EFFECTIVENESS: &str = "effectiveness";
    pub const QUALITY: &str = "quality";
    pub const OEE: &str = "oee";

    /// The field of the seconds spent in `state`.
    pub const fn seconds_in(state: State) -> &'static str {
        match state {
            State::Running => RUNNING_S,
            State::Setup => SETUP_S,
            State::Idle => IDLE_S,
            State::Alarm => ALARM_S,
            State::Stopped => STOPPED_S,
            State::Offline => OFFLINE_S,
        }
    }
}

/// Fields of [`MEASUREMENT_FLEET`]: counts from the register and time sums, and the ratios
/// beside them.
pub mod fleet {
    pub const MACHINES_TOTAL: &str = "machines_total";
    pub const MACHINES_DIGITAL: &str = "machines_digital";
    pub const MACHINES_CNC: &str = "machines_cnc";
    pub const MACHINES_NETWORKED: &str = "machines_networked";
    pub const MACHINES_DIGITAL_NETWORKED: &str = "machines_digital_networked";
    /// Industrial robots (工业机器人, machines of kind `robot`) in the register; absent when
    /// the register holds none, so the county falls back on the declared count.
    pub const MACHINES_ROBOT: &str = "machines_robot";
    pub const CNC_RUNNING_S: &str = "cnc_running_s";
    pub const CNC_PLANNED_S: &str = "cnc_planned_s";
    /// 机器联网率: `machines_networked` ÷ `machines_total`.
    pub const NETWORKING_RATE: &str = "networking_rate";
    /// `machines_digital_networked` ÷ `machines_digital`.
    pub const NETWORKING_RATE_DIGITAL: &str = "networking_rate_digital";
    /// 数控化率: `machines_cnc` ÷ `machines_total`.
    pub const CNC_RATE: &str = "cnc_rate";
    /// 数控设备利用率: `cnc_running_s` ÷ `cnc_planned_s`.
    pub const CNC_UTILISATION: &str = "cnc_utilisation";
}

/// Fields of [`MEASUREMENT_ENERGY`].
pub mod energy {
    use crate::model::State;

    /// Consumption in the carrier's base unit (tag `unit`).
    pub const QUANTITY: &str = "quantity";
    /// Tonnes of standard coal (吨标准煤); not for water.
    pub const TCE: &str = "tce";
    pub const GAPS: &str = "gaps";
    pub const RESETS: &str = "resets";
    /// Counter wraps past the meter's modulus (`[[meter]] rollover`).
    pub const ROLLOVERS: &str = "rollovers";
    /// For a machine's meter: consumption while the machine was in each state.
    pub const QUANTITY_RUNNING: &str = "quantity_running";
    pub const QUANTITY_SETUP: &str = "quantity_setup";
    pub const QUANTITY_IDLE: &str = "quantity_idle";
    pub const QUANTITY_ALARM: &str = "quantity_alarm";
    pub const QUANTITY_STOPPED: &str = "quantity_stopped";
    pub const QUANTITY_OFFLINE: &str = "quantity_offline";
    /// For a machine's meter: consumption per good part.
    pub const PER_GOOD_PART: &str = "per_good_part";

    /// The field of the consumption while the machine was in `state`.
    pub const fn quantity_in(state: State) -> &'static str {
        match state {
            State::Running => QUANTITY_RUNNING,
            State::Setup => QUANTITY_SETUP,
            State::Idle => QUANTITY_IDLE,
            State::Alarm => QUANTITY_ALARM,
            State::Stopped => QUANTITY_STOPPED,
            State::Offline => QUANTITY_OFFLINE,
        }
    }
}

/// Fields of [`MEASUREMENT_GREEN`].
pub mod green {
    pub const ENERGY_TCE: &str = "energy_tce";
    pub const ELECTRICITY_KWH: &str = "electricity_kwh";
    pub const WATER_T: &str = "water_t";
    /// The electricity coefficient used (tag `el_method` says which).
    pub const ELECTRICITY_KGCE_PER_KWH: &str = "electricity_kgce_per_kwh";
    /// Value added (增加值) in 10k CNY, an estimate (tag `va_method`); absent when unknown.
    pub const VALUE_ADDED_10K_CNY: &str = "value_added_10k_cny";
    /// 万元增加值能耗: `energy_tce` ÷ `value_added_10k_cny`.
    pub const TCE_PER_10K_CNY: &str = "tce_per_10k_cny";
    /// `value_added_10k_cny` ÷ `energy_tce`.
    pub const VALUE_ADDED_PER_TCE: &str = "value_added_per_tce";
    /// 万元增加值用水量: `water_t` ÷ `value_added_10k_cny`.
    pub const WATER_T_PER_10K_CNY: &str = "water_t_per_10k_cny";
    /// Wastewater discharged, t (= m³), from the outlets' loggers; absent without one.
    pub const WASTEWATER_T: &str = "wastewater_t";
    /// How `wastewater_t` was found: `daily` (the loggers' daily totals), `hourly` or `minute`
    /// (their summed totals), joined by `+` when outlets differ. A string.
    pub const WASTEWATER_BASIS: &str = "wastewater_basis";
    /// 万元增加值废水排放量: `wastewater_t` ÷ `value_added_10k_cny`.
    pub const WASTEWATER_T_PER_10K_CNY: &str = "wastewater_t_per_10k_cny";
}

/// Fields of [`MEASUREMENT_GREEN_ALERT`].
pub mod green_alert {
    pub const VALUE: &str = "value";
    pub const LIMIT: &str = "limit";
    pub const OVER_BY: &str = "over_by";
}

/// Fields of [`MEASUREMENT_AGENT`]: the agent's line, then the per-device lines.
pub mod agent {
    pub const DEVICES_TOTAL: &str = "devices_total";
    pub const DEVICES_UP: &str = "devices_up";
    pub const POLL_ERRORS: &str = "poll_errors";
    pub const SPOOL_BYTES: &str = "spool_bytes";
    pub const SPOOL_LINES: &str = "spool_lines";
    pub const DROPPED_LINES: &str = "dropped_lines";
    pub const SPOOL_DISK_FULL: &str = "spool_disk_full";
    pub const LOST_LINES: &str = "lost_lines";
    pub const RECORDS_DROPPED: &str = "records_dropped";
    pub const LAG_S: &str = "lag_s";
    pub const SENT_LINES: &str = "sent_lines";
    pub const SENT_LINES_1M: &str = "sent_lines_1m";
    pub const DEAD_LETTER_LINES: &str = "dead_letter_lines";

    /// Per device (tag `device`): 1 while it answers, 0 while it is down.
    pub const UP: &str = "up";
    pub const POLLS: &str = "polls";
    /// Absent until the device first answers.
    pub const SINCE_SUCCESS_S: &str = "since_success_s";
    /// Per device: 1 while it answers every request with an exception (up, delivering
    /// nothing), else 0.
    pub const DEGRADED: &str = "degraded";
    /// Per device, only while degraded: the Modbus exception code it answers with.
    pub const EXCEPTION_CODE: &str = "exception_code";
    /// Per device: errors of each kind of [`crate::source::modbus::health::ERROR_KINDS`],
    /// as (kind, field), in the order the lines list them.
    pub const DEVICE_ERRORS: [(&str, &str); 8] = [
        ("resolve", "errors_resolve"),
        ("connect", "errors_connect"),
        ("timeout", "errors_timeout"),
        ("transport", "errors_transport"),
        ("protocol", "errors_protocol"),
        ("exception", "errors_exception"),
        ("decode", "errors_decode"),
        ("crc", "errors_crc"),
    ];
}

/// Fields of [`MEASUREMENT_OUTLET`]: the record's values as the logger sent them (real-time,
/// average, minimum, maximum, total over the period) and the data flag (a string: N, F, M, S,
/// D, C, T, B).
pub mod outlet {
    pub const RTD: &str = "rtd";
    pub const AVG: &str = "avg";
    pub const MIN: &str = "min";
    pub const MAX: &str = "max";
    pub const COU: &str = "cou";
    /// Exhaust: the values converted to the reference oxygen content (折算), HJ 212's
    /// `ZsRtd`, `ZsAvg`, `ZsMin`, `ZsMax`.
    pub const ZS_RTD: &str = "zs_rtd";
    pub const ZS_AVG: &str = "zs_avg";
    pub const ZS_MIN: &str = "zs_min";
    pub const ZS_MAX: &str = "zs_max";
    pub const FLAG: &str = "flag";
}

/// Fields of [`MEASUREMENT_ALERT`]: on opening `value`, `limit`, `open=true`; on closing the
/// same with `open=false` and `duration_s`.
pub mod alert {
    pub const VALUE: &str = "value";
    pub const LIMIT: &str = "limit";
    pub const OPEN: &str = "open";
    pub const DURATION_S: &str = "duration_s";
}

/// Fields that are ratios. A county figure is Σ numerator ÷ Σ denominator, so a query that
/// combines enterprises must never read (and so never average) these.
pub const RATIO_FIELDS: &[&str] = &[
    fleet::NETWORKING_RATE,
    fleet::NETWORKING_RATE_DIGITAL,
    fleet::CNC_RATE,
    fleet::CNC_UTILISATION,
    green::TCE_PER_10K_CNY,
    green::VALUE_ADDED_PER_TCE,
    green::WATER_T_PER_10K_CNY,
    green::WASTEWATER_T_PER_10K_CNY,
    machine_time::AVAILABILITY,
    machine_time::EFFECTIVENESS,
    machine_time::QUALITY,
    machine_time::OEE,
];

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// One measurement as it is written today: every tag and field its lines may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    pub name: &'static str,
    pub tags: &'static [&'static str],
    /// `None` for [`MEASUREMENT_SIGNAL`], whose fields are the site's own signal names.
    pub fields: Option<&'static [&'static str]>,
}

impl Measurement {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(&tag)
    }

    /// Whether the measurement's lines may carry `field` (any name, for `signal`).
    pub fn has_field(&self, field: &str) -> bool {
        self.fields.is_none_or(|f| f.contains(&field))
    }
}

/// Every measurement written today, with its tags and fields.
pub const MEASUREMENTS: &[Measurement] = &[
    Measurement {
        name: MEASUREMENT_SIGNAL,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_MACHINE,
            TAG_KIND,
            TAG_CNC,
            TAG_METER,
            TAG_CARRIER,
        ],
        fields: None,
    },
    Measurement {
        name: MEASUREMENT_MACHINE_STATE,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_MACHINE,
            TAG_KIND,
            TAG_CNC,
        ],
        fields: Some(&[
            machine_state::STATE,
            machine_state::CODE,
            machine_state::PREVIOUS,
            machine_state::PREVIOUS_S,
            machine_state::STATE_S,
        ]),
    },
    Measurement {
        name: MEASUREMENT_MACHINE_TIME,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_MACHINE,
            TAG_KIND,
            TAG_CNC,
            TAG_WINDOW,
            TAG_SHIFT,
        ],
        fields: Some(&[
            machine_time::PLANNED_S,
            machine_time::PLANNED_STOP_S,
            machine_time::RUNNING_PLANNED_S,
            machine_time::RUNNING_S,
            machine_time::SETUP_S,
            machine_time::IDLE_S,
            machine_time::ALARM_S,
            machine_time::STOPPED_S,
            machine_time::OFFLINE_S,
            machine_time::PARTS_TOTAL,
            machine_time::PARTS_GOOD,
            machine_time::AVAILABILITY,
            machine_time::EFFECTIVENESS,
            machine_time::QUALITY,
            machine_time::OEE,
        ]),
    },
    Measurement {
        name: MEASUREMENT_FLEET,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_WINDOW,
            TAG_SHIFT,
        ],
        fields: Some(&[
            fleet::MACHINES_TOTAL,
            fleet::MACHINES_DIGITAL,
            fleet::MACHINES_CNC,
            fleet::MACHINES_NETWORKED,
            fleet::MACHINES_DIGITAL_NETWORKED,
            fleet::MACHINES_ROBOT,
            fleet::NETWORKING_RATE,
            fleet::NETWORKING_RATE_DIGITAL,
            fleet::CNC_RATE,
            fleet::CNC_RUNNING_S,
            fleet::CNC_PLANNED_S,
            fleet::CNC_UTILISATION,
        ]),
    },
    Measurement {
        name: MEASUREMENT_ENERGY,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_METER,
            TAG_CARRIER,
            TAG_UNIT,
            TAG_SCOPE,
            TAG_WINDOW,
            TAG_SHIFT,
        ],
        fields: Some(&[
            energy::QUANTITY,
            energy::TCE,
            energy::GAPS,
            energy::RESETS,
            energy::ROLLOVERS,
            energy::QUANTITY_RUNNING,
            energy::QUANTITY_SETUP,
            energy::QUANTITY_IDLE,
            energy::QUANTITY_ALARM,
            energy::QUANTITY_STOPPED,
            energy::QUANTITY_OFFLINE,
            energy::PER_GOOD_PART,
        ]),
    },
    Measurement {
        name: MEASUREMENT_GREEN,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_VA_METHOD,
            TAG_EL_METHOD,
            TAG_WINDOW,
        ],
        fields: Some(&[
            green::ENERGY_TCE,
            green::ELECTRICITY_KWH,
            green::WATER_T,
            green::VALUE_ADDED_10K_CNY,
            green::TCE_PER_10K_CNY,
            green::VALUE_ADDED_PER_TCE,
            green::WATER_T_PER_10K_CNY,
            green::ELECTRICITY_KGCE_PER_KWH,
            green::WASTEWATER_T,
            green::WASTEWATER_BASIS,
            green::WASTEWATER_T_PER_10K_CNY,
        ]),
    },
    Measurement {
        name: MEASUREMENT_GREEN_ALERT,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_VA_METHOD,
            TAG_EL_METHOD,
            TAG_WINDOW,
            TAG_INDICATOR,
        ],
        fields: Some(&[green_alert::VALUE, green_alert::LIMIT, green_alert::OVER_BY]),
    },
    Measurement {
        name: MEASUREMENT_OUTLET,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_OUTLET,
            TAG_POLLUTANT,
            TAG_CN,
            TAG_UNIT,
        ],
        fields: Some(&[
            outlet::RTD,
            outlet::AVG,
            outlet::MIN,
            outlet::MAX,
            outlet::COU,
            outlet::ZS_RTD,
            outlet::ZS_AVG,
            outlet::ZS_MIN,
            outlet::ZS_MAX,
            outlet::FLAG,
        ]),
    },
    Measurement {
        name: MEASUREMENT_ALERT,
        tags: &[
            TAG_COUNTY,
            TAG_SECTOR,
            TAG_ENTERPRISE,
            TAG_KIND,
            TAG_SUBJECT,
        ],
        fields: Some(&[alert::VALUE, alert::LIMIT, alert::OPEN, alert::DURATION_S]),
    },
    Measurement {
        name: MEASUREMENT_AGENT,
        tags: &[TAG_COUNTY, TAG_SECTOR, TAG_ENTERPRISE, TAG_DEVICE],
        fields: Some(&[
            agent::DEVICES_TOTAL,
            agent::DEVICES_UP,
            agent::POLL_ERRORS,
            agent::SPOOL_BYTES,
            agent::SPOOL_LINES,
            agent::DROPPED_LINES,
            agent::SPOOL_DISK_FULL,
            agent::LOST_LINES,
            agent::RECORDS_DROPPED,
            agent::LAG_S,
            agent::SENT_LINES,
            agent::SENT_LINES_1M,
            agent::DEAD_LETTER_LINES,
            agent::UP,
            agent::POLLS,
            agent::SINCE_SUCCESS_S,
            agent::DEGRADED,
            agent::EXCEPTION_CODE,
            agent::DEVICE_ERRORS[0].1,
            agent::DEVICE_ERRORS[1].1,
            agent::DEVICE_ERRORS[2].1,
            agent::DEVICE_ERRORS[3].1,
            agent::DEVICE_ERRORS[4].1,
            agent::DEVICE_ERRORS[5].1,
            agent::DEVICE_ERRORS[6].1,
            agent::DEVICE_ERRORS[7].1,
        ]),
    },
];

/// The measurement named `name`, if Shopfloor writes it.
pub fn measurement(name: &str) -> Option<&'static Measurement> {
    MEASUREMENTS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::State;

    /// The whole contract as text, one measurement a line: `name | tags | fields`.
    fn as_text() -> String {
        MEASUREMENTS
            .iter()
            .map(|m| {
                let fields = m.fields.map_or("*".to_string(), |f| f.join(" "));
                format!("{} | {} | {fields}\n", m.name, m.tags.join(" "))
            })
            .collect()
    }

    /// Every name written to the store, spelt out: a rename (which breaks dashboards and the
    /// county's queries) must change this text too, on purpose.
    #[test]
    fn a_renamed_name_fails_here_first() {
        assert_eq!(
            as_text(),
            "signal | county sector enterprise machine kind cnc meter carrier | *\n\
             machine_state | county sector enterprise machine kind cnc | state code previous previous_s state_s\n\
             machine_time | county sector enterprise machine kind cnc window shift | planned_s planned_stop_s running_planned_s running_s setup_s idle_s alarm_s stopped_s offline_s parts_total parts_good availability effectiveness quality oee\n\
             fleet | county sector enterprise window shift | machines_total machines_digital machines_cnc machines_networked machines_digital_networked machines_robot networking_rate networking_rate_digital cnc_rate cnc_running_s cnc_planned_s cnc_utilisation\n\
             energy | county sector enterprise meter carrier unit scope window shift | quantity tce gaps resets rollovers quantity_running quantity_setup quantity_idle quantity_alarm quantity_stopped quantity_offline per_good_part\n\
             green | county sector enterprise va_method el_method window | energy_tce electricity_kwh water_t value_added_10k_cny tce_per_10k_cny value_added_per_tce water_t_per_10k_cny electricity_kgce_per_kwh wastewater_t wastewater_basis wastewater_t_per_10k_cny\n\
             green_alert | county sector enterprise va_method el_method window indicator | value limit over_by\n\
             outlet | county sector enterprise outlet pollutant cn unit | rtd avg min max cou zs_rtd zs_avg zs_min zs_max flag\n\
             alert | county sector enterprise kind subject | value limit open duration_s\n\
             agent | county sector enterprise device | devices_total devices_up poll_errors spool_bytes spool_lines dropped_lines spool_disk_full lost_lines records_dropped lag_s sent_lines sent_lines_1m dead_letter_lines up polls since_success_s degraded exception_code errors_resolve errors_connect errors_timeout errors_transport errors_protocol errors_exception errors_decode errors_crc\n"
        );
        assert_eq!(
            [WINDOW_HOUR, WINDOW_SHIFT, WINDOW_DAY, WINDOW_MONTH],
            ["1h", "shift", "1d", "1mo"]
        );
        assert_eq!([MEASUREMENT_OUTLET, MEASUREMENT_ALERT], ["outlet", "alert"]);
    }

    #[test]
    fn state_fields_follow_the_state_names() {
        for state in State::ALL {
            assert_eq!(
                machine_time::seconds_in(state),
                format!("{}_s", state.as_str())
            );
            assert_eq!(
                energy::quantity_in(state),
                format!("quantity_{}", state.as_str())
            );
        }
    }

    #[test]
    fn every_ratio_is_a_field_of_a_written_measurement() {
        for r in RATIO_FIELDS {
            assert!(
                MEASUREMENTS
                    .iter()
                    .any(|m| m.fields.is_some_and(|f| f.contains(r))),
                "{r}"
            );
        }
        for (kind, field) in agent::DEVICE_ERRORS {
            assert_eq!(field, format!("errors_{kind}"));
        }
    }
}
