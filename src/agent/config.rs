//! The agent's config file: the whole-file [`Config`] and its one table of sections.
//!
//! Each row of the table below registers one section: the field, its TOML name, `one` table
//! (defaults when absent), `optional` or `many` (an array of tables), its type (which says the
//! keys of its nested tables through [`Section`]) and the owner's check. The list of sections in
//! "unknown section" messages, the keys for "did you mean", the dispatch and the checks all come
//! from the row: a new source adds its `config.rs` beside its code and one row here.

use std::path::Path;

use toml::Spanned;
use toml::de::DeTable;

use crate::config::{
    self, Checker, Deliveries, Diagnostics, Machine, Meter, References, Site, load_file, sections,
    unchecked,
};
use crate::engine::config::{
    self as engine, Agent, Calendar, EnergyConfig, Green, StateRules, ValueAdded,
};
use crate::sink::config::{self as sink, FileOutput, InfluxOutput, Spool, Uplink};
use crate::source::modbus::config::{self as modbus, ModbusDevice, ModbusSerial};
use crate::source::mqtt::config::MqttBroker;
use crate::web::config::Web;

sections! {
    /// The whole configuration file.
    pub struct Config {
        /// `[site]`: who and where this agent is.
        site: one Site = "site", config::check_site;
        /// `[agent]`: data directory, timings.
        agent: one Agent = "agent", unchecked;
        /// `[[machine]]`: the enterprise's register of production machines (生产设备台账),
        /// including machines that have no data source. The register is the denominator of the
        /// networking and CNC rates, so it must list every production machine, connected or not.
        machines: many Machine = "machine", config::check_machines;
        /// `[[meter]]`: energy and water meters.
        meters: many Meter = "meter", config::check_meters;
        /// `[[modbus]]`: Modbus devices and their register maps, with profiles already merged in.
        modbus: many ModbusDevice = "modbus", crate::source::modbus::profile::check_devices;
        /// `[[modbus_serial]]`: serial ports that Modbus RTU devices hang on.
        modbus_serial: many ModbusSerial = "modbus_serial", modbus::check_serial_ports;
        /// `[[mqtt]]`: MQTT brokers and the topics read from them.
        mqtt: many MqttBroker = "mqtt", crate::source::mqtt::check::check_brokers;
        /// `[[opcua]]`: OPC UA servers and the nodes read from them.
        opcua: many crate::source::opcua::config::OpcuaServer = "opcua", crate::source::opcua::config::check_servers;
        /// `[[melsec]]`: Mitsubishi MELSEC PLCs read over the MC protocol (SLMP).
        melsec: many crate::source::melsec::config::MelsecDevice = "melsec", crate::source::melsec::config::check_devices;
        /// `[[s7]]`: Siemens S7 PLCs and the addresses read from them.
        s7: many crate::source::s7::config::S7Device = "s7", crate::source::s7::config::check_devices;
        /// `[[dlt645]]`: buses of DL/T 645 electricity meters.
        dlt645: many crate::source::dlt645::config::Dlt645Bus = "dlt645", crate::source::dlt645::config::check_buses;
        /// `[[cjt188]]`: buses of CJ/T 188 water, heat and gas meters.
        cjt188: many crate::source::cjt188::config::Cjt188Bus = "cjt188", crate::source::cjt188::config::check_buses;
        /// `[[hj212]]`: ports that the outlets' HJ 212 data loggers push their data to.
        hj212: many crate::source::hj212::config::Hj212Listener = "hj212", crate::source::hj212::config::check_listeners;
        /// `[[dial_in]]`: ports that 4G and Ethernet DTUs connect to, and the Modbus devices
        /// behind each DTU.
        dial_in: many crate::source::dial_in::config::DialInListener = "dial_in", crate::source::dial_in::config::check_listeners;
        /// `[[state_rules]]`: how machine states are derived from signals.
        state_rules: many StateRules = "state_rules", engine::check_state_rules;
        /// `[spool]`: the disk buffer between the engine and the outputs.
        spool: one Spool = "spool", sink::check_spool;
        /// `[[influx]]`: InfluxDB-compatible stores (InfluxDB 1.x/2.x/3.x, VictoriaMetrics).
        influx: many InfluxOutput = "influx", sink::check_influx;
        /// `[[file]]`: line-protocol files, the local store of `shopfloor demo`.
        file: many FileOutput = "file", sink::check_files;
        /// `[calendar]`: shifts, breaks, holidays and planned maintenance.
        calendar: one Calendar = "calendar", engine::check_calendar;
        /// `[energy]`: conversion to tonnes of standard coal.
        energy: one EnergyConfig = "energy", engine::check_energy;
        /// `[value_added]`: how value added is estimated.
        value_added: one ValueAdded = "value_added", engine::check_value_added;
        /// `[green]`: limits for the green-manufacturing alerts.
        green: one Green = "green", unchecked;
        /// `[web]`: the local board, its API and `/metrics`.
        web: one Web = "web", crate::web::config::check_web;
        /// `[uplink]`: the enterprise's `fleet` and `green` records published to the county's
        /// MQTT broker. Optional; without it the agent publishes nothing.
        uplink: optional Uplink = "uplink", sink::check_uplink;
    }
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    load_file(path, load_str)
}

