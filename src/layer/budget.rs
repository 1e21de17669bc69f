//! A cap on what the tar parser reads between two entries.
//!
//! The `tar` crate reads a GNU long name (`L`), long link (`K`) or PAX header (`x`)
//! whole into memory, whatever size its header claims: a few kilobytes of gzip can
//! declare gigabytes of zeros there. Between two entries the parser reads only
//! headers, padding and those records (the unpack drains each entry's data itself),
//! so bounding the bytes read while it looks for the next entry bounds that memory
//! without parsing the tar framing a second time.

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

/// Most bytes read while the parser finds one entry: its headers, long names and PAX
/// records. Real names are at most a few KiB and PAX records rarely past 64 KiB.
pub(crate) const MAX_ENTRY_METADATA: u64 = 4 * 1024 * 1024;

/// The switch the unpack loop holds: armed while the parser finds the next entry.
#[derive(Clone, Default)]
pub(crate) struct Budget(Rc<Cell<Option<u64>>>);

impl Budget {
    /// Runs `find_next` (the parser's `next()`) with at most `limit` bytes to read.
    pub(crate) fn bounded<T>(&self, limit: u64, find_next: impl FnOnce() -> T) -> T {
        self.0.set(Some(limit));
        let found = find_next();
        self.0.set(None);
        found
    }
}

/// The reader under the tar parser: counts against the budget when it is armed.
pub(crate) struct Metered<R> {
    inner: R,
    budget: Budget,
}

impl<R> Metered<R> {
    pub(crate) fn new(inner: R, budget: Budget) -> Self {
        Self { inner, budget }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.budget.0.get() else { return self.inner.read(buf) };
        if left == 0 {
            return Err(io::Error::other(format!(
                "the tar headers of one entry (long name, long link or PAX records) exceed {} MiB",
                MAX_ENTRY_METADATA >> 20
            )));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.budget.0.set(Some(left - n as u64));
        Ok(n)
    }
}

/// Seeking reads nothing: `entries_with_seek` skips entry data this way.
impl<R: Seek> Seek for Metered<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_armed_phase_is_bounded() {
        let budget = Budget::default();
        let mut r = Metered::new(io::repeat(1).take(100), budget.clone());
        let mut buf = [0u8; 30];
        assert_eq!(r.read(&mut buf).unwrap(), 30);
        let read = budget.bounded(10, || {
            let mut sink = Vec::new();
            (&mut r).take(50).read_to_end(&mut sink).map(|_| sink.len())
        });
        assert!(read.is_err(), "over the budget while armed");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 60, "disarmed: the rest flows freely");
    }
}
