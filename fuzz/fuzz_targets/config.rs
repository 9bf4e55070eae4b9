//! Fuzzes config loading: any text as a config file and as a device profile, through the
//! same loader `shopfloor check` and `shopfloor run` use (TOML, the schema, every cross-check
//! and the line-and-column diagnostics). Nothing may panic, and a refused config says why
//! with at least one problem.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(d) = shopfloor::agent::config::load_str(&text, "fuzz.toml") {
        assert!(
            !d.to_string().is_empty(),
            "a refused config without a reason"
        );
    }
    if let Err(d) = shopfloor::source::modbus::profile::load_profile_str(&text, "fuzz-profile.toml")
    {
        assert!(
            !d.to_string().is_empty(),
            "a refused profile without a reason"
        );
    }
});
