//! Bounded capture of a policy's stdout and stderr.
//!
//! wasmtime-wasi's `MemoryOutputPipe` refuses writes past its capacity, and
//! Rust's `println!` panics when a write fails: a policy that prints a lot
//! would trap. This pipe instead keeps the first `capacity` bytes, counts and
//! drops the rest, and always reports success, so chatty output is truncated
//! in the host's logs rather than turned into a failed request.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Writes accepted per `check-write` permit.
const PERMIT: usize = 64 << 10;

/// A stdout/stderr sink that keeps at most `capacity` bytes. Clones share the buffer.
#[derive(Clone, Debug)]
pub struct BoundedPipe {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Debug)]
struct Captured {
    kept: Vec<u8>,
    capacity: usize,
    dropped: usize,
}

impl BoundedPipe {
    /// A pipe keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        BoundedPipe {
            inner: Arc::new(Mutex::new(Captured {
                kept: Vec::new(),
                capacity,
                dropped: 0,
            })),
        }
    }

    /// The bytes kept and the number of bytes dropped.
    pub fn contents(&self) -> (Vec<u8>, usize) {
        let c = self.lock();
        (c.kept.clone(), c.dropped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        // A poisoned lock only means another writer panicked mid-append; the
        // buffer is still a valid byte vector.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, bytes: &[u8]) {
        let mut c = self.lock();
        let room = c.capacity.saturating_sub(c.kept.len());
        let keep = room.min(bytes.len());
        c.kept.extend_from_slice(&bytes[..keep]);
        c.dropped += bytes.len() - keep;
    }
}

impl OutputStream for BoundedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedPipe {
    async fn ready(&mut self) {}
}

impl IsTerminal for BoundedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for BoundedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut p = BoundedPipe::new(8);
        p.write(Bytes::from_static(b"hello ")).unwrap();
        p.write(Bytes::from_static(b"world!")).unwrap();
        assert_eq!(p.check_write().unwrap(), PERMIT, "always writable");
        assert_eq!(p.contents(), (b"hello wo".to_vec(), 4));
    }
}
