//! Runs the decompression and hashing of a layer on a second thread, handing the
//! applier buffers through a small bounded channel: inflate and file creation then
//! overlap on two cores, as `tar -xzf` overlaps its gzip child. Memory stays bounded
//! by the channel (a few buffers), never a whole layer.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

/// Size of one handed-over buffer.
const CHUNK: usize = 256 * 1024;
/// Buffers in flight between the threads.
const DEPTH: usize = 8;

/// The reading end: yields the producer's bytes in order.
pub(crate) struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    /// Spent buffers go back to the producer: fresh 256 KiB allocations are mmap'd and
    /// page-faulted in, which for a 1 GiB layer cost seconds of system time.
    recycle: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let spent = std::mem::replace(&mut self.current, chunk);
                    if spent.capacity() >= CHUNK {
                        let _ = self.recycle.try_send(spent);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer finished (or died; its join reports why).
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Starts reading `source` to its end on a thread of `scope`. The handle returns the
/// source when it is exhausted (or the reader went away), for its digests.
pub(crate) fn spawn<'scope, 'env, R: Read + Send + 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    mut source: R,
) -> (ChunkReader, ScopedJoinHandle<'scope, R>) {
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle, recycled) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let handle = scope.spawn(move || {
        loop {
            let mut chunk = match recycled.try_recv() {
                Ok(mut buf) => {
                    buf.resize(CHUNK, 0);
                    buf
                }
                Err(_) => vec![0u8; CHUNK],
            };
            let mut filled = 0;
            let result = loop {
                match source.read(&mut chunk[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == CHUNK {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            chunk.truncate(filled);
            let last = filled < CHUNK;
            let message = match result {
                Ok(()) if chunk.is_empty() => break,
                Ok(()) => Ok(chunk),
                Err(e) => Err(e),
            };
            let failed = message.is_err();
            if tx.send(message).is_err() || failed || last {
                break;
            }
        }
        source
    });
    (ChunkReader { rx, recycle, current: Vec::new(), pos: 0, done: false }, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_byte_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            let (mut reader, handle) = spawn(s, &data[..]);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
            assert!(handle.join().unwrap().is_empty());
        });
    }

    #[test]
    fn errors_reach_the_reader() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        std::thread::scope(|s| {
            let (mut reader, _handle) = spawn(s, Failing);
            assert_eq!(reader.read(&mut [0u8; 4]).unwrap_err().to_string(), "boom");
        });
    }
}