/// [`load`] with the warnings of an accepted config (see [`load_str_warned`]).
pub fn load_warned(path: &Path) -> Result<(Config, Diagnostics), Diagnostics> {
    config::load_file(path, load_str_warned)
}

/// [`load_warned`] resolving only the secrets `secrets` names: `shopfloor test` connects to
/// the sources but writes to no output, `probe` uses no secret, so neither needs (nor may ask
/// for) the store's token.
pub fn load_resolving(
    path: &Path,
    secrets: config::Secrets,
) -> Result<(Config, Diagnostics), Diagnostics> {
    config::load_file(path, |text, file| {
        let dir = Path::new(file).parent();
        config::check_document_resolving(text, file, dir, Config::known_keys, secrets, check)
    })
}

/// [`load_str`] that also hands back the warnings of an accepted config: mistakes that may be
/// meant (a `rollover` that looks like a display maximum). `check` prints them; `run` logs them.
pub fn load_str_warned(text: &str, file: &str) -> Result<(Config, Diagnostics), Diagnostics> {
    let dir = Path::new(file).parent();
    config::check_document_warned(text, file, dir, Config::known_keys, check)
}

/// Checks config text; `file` names it in messages.
///
/// Profiles named by devices are looked up in `profiles/` beside `file`, then among the shipped
/// ones (see [`crate::source::modbus::profile`]).
pub fn load_str(text: &str, file: &str) -> Result<Config, Diagnostics> {
    let dir = Path::new(file).parent();
    config::check_document_in(text, file, dir, Config::known_keys, check)
}

fn check(checker: &mut Checker<'_>, root: &Spanned<DeTable<'_>>) -> Option<Config> {
    let (mut config, at) = Config::read_sections(checker, root);
    if root.get_ref().get("site").is_none() {
        checker.push(
            0..0,
            "missing [site]: every config names its county, sector and enterprise".to_string(),
        );
        return None;
    }
    let refs = References::new(root, &config.machines, &config.meters);
    config.check_sections(checker, root, &at, &refs);
    // A section that could not be read delivers nothing: judged on the rest, a rule would be
    // reported as never holding for a mistake already reported where it is.
    if !checker.has_problems() {
        check_deliveries(checker, root, &at, &config);
    }
    Some(config)
}

