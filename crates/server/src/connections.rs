//! The server's connections: accepted, served with hyper's HTTP/1, closed when idle, too slow
//! to send a request's headers or to take what they are sent, and capped in number below the
//! process's file limit.
//!
//! `axum::serve` sets no timeout and no cap: a client that opened connections and sent nothing
//! (or half a header) kept them forever, until the process ran out of file descriptors; then
//! every client was refused, and the log could not open its next segment.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// File descriptors kept for everything but client connections: the log's segments, the read
/// models' database, snapshots, the tenants file, the runtime's own.
const RESERVED_FDS: u64 = 512;

/// Connections open at once, whatever the file limit allows.
const MOST_CONNECTIONS: u64 = 100_000;

/// Serves `router` on `listener` until `stop` completes, then stops accepting and waits until
/// every connection has finished its request under way (an idle one is closed at once).
///
/// A connection with no request under way for `idle` — idle between requests, or with a
/// request's headers still unfinished — is closed, and so is one whose client took nothing of
/// what it was sent for `idle` (a stream nobody reads). At most [`connection_cap`] connections are
/// open at once; past it, new ones wait in the listen queue until one closes.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    idle: Duration,
    stop: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(connection_cap()));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(idle);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or memory for a moment: said, then tried again
                    // after a pause rather than in a busy loop.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small answers go out at once, not after the next packet's acknowledgement.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let io = TokioIo::new(StallLimited { socket: stream, limit: idle, stalled: None });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // An error here is the client's (it left, or sent what is not HTTP).
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection's socket whose writes fail once one has waited `limit` for the client to take
/// data. A client that stopped reading (a suspended laptop, an event stream nobody reads) would
/// otherwise hold its connection, and what it was sent, for as long as TCP keeps probing: for
/// ever, if its machine answers the probes.
struct StallLimited {
    socket: tokio::net::TcpStream,
    limit: Duration,
    /// Running while a write waits for the client; reset by any write that goes through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallLimited {
    /// After the socket took no bytes: the write waits, unless it has waited `limit` already.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of what it was sent",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn went(
        &mut self,
        written: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.wait(cx),
        }
    }
}

impl tokio::io::AsyncRead for StallLimited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallLimited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.socket).poll_write(cx, buf);
        this.went(written, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.socket).poll_write_vectored(cx, bufs);
        this.went(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

/// How many connections may be open at once: what the file limit leaves after
/// [`RESERVED_FDS`], at most [`MOST_CONNECTIONS`]. The soft limit is first raised to the hard
/// one (1,024 by default under systemd, against a hard limit in the hundreds of thousands).
pub fn connection_cap() -> usize {
    let files = raise_file_limit();
    let cap = files.saturating_sub(RESERVED_FDS).clamp(64, MOST_CONNECTIONS);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Raises the soft limit on open files to the hard limit; returns the limit in force.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return 1_024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_files_for_the_rest_and_raises_the_soft_limit() {
        let cap = connection_cap() as u64;
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct passed.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) }, 0);
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.rlim_cur, limit.rlim_max, "the soft limit was raised to the hard one");
        }
        assert!((64..=MOST_CONNECTIONS).contains(&cap), "{cap}");
        assert!(cap == 64 || cap + RESERVED_FDS <= limit.rlim_cur, "{cap} of {}", limit.rlim_cur);
    }
}
