//! A TCP proxy for frame-log tests: it stands between the agent and a device and records
//! every byte the agent sends, per connection, so a test can show what went out on the wire.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bytes one client connection sent.
type Log = Arc<Mutex<Vec<u8>>>;

/// A TCP proxy that records every byte the client sends, per connection.
pub struct Recorder {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<Log>>>,
}

impl Recorder {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let sent: Arc<Mutex<Vec<Log>>> = Arc::default();
        let all = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let log: Log = Arc::default();
                all.lock().unwrap().push(log.clone());
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
            }
        });
        Recorder { addr, sent }
    }

    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.lock().unwrap().clone())
            .collect()
    }

    #[allow(dead_code)]
    pub fn connections(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}