impl Config {
    /// `check`'s one-line account of an accepted config: the register, and the sources and
    /// outputs by kind.
    pub fn summary(&self) -> String {
        let (named, by_capture) =
            deliveries(self).sourced(self.machines.iter().map(|m| m.id.as_str()));
        let sourced = if by_capture && named == 0 {
            "fed by the MQTT topics that name them".to_string()
        } else if by_capture {
            format!("{named} named by a data source, others by MQTT topics")
        } else {
            format!("{named} with a data source")
        };
        let outputs = self.influx.len() + self.file.len() + usize::from(self.uplink.is_some());
        let mut parts = vec![
            format!(
                "{} ({sourced})",
                count(
                    self.machines.len(),
                    "machine in the register",
                    "machines in the register"
                )
            ),
            count(self.meters.len(), "meter", "meters"),
        ];
        // Sources by kind, the ones the config has.
        for (n, one, many) in [
            (self.modbus.len(), "Modbus device", "Modbus devices"),
            (self.mqtt.len(), "MQTT broker", "MQTT brokers"),
            (self.opcua.len(), "OPC UA server", "OPC UA servers"),
            (self.s7.len(), "S7 PLC", "S7 PLCs"),
            (self.melsec.len(), "MELSEC PLC", "MELSEC PLCs"),
            (self.dlt645.len(), "DL/T 645 bus", "DL/T 645 buses"),
            (self.cjt188.len(), "CJ/T 188 bus", "CJ/T 188 buses"),
            (self.hj212.len(), "HJ 212 port", "HJ 212 ports"),
            (
                self.dial_in.iter().map(|l| l.dtus.len()).sum(),
                "dial-in DTU",
                "dial-in DTUs",
            ),
        ] {
            if n > 0 {
                parts.push(count(n, one, many));
            }
        }
        parts.push(count(outputs, "output", "outputs"));
        parts.join(", ")
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What every source delivers to which machine and meter.
fn deliveries(config: &Config) -> Deliveries {
    let mut out = Deliveries::default();
    each_source(config, &mut |source, add| {
        // Meter buses: health is per meter, and the board asks only for machines' sources.
        let meters = matches!(source.kind, "dlt645" | "cjt188");
        out.recording_source(if meters { "" } else { &source.id });
        add(&mut out)
    });
    // Dial-in DTUs are not in `each_source`: they call in, so `shopfloor test` cannot ask
    // them (it lists their listeners instead). Each device behind a DTU feeds its machines.
    for listener in &config.dial_in {
        for dtu in &listener.dtus {
            for device in &dtu.devices {
                out.recording_source(&device.id);
                modbus::deliveries(device, &mut out);
            }
        }
    }
    out
}

/// Calls `visit` with every source of the config, in section order, and the function that
/// adds what it delivers. A new source adds its line.
/// What [`each_source`] calls: a source and the function that adds what it delivers.
type Visit<'v> = dyn FnMut(SourceRef, &dyn Fn(&mut Deliveries)) + 'v;

fn each_source(config: &Config, visit: &mut Visit<'_>) {
    let one = |kind, id: &str| SourceRef {
        kind,
        id: id.to_string(),
        health: vec![id.to_string()],
    };
    for device in &config.modbus {
        visit(one("modbus", &device.id), &|out| {
            modbus::deliveries(device, out)
        });
    }
    for broker in &config.mqtt {
        visit(one("mqtt", &broker.id), &|out| {
            crate::source::mqtt::check::deliveries(broker, out)
        });
    }
    for server in &config.opcua {
        visit(one("opcua", &server.id), &|out| {
            crate::source::opcua::config::deliveries(server, out)
        });
    }
    for device in &config.melsec {
        visit(one("melsec", &device.id), &|out| {
            crate::source::melsec::config::deliveries(device, out)
        });
    }
    for device in &config.s7 {
        visit(one("s7", &device.id), &|out| {
            crate::source::s7::config::deliveries(device, out)
        });
    }
    for bus in &config.dlt645 {
        let source = SourceRef {
            kind: "dlt645",
            id: bus.id.clone(),
            health: bus.meters.iter().map(|m| m.meter.clone()).collect(),
        };
        visit(source, &|out| {
            crate::source::dlt645::config::deliveries(bus, out)
        });
    }
    for bus in &config.cjt188 {
        let source = SourceRef {
            kind: "cjt188",
            id: bus.id.clone(),
            health: bus.meters.iter().map(|m| m.meter.clone()).collect(),
        };
        visit(source, &|out| {
            crate::source::cjt188::config::deliveries(bus, out)
        });
    }
}

/// One source of the config, as [`Config::source_fields`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    /// The section: `modbus`, `mqtt`, `opcua`, `melsec`, `s7`, `dlt645`, `cjt188`.
    pub kind: &'static str,
    /// The device's, server's, broker's or bus's id.
    pub id: String,
    /// The ids its health is reported under: its own, or a bus's meters'.
    pub health: Vec<String>,
}

/// Where a source's field goes: a machine or meter named in the config, or whichever one a
/// message names (an MQTT topic with captures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldTarget {
    Machine(String),
    Meter(String),
    AnyMachine,
    AnyMeter,
}

