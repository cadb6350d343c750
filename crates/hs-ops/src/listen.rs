//! The accept loop of pg_hardstorage's HTTP endpoints (the REST API of `serve` and the
//! `/metrics` of `wal stream`): at most `max` connections at a time (more wait in the
//! listen backlog), each served on its own task, until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Accepts connections on `listener` and runs `serve` on each (a task per connection,
/// at most `max` at once) until `shutdown` resolves; connections being served then
/// finish on their own. A failed accept (out of file descriptors and the like) is
/// logged as `{what}: accept failed: ..` and retried after 100 ms.
pub async fn serve_connections<S, F>(
    listener: TcpListener,
    max: usize,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = limit.clone().acquire_owned() => p,
        };
        let Ok(permit) = permit else {
            return;
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on.
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = serve(stream, peer);
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    }
}

/// Resolves when `shutdown` turns true or its sender is dropped.
pub async fn until_true(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
