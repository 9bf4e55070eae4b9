//! Writes line protocol to InfluxDB's HTTP write API, v2 (`/api/v2/write`: InfluxDB 2.x and
//! 3.x, VictoriaMetrics) or v1 (`/write`: InfluxDB 1.x).
//!
//! Posted with `reqwest`: the body is what the spool holds, with timestamps rescaled to the
//! output's `precision` when that is not nanoseconds, and gzip-compressed (`Content-Encoding:
//! gzip`, which InfluxDB 1.x/2.x/3.x and VictoriaMetrics all accept) unless `gzip = false`.
//! Line protocol compresses about tenfold, which is what lets a gateway on a slow uplink catch
//! up after an outage. gzip runs at level 1: on a gateway's small CPU the fastest level keeps
//! draining a backlog bound by the network, not by compression, and level 1 already gets most
//! of the ratio on text this repetitive.

use std::io::Write as _;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::SendError;
use crate::line_protocol::{Precision, rescale_timestamps};
use crate::sink::config::{InfluxApi, InfluxOutput};

/// Errors building a writer from its config.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    #[error("output `{output}`: invalid url `{url}`: {reason}")]
    Url {
        output: String,
        url: String,
        reason: String,
    },
    #[error("output `{output}`: {source}")]
    Secret {
        output: String,
        source: crate::config::SecretError,
    },
    #[error("output `{output}`: cannot build the HTTP client: {source}")]
    Client {
        output: String,
        source: reqwest::Error,
    },
}

/// One configured store.
#[derive(Debug, Clone)]
pub struct InfluxWriter {
    name: String,
    client: reqwest::Client,
    write_url: Url,
    authorization: Option<HeaderValue>,
    precision: Precision,
    gzip: bool,
}

