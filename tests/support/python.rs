//! The Python that the tests run independent protocol implementations with (pymodbus's Modbus
//! server, asyncua's OPC UA server): the virtual environment scripts/test installs them into,
//! or `SHOPFLOOR_TEST_PYTHON`.

use std::path::PathBuf;

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOPFLOOR_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    let python = cache.join("shopfloor/venv/bin/python");
    assert!(
        python.exists(),
        "{} does not exist: run scripts/test, which installs pymodbus and asyncua there, or set SHOPFLOOR_TEST_PYTHON",
        python.display()
    );
    python
}
