//! `[web]`: the local board, its API and `/metrics`.

use serde::Deserialize;

use crate::config::Section;

/// `[web]`
#[derive(Debug, Clone, Deserialize)]
pub struct Web {
    /// Serve the board at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on. The default keeps the board on the gateway itself; to show it on
    /// the shop floor's network, listen on that interface and put it behind the plant's
    /// firewall: the board has no login.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            enabled: true,
            listen: default_listen(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Section for Web {}
