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

/// Starts `script` with `args` under [`python`] and waits for the line `ready` it prints once
/// it serves; `what` names it in the panic when it does not (a missing package, say).
#[allow(dead_code)]
pub fn start_ready(script: &str, args: &[String], what: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        panic!("{what} did not start (is its package installed? run scripts/test)");
    }
    child
}