impl Config {
    /// The engine's event queue: [`crate::queue::EVENT_QUEUE`] events, or two per polled
    /// device (Modbus, S7, MELSEC, and the devices behind dial-in DTUs) where there are more.
    /// Polled devices may all deliver at the same moment (a thousand DTUs dialling in after a
    /// restart, each device's first poll with its "up"), and their senders drop the newest
    /// event when the queue is full: it holds a round of every device's results, so that a
    /// start-up or a reconnection of all DTUs loses nothing. Only what is queued takes memory.
    pub fn event_queue(&self) -> usize {
        let behind_dtus: usize = (self.dial_in.iter())
            .flat_map(|l| &l.dtus)
            .map(|d| d.devices.len())
            .sum();
        let polled = self.modbus.len() + self.s7.len() + self.melsec.len() + behind_dtus;
        crate::queue::EVENT_QUEUE.max(2 * polled)
    }

    /// Every source with the signals it delivers, by machine and meter: what `shopfloor test`
    /// expects a value or an error for.
    pub fn source_fields(&self) -> Vec<(SourceRef, Vec<(FieldTarget, String)>)> {
        let mut out = Vec::new();
        each_source(self, &mut |source, add| {
            let mut d = Deliveries::default();
            add(&mut d);
            let fields = d
                .listed()
                .into_iter()
                .map(|(to, signal)| {
                    let target = match to {
                        crate::config::To::Machine(m) => FieldTarget::Machine(m.to_string()),
                        crate::config::To::Meter(m) => FieldTarget::Meter(m.to_string()),
                        crate::config::To::AnyMachine => FieldTarget::AnyMachine,
                        crate::config::To::AnyMeter => FieldTarget::AnyMeter,
                    };
                    (target, signal.to_string())
                })
                .collect();
            out.push((source, fields));
        });
        out
    }
}

/// Refuses a state rule, a meter's reading or a part counter that names a signal no source
/// of its machine or meter delivers (see [`config::Deliveries`]); a rule set's signal that
/// some of its machines get and others do not is a warning.
fn check_deliveries(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &std::collections::HashMap<&'static str, Vec<usize>>,
    config: &Config,
) {
    use crate::config::{Seg, Verdict, key};
    let delivered = deliveries(config);
    let index = |section: &str, i: usize| at.get(section).and_then(|v| v.get(i).copied());

    for (i, set) in config.state_rules.iter().enumerate() {
        let Some(doc) = index("state_rules", i) else {
            continue;
        };
        let covered: Vec<&Machine> = config
            .machines
            .iter()
            .filter(|m| {
                crate::engine::state::rules_for(m, &config.state_rules)
                    .is_some_and(|s| std::ptr::eq(s, set))
            })
            .collect();
        for (j, rule) in set.rules.iter().enumerate() {
            for (k, condition) in rule.when.iter().enumerate() {
                let mut missing = Vec::new();
                let mut got = Vec::new();
                for m in &covered {
                    match delivered.machine(&m.id, &condition.signal) {
                        Verdict::Delivered => got.push(m.id.as_str()),
                        Verdict::Missing(why) => missing.push((m.id.as_str(), why)),
                        Verdict::NoSource => {}
                    }
                }
                let Some((_, why)) = missing.first() else {
                    continue;
                };
                let path = [
                    key("state_rules"),
                    Seg::Index(doc),
                    key("rule"),
                    Seg::Index(j),
                    key("when"),
                    Seg::Index(k),
                    key("signal"),
                ];
                let span = checker.span_of(root, &path);
                if got.is_empty() {
                    checker.push(span, format!("this rule can never hold: {why}"));
                } else {
                    let names: Vec<&str> = missing.iter().map(|(m, _)| *m).collect();
                    checker.warn(
                        span,
                        format!(
                            "signal `{}` reaches {} but not {} of the machines these rules cover: the rule never holds for those",
                            condition.signal,
                            got.join(", "),
                            names.join(", ")
                        ),
                    );
                }
            }
        }
    }

    for (i, machine) in config.machines.iter().enumerate() {
        let Some(doc) = index("machine", i) else {
            continue;
        };
        for (name, signal) in [
            ("parts_signal", &machine.parts_signal),
            ("good_signal", &machine.good_signal),
            ("reject_signal", &machine.reject_signal),
        ] {
            if let Some(signal) = signal
                && let Verdict::Missing(why) = delivered.machine(&machine.id, signal)
            {
                let span = checker.span_of(root, &[key("machine"), Seg::Index(doc), key(name)]);
                checker.push(span, format!("the part counter is never read: {why}"));
            }
        }
    }

    for (i, meter) in config.meters.iter().enumerate() {
        let (Some(doc), Some(signal)) = (index("meter", i), &meter.signal) else {
            continue;
        };
        let span = checker.span_of(root, &[key("meter"), Seg::Index(doc), key("signal")]);
        match delivered.meter(&meter.id, signal) {
            Verdict::Delivered => {}
            Verdict::Missing(why) => {
                checker.push(span, format!("the meter's reading is never read: {why}"));
            }
            Verdict::NoSource => checker.warn(
                span,
                format!(
                    "no source delivers signals to meter `{}`: its {} stays \"not measured\" until a device, topic or node names it",
                    meter.id,
                    meter.carrier.as_str()
                ),
            ),
        }
    }
}

