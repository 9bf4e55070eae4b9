//! `[web]`: the local board, its API and `/metrics`.

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use crate::config::{Checker, References, Secret, Section, key};

/// `[web]`
#[derive(Debug, Clone, Deserialize)]
pub struct Web {
    /// Serve the board at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on. The default keeps the board on the gateway itself; to show it on
    /// the shop floor's network, listen on that interface and put it behind the plant's
    /// firewall: the board's pages have no login (its writes need `write_token`).
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// The token every write (`POST /api/value-added`) must carry as
    /// `Authorization: Bearer <token>`: `{ env = "VARIABLE" }` or `{ file = "/path" }`. Without
    /// it the board is read-only and every write is refused with 403.
    #[serde(default)]
    pub write_token: Option<Secret>,
    /// Host names the board answers to besides the listen address, `localhost`, `127.0.0.1`
    /// and `[::1]` (for example the gateway's DNS name). A request whose `Host` is none of these
    /// is refused with 421, so a web page cannot reach the board by DNS rebinding; a write whose
    /// `Origin` names none of them is refused with 403.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// An `http://` or `https://` URL that every alert opening and closing is POSTed to as
    /// JSON (see the README's alerts). Independent of `enabled`.
    #[serde(default)]
    pub alert_webhook: Option<String>,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            enabled: true,
            listen: default_listen(),
            write_token: None,
            hosts: Vec::new(),
            alert_webhook: None,
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

/// The write token must be readable where the agent runs, and a host is a bare name (no
/// scheme, path or port).
pub(crate) fn check_web(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    web: &mut Web,
    _: &References<'_>,
) {
    let span = |checker: &Checker<'_>, name: &str| checker.span_of(root, &[key("web"), key(name)]);
    if let Some(Err(e)) = (web.write_token.as_ref())
        .filter(|_| checker.resolves(crate::config::SecretOf::Output))
        .map(|s| s.resolve())
    {
        let at = span(checker, "write_token");
        checker.push(at, format!("write_token: {e}"));
    }
    if let Some(url) = &web.alert_webhook
        && reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .is_none()
    {
        let at = span(checker, "alert_webhook");
        checker.push(
            at,
            format!("alert_webhook: `{url}` is not an http:// or https:// URL"),
        );
    }
    for host in &web.hosts {
        if host.is_empty() || host.contains(['/', ' ']) || host.contains("://") {
            let at = span(checker, "hosts");
            checker.push(
                at,
                format!("hosts: `{host}` is not a host name: write the bare name, e.g. \"gateway.plant.local\""),
            );
        }
    }
}
