//! A TCP proxy on 127.0.0.1 in front of a real server that rewrites bytes on the way:
//! in what the client sends (to make the server refuse an option) or in what the server
//! sends (to change a file's content in the backup stream). A rewrite keeps the length,
//! so the protocol's message framing is untouched.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `from` becomes `to` (the same length) wherever it passes, across reads too.
#[derive(Clone, Copy)]
pub struct Rewrite {
    pub from: &'static [u8],
    pub to: &'static [u8],
}

/// How many times each rewrite was made, and the `BASE_BACKUP` commands seen.
#[derive(Default)]
pub struct Counts {
    pub to_server: AtomicUsize,
    pub to_client: AtomicUsize,
    pub base_backups: AtomicUsize,
}

pub struct Proxy {
    pub port: u16,
    pub counts: Arc<Counts>,
}

impl Proxy {
    /// Forwards every connection to `127.0.0.1:upstream`, rewriting what the client
    /// sends with `to_server` and what the server sends with `to_client`.
    pub fn start(
        upstream: u16,
        to_server: Option<Rewrite>,
        to_client: Option<Rewrite>,
    ) -> std::io::Result<Proxy> {
        for r in [to_server, to_client].into_iter().flatten() {
            assert_eq!(r.from.len(), r.to.len(), "a rewrite keeps the length");
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (up, down) = (c.clone(), c.clone());
                std::thread::spawn(move || {
                    pump(
                        client,
                        server,
                        to_server,
                        |n| {
                            up.to_server.fetch_add(n, Ordering::SeqCst);
                        },
                        Some(&up.base_backups),
                    )
                });
                std::thread::spawn(move || {
                    pump(
                        s2,
                        c2,
                        to_client,
                        |n| {
                            down.to_client.fetch_add(n, Ordering::SeqCst);
                        },
                        None,
                    )
                });
            }
        });
        Ok(Proxy { port, counts })
    }

    /// `conninfo` (a URL to the upstream server's port) pointed at the proxy instead.
    pub fn conninfo(&self, conninfo: &str, upstream: u16) -> String {
        let via = conninfo.replace(&format!(":{upstream}/"), &format!(":{}/", self.port));
        assert_ne!(via, conninfo, "the conninfo names port {upstream}");
        via
    }
}

/// Copies `from` to `to`, applying `rewrite`. The last `from.len() - 1` bytes of a read
/// are held back until the next read (a match may straddle the two) or until nothing
/// more arrives for a moment (a short message the peer waits for is not held).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    rewrite: Option<Rewrite>,
    counted: impl Fn(usize),
    base_backups: Option<&AtomicUsize>,
) {
    let hold = rewrite.map_or(0, |r| r.from.len() - 1);
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 << 10];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                if let Some(bb) = base_backups {
                    if find(&buf[..n], b"BASE_BACKUP").is_some() {
                        bb.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if let Some(r) = rewrite {
                    let mut at = 0;
                    while let Some(i) = find(&pending[at..], r.from) {
                        let i = at + i;
                        pending[i..i + r.to.len()].copy_from_slice(r.to);
                        counted(1);
                        at = i + r.to.len();
                    }
                }
                let send = pending.len().saturating_sub(hold);
                if to.write_all(&pending[..send]).is_err() {
                    return;
                }
                pending.drain(..send);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !pending.is_empty() && to.write_all(&pending).is_err() {
                    return;
                }
                pending.clear();
            }
            Err(_) => break,
        }
    }
    let _ = to.write_all(&pending);
    let _ = to.shutdown(Shutdown::Write);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