impl<'a> From<&'a Config> for engine::Sections<'a> {
    fn from(config: &'a Config) -> Self {
        engine::Sections {
            site: &config.site,
            agent: &config.agent,
            machines: &config.machines,
            meters: &config.meters,
            state_rules: &config.state_rules,
            calendar: &config.calendar,
            energy: &config.energy,
            value_added: &config.value_added,
            green: &config.green,
            devices: (config.modbus.iter().map(|d| d.id.as_str()))
                .chain(config.mqtt.iter().map(|b| b.id.as_str()))
                .chain(config.opcua.iter().map(|s| s.id.as_str()))
                .chain(config.melsec.iter().map(|d| d.id.as_str()))
                .chain(config.s7.iter().map(|d| d.id.as_str()))
                .chain(
                    config
                        .dlt645
                        .iter()
                        .flat_map(|b| b.meters.iter().map(|m| m.meter.as_str())),
                )
                .chain(
                    config
                        .cjt188
                        .iter()
                        .flat_map(|b| b.meters.iter().map(|m| m.meter.as_str())),
                )
                .chain(
                    config
                        .hj212
                        .iter()
                        .flat_map(|l| l.loggers.iter().map(|g| g.outlet.as_str())),
                )
                .chain(config.dial_in.iter().flat_map(|l| {
                    l.dtus
                        .iter()
                        .flat_map(|d| d.devices.iter().map(|m| m.id.as_str()))
                }))
                .collect(),
        }
    }
}

impl<'a> From<&'a Config> for modbus::Sections<'a> {
    fn from(config: &'a Config) -> Self {
        modbus::Sections {
            devices: &config.modbus,
            serial: &config.modbus_serial,
        }
    }
}

impl Config {
    /// Each machine of the register with the ids of the devices (Modbus, OPC UA, S7, MC
    /// devices, MQTT brokers) that deliver its signals; an empty list: no data source. The
    /// board tells a machine without a source from one whose device failed by it.
    pub fn machine_sources(&self) -> Vec<(String, Vec<String>)> {
        let delivered = deliveries(self);
        self.machines
            .iter()
            .map(|m| (m.id.clone(), delivered.machine_sources(&m.id)))
            .collect()
    }