impl InfluxWriter {
    pub fn new(name: &str, cfg: &InfluxOutput) -> Result<Self, InfluxError> {
        crate::install_crypto_provider();
        let url_err = |reason: String| InfluxError::Url {
            output: name.to_string(),
            url: cfg.url.clone(),
            reason,
        };
        let mut base = Url::parse(&cfg.url).map_err(|e| url_err(e.to_string()))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let secret = |s: &Option<crate::config::Secret>| -> Result<Option<String>, InfluxError> {
            s.as_ref()
                .map(|s| s.resolve())
                .transpose()
                .map_err(|source| InfluxError::Secret {
                    output: name.to_string(),
                    source,
                })
        };
        let (mut write_url, authorization) = match cfg.api {
            InfluxApi::V2 => {
                let mut url = base
                    .join("api/v2/write")
                    .map_err(|e| url_err(e.to_string()))?;
                url.query_pairs_mut()
                    .append_pair("org", cfg.org.as_deref().unwrap_or_default())
                    .append_pair("bucket", cfg.bucket.as_deref().unwrap_or_default());
                let auth = secret(&cfg.token)?.map(|t| format!("Token {t}"));
                (url, auth)
            }
            InfluxApi::V1 => {
                let mut url = base.join("write").map_err(|e| url_err(e.to_string()))?;
                url.query_pairs_mut()
                    .append_pair("db", cfg.database.as_deref().unwrap_or_default());
                if let Some(rp) = &cfg.retention_policy {
                    url.query_pairs_mut().append_pair("rp", rp);
                }
                let auth = match (&cfg.username, secret(&cfg.password)?) {
                    (Some(user), password) => Some(format!(
                        "Basic {}",
                        base64(format!("{user}:{}", password.unwrap_or_default()).as_bytes())
                    )),
                    (None, _) => None,
                };
                (url, auth)
            }
        };
        write_url
            .query_pairs_mut()
            .append_pair("precision", cfg.precision.as_str());
        let authorization = authorization
            .map(|a| {
                let mut v = HeaderValue::from_str(&a).map_err(|e| url_err(e.to_string()))?;
                v.set_sensitive(true);
                Ok::<_, InfluxError>(v)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|source| InfluxError::Client {
                output: name.to_string(),
                source,
            })?;
        Ok(InfluxWriter {
            name: name.to_string(),
            client,
            write_url,
            authorization,
            precision: cfg.precision,
            gzip: cfg.gzip,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Posts one batch of lines (`\n`-terminated, nanosecond timestamps, as the spool holds
    /// them).
    pub async fn send(&self, body: &[u8]) -> Result<(), SendError> {
        let mut request = self
            .client
            .post(self.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        // The request owns its body; the rescaled text (or the spool's, borrowed) is gone
        // once it is compressed, before the request is sent.
        let payload = {
            let text = rescale_timestamps(body, self.precision);
            if self.gzip {
                gzip(&text)
            } else {
                text.into_owned()
            }
        };
        if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        request = request.body(payload);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(|e| SendError::Retry {
            reason: format!("cannot reach the store: {}", error_chain(&e)),
            after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut message = response.text().await.unwrap_or_default();
        message.truncate(1000);
        let message = message.trim().to_string();
        Err(classify(status, message, after))
    }
}

/// The action for each HTTP status.
fn classify(status: StatusCode, message: String, after: Option<Duration>) -> SendError {
    match status.as_u16() {
        401 | 403 | 404 => SendError::Config {
            status: status.as_u16(),
            message,
        },
        413 => SendError::TooLarge,
        429 | 503 => SendError::Retry {
            reason: format!("store busy ({status}): {message}"),
            after,
        },
        s if (400..500).contains(&s) => SendError::Rejected { status: s, message },
        _ => SendError::Retry {
            reason: format!("store error ({status}): {message}"),
            after: None,
        },
    }
}

/// gzip at level 1 (see the module documentation). Writing into a `Vec` cannot fail.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 6 + 64), Compression::fast());
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// An error and its sources, each once: many errors already print their source in their own
/// text (hyper's "client error (Connect)" and its cause, ours "cannot read {path}: {source}"),
/// and neither the log nor the command line's `error:` line must say it twice.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Standard base64 for the Basic authorization header; a few lines rather than a crate.
pub(crate) fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// An error whose text already holds its cause's shows the cause once.
    #[test]
    fn an_error_chain_says_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let refused = E("tcp connect error: Connection refused", None);
        let connect = E(
            "client error (Connect): tcp connect error: Connection refused",
            Some(Box::new(refused)),
        );
        let top = E("error sending request", Some(Box::new(connect)));
        assert_eq!(
            error_chain(&top),
            "error sending request: client error (Connect): tcp connect error: Connection refused"
        );
    }

    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn each_status_maps_to_its_action() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), "msg".into(), None);
        assert!(matches!(c(400), SendError::Rejected { status: 400, .. }));
        assert!(matches!(c(401), SendError::Config { .. }));
        assert!(matches!(c(404), SendError::Config { .. }));
        assert_eq!(c(413), SendError::TooLarge);
        assert!(matches!(c(429), SendError::Retry { .. }));
        assert!(matches!(c(500), SendError::Retry { .. }));
        let busy = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            String::new(),
            Some(Duration::from_secs(7)),
        );
        assert!(
            matches!(busy, SendError::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
    }

    #[test]
    fn v2_and_v1_urls_and_auth() {
        // SAFETY: tests in this module are the only readers of this variable.
        unsafe { std::env::set_var("SHOPFLOOR_TEST_TOKEN_V2", "t0k") };
        let cfg: InfluxOutput = toml::from_str(
            r#"url = "http://db:8086/base"
               org = "county"
               bucket = "shop floor"
               token = { env = "SHOPFLOOR_TEST_TOKEN_V2" }"#,
        )
        .unwrap();
        let w = InfluxWriter::new("influx", &cfg).unwrap();
        assert_eq!(
            w.write_url.as_str(),
            "http://db:8086/base/api/v2/write?org=county&bucket=shop+floor&precision=ns"
        );
        assert_eq!(w.authorization.unwrap(), "Token t0k");

        let cfg: InfluxOutput = toml::from_str(
            r#"url = "http://db:8086"
               api = "v1"
               database = "shopfloor"
               retention_policy = "autogen"
               username = "agent""#,
        )
        .unwrap();
        let w = InfluxWriter::new("influx", &cfg).unwrap();
        assert_eq!(
            w.write_url.as_str(),
            "http://db:8086/write?db=shopfloor&rp=autogen&precision=ns"
        );
        // "agent:" → YWdlbnQ6
        assert_eq!(w.authorization.unwrap(), "Basic YWdlbnQ6");

        let cfg: InfluxOutput = toml::from_str(
            r#"url = "http://db:8086"
               api = "v1"
               database = "shopfloor"
               precision = "s""#,
        )
        .unwrap();
        let w = InfluxWriter::new("influx", &cfg).unwrap();
        assert_eq!(
            w.write_url.as_str(),
            "http://db:8086/write?db=shopfloor&precision=s"
        );
    }

    #[test]
    fn gzip_bodies_inflate_to_the_same_bytes() {
        use std::io::Read as _;
        let body = "signal,machine=cnc01 rpm=1200i 1700000000000000000\n".repeat(100);
        let packed = gzip(body.as_bytes());
        // 100 identical lines of 51 bytes compress far below their 5100 bytes.
        assert!(packed.len() < 200, "{} bytes", packed.len());
        let mut unpacked = String::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_string(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, body);
    }
}