    /// The register's machine ids and meter ids, as the sources look samples up against them.
    pub fn register_ids(
        &self,
    ) -> (
        std::collections::HashSet<std::sync::Arc<str>>,
        std::collections::HashSet<std::sync::Arc<str>>,
    ) {
        let machines = self.machines.iter().map(|m| m.id.as_str().into()).collect();
        let meters = self.meters.iter().map(|m| m.id.as_str().into()).collect();
        (machines, meters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::key;

    #[test]
    fn every_row_gives_its_section_and_its_keys() {
        assert_eq!(
            Config::SECTIONS.join(", "),
            "site, agent, machine, meter, modbus, modbus_serial, mqtt, opcua, melsec, s7, dlt645, \
             cjt188, hj212, dial_in, state_rules, spool, influx, file, calendar, energy, value_added, green, \
             web, uplink"
        );
        for name in Config::SECTIONS {
            assert!(!Config::known_keys(&[key(name)]).is_empty(), "{name}");
        }
        // Nested tables' keys come from the section's owner.
        let nested =
            |path: &[&str]| Config::known_keys(&path.iter().map(|k| key(k)).collect::<Vec<_>>());
        assert!(nested(&["modbus", "field"]).contains(&"register"));
        assert!(nested(&["s7", "field"]).contains(&"address"));
        assert!(nested(&["dial_in", "dtu", "device", "field"]).contains(&"register"));
        assert!(nested(&["mqtt", "topic", "field"]).contains(&"path"));
        assert!(nested(&["state_rules", "rule", "when"]).contains(&"within"));
        assert!(nested(&["calendar", "shift", "breaks"]).contains(&"start"));
        assert!(nested(&["uplink", "tls"]).contains(&"ca_file"));
        assert!(nested(&["web", "nothing"]).is_empty());
    }

    /// The README's "Configuration reference" is the user's manual of every option: a key the
    /// table of sections knows and the README does not is an option nobody can find. A key of a
    /// table with a heading of its own (`### [[modbus]]`, `#### [[modbus.field]]`) must start a
    /// row of that heading's table; a key of a table without one (`[[calendar.shift]]`) must be
    /// shown in its parent's block, as `` `key` `` or `key =` in an example.
    #[test]
    fn every_key_of_every_section_is_in_the_readme() {
        // Read at run time: a compiled-in README would be part of every build.
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let blocks = readme_blocks(&readme);
        let mut missing = Vec::new();
        for name in Config::SECTIONS {
            check_table(&blocks, &[name.to_string()], None, &mut missing);
        }
        assert!(
            missing.is_empty(),
            "options the README's configuration reference does not describe:\n{}",
            missing.join("\n")
        );
    }

    /// The block of text under each heading that names a table (`` `[site]` ``,
    /// `` `[[modbus.field]]` ``), by the table's dotted name.
    fn readme_blocks(readme: &str) -> std::collections::HashMap<String, String> {
        let mut blocks = std::collections::HashMap::new();
        let mut current: Option<(String, String)> = None;
        for line in readme.lines() {
            if line.starts_with('#') {
                if let Some((name, text)) = current.take() {
                    blocks.entry(name).or_insert(text);
                }
                let table = line
                    .split('`')
                    .nth(1)
                    .map(|t| t.trim_matches(['[', ']']))
                    .filter(|t| !t.is_empty() && !t.contains(' '));
                current = table.map(|t| (t.to_string(), String::new()));
            } else if let Some((_, text)) = &mut current {
                text.push_str(line);
                text.push('\n');
            }
        }
        if let Some((name, text)) = current {
            blocks.entry(name).or_insert(text);
        }
        blocks
    }

    /// Checks the keys of the table at `path`, and of its nested tables; `parent` is the block
    /// of the nearest table above with a heading.
    fn check_table(
        blocks: &std::collections::HashMap<String, String>,
        path: &[String],
        parent: Option<&str>,
        missing: &mut Vec<String>,
    ) {
        let segs: Vec<_> = path.iter().map(|k| key(k)).collect();
        let name = path.join(".");
        let own = blocks.get(&name).map(String::as_str);
        for k in Config::known_keys(&segs) {
            let found = match (own, parent) {
                (Some(block), _) => block.lines().any(|row| {
                    row.starts_with('|')
                        && row
                            .split('|')
                            .nth(1)
                            .is_some_and(|cell| cell.contains(&format!("`{k}`")))
                }),
                (None, Some(block)) => {
                    block.contains(&format!("`{k}`")) || block.contains(&format!("{k} ="))
                }
                (None, None) => false,
            };
            if !found {
                missing.push(format!("[{name}] {k}"));
            }
            let mut inner = path.to_vec();
            inner.push(k.to_string());
            let inner_segs: Vec<_> = inner.iter().map(|k| key(k)).collect();
            if !Config::known_keys(&inner_segs).is_empty() {
                check_table(blocks, &inner, own.or(parent), missing);
            }
        }
    }
}

#[cfg(test)]
mod loading_tests {
    //! What whole config files read into: defaults and parsed values of several sections. What
    //! `check` says of a config is in tests/config_cases/.

    use crate::agent::config::load_str;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n";

    /// The site with one machine and one meter in the register.
    const REGISTER: &str = r#"[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[meter]]
id = "main"
carrier = "electricity"
"#;

    #[test]
    fn a_good_mqtt_section_loads() {
        let text = r#"
[[mqtt]]
id = "plant"
address = "127.0.0.1:1883"
protocol = "5"
keepalive = "20s"

  [[mqtt.topic]]
  pattern = "plant/{machine}/data"
  timestamp = "ts"
  field = [{ signal = "spindle_rpm", path = "spindle.rpm" }, { signal = "parts", type = "int" }]

  [[mqtt.topic]]
  pattern = "spBv1.0/shop1/#"
  format = "sparkplug"
  field = [{ signal = "run", path = "Running", type = "bool" }]
"#;
        // That it loads, with no problem, is also the config case of the same name
        // (tests/config_cases/); here, what it reads.
        let cfg =
            load_str(&format!("{REGISTER}{text}"), "t.toml").unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            cfg.mqtt[0].protocol,
            crate::source::mqtt::config::MqttProtocol::V5
        );
        assert_eq!(cfg.mqtt[0].max_packet_size(), 256 * 1024);
        assert!(!cfg.mqtt[0].clean_session);
    }

    #[test]
    fn store_and_forward_settings_are_read_with_their_defaults() {
        let cfg = load_str(
            &format!("{SITE}[spool]\nmax_age = \"2d\"\n[[influx]]\nurl = \"http://h:8086\"\napi = \"v1\"\ndatabase = \"d\"\nprecision = \"ms\"\ngzip = false\n"),
            "t.toml",
        )
        .unwrap();
        let limits = cfg.spool.limits();
        assert_eq!(
            limits.max_age,
            Some(std::time::Duration::from_secs(2 * 86_400))
        );
        assert_eq!(cfg.spool.sync_interval, std::time::Duration::from_secs(1));
        let out = &cfg.influx[0];
        assert_eq!(out.precision, crate::line_protocol::Precision::Ms);
        assert!(!out.gzip);
        assert_eq!(out.flush_interval, std::time::Duration::from_secs(1));
        assert_eq!(out.retry_max, std::time::Duration::from_secs(60));
        // "0s" turns the age bound off.
        let cfg = load_str(&format!("{SITE}[spool]\nmax_age = \"0s\"\n"), "t.toml").unwrap();
        assert_eq!(cfg.spool.limits().max_age, None);
    }

    #[test]
    fn the_engine_queue_holds_two_events_per_polled_device_past_its_floor() {
        let devices = |n: usize| {
            let mut text = REGISTER.to_string();
            for i in 0..n {
                text.push_str(&format!(
                    "\n[[modbus]]\nid = \"d{i}\"\naddress = \"h{i}:502\"\nmachine = \"cnc01\"\nfield = [{{ signal = \"s{i}\", register = \"holding\", address = 0 }}]\n"
                ));
            }
            load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"))
        };
        // 100 devices: 2 × 100 = 200 events, under the floor of 1024.
        assert_eq!(devices(100).event_queue(), 1024);
        // 600 devices: 2 × 600 = 1200 events, each device's "up" and first result at once.
        assert_eq!(devices(600).event_queue(), 1200);
    }

    #[test]
    fn a_profile_fills_the_device_and_its_fields_belong_to_the_device_machine() {
        // `address_base` is not a field key, the device's own fields use the device's base: the
        // config case of the same name (tests/config_cases/). Here, what the profile fills in.
        let text = format!(
            "{REGISTER}\n[[modbus]]\nid = \"box\"\naddress = \"h:502\"\naddress_base = 1\nprofile = \"cnc-iot-box\"\nmachine = \"cnc01\"\nfield = [{{ signal = \"feed\", register = \"holding\", address = 41 }}]\n"
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let d = &cfg.modbus[0];
        // Seven profile fields, then the device's own.
        assert_eq!(d.fields.len(), 8);
        assert!(
            d.fields
                .iter()
                .all(|f| d.target_of(f) == Some((true, "cnc01")))
        );
        let program = d.fields.iter().find(|f| &*f.signal == "program").unwrap();
        assert_eq!(
            (program.registers(), program.protocol_address()),
            (8, Some(7))
        );
        // The device counts from 1, the profile from 0: each field keeps its own numbering.
        let feed = d.fields.last().unwrap();
        assert_eq!(feed.protocol_address(), Some(40));
    }
}
