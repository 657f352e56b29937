//! Content-defined chunking of a stream, cutting where `fastcdc`'s
//! `StreamCDC` cuts (FastCDC 2020, normalisation level 1, no seed), so
//! chunk ids match those of repositories written with it.
//!
//! Why not `StreamCDC` itself: it hands each chunk out by draining its
//! buffer byte by byte into a new vector and then moves the rest of its
//! buffer (three times the chunk on average) down: four copies of every
//! byte, more than a tenth of bk-seal's time on a large file. Here the
//! buffer holds two maximum chunks; a chunk is one slice copy, and what is
//! left moves down only when less than a maximum chunk of room remains.

use std::io::{self, Read};

use fastcdc::v2020::FastCDC;

/// Smallest chunk of a chunked file (but the last).
pub const CHUNK_MIN: u32 = 512 << 10;
/// Average chunk size.
pub const CHUNK_AVG: u32 = 1 << 20;
/// Largest chunk size (bounds memory per chunk in flight).
pub const CHUNK_MAX: u32 = 4 << 20;

/// Cuts the bytes of `source` into chunks of `min..=max` bytes (except a
/// shorter last one), averaging `avg`; reads at most `max` bytes ahead.
pub struct Chunker<R> {
    source: R,
    buf: Vec<u8>,
    /// The bytes read and not yet cut are `buf[start..start + len]`.
    start: usize,
    len: usize,
    eof: bool,
    min: u32,
    avg: u32,
    max: u32,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `source` with bk's chunk sizes: bk-hash and bk-seal
    /// must cut alike, or chunk hashes would not name the chunks stored.
    pub fn new(source: R) -> Self {
        Self::with_sizes(source, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
    }

    /// A chunker over `source` with other sizes, within `fastcdc`'s limits.
    pub fn with_sizes(source: R, min: u32, avg: u32, max: u32) -> Self {
        Chunker {
            source,
            buf: vec![0; 2 * max as usize],
            start: 0,
            len: 0,
            eof: false,
            min,
            avg,
            max,
        }
    }

    /// Reads until a maximum chunk is buffered or the source ends, as
    /// `StreamCDC` does before every cut (a cut depends on how much is
    /// buffered).
    fn fill(&mut self) -> io::Result<()> {
        let max = self.max as usize;
        if self.eof || self.len == max {
            return Ok(());
        }
        if self.start + max > self.buf.len() {
            self.buf.copy_within(self.start..self.start + self.len, 0);
            self.start = 0;
        }
        while !self.eof && self.len < max {
            let free = self.start + self.len..self.start + max;
            match self.source.read(&mut self.buf[free]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, borrowed from the buffer, or `None` at the end of
    /// the source (for a caller that only looks at the bytes).
    pub fn next_slice(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill()?;
        if self.len == 0 {
            return Ok(None);
        }
        let start = self.start;
        let buffered = &self.buf[start..start + self.len];
        let (_, end) = FastCDC::new(buffered, self.min, self.avg, self.max).cut(0, self.len);
        if end == 0 {
            return Ok(None);
        }
        self.start += end;
        self.len -= end;
        Ok(Some(&self.buf[start..start + end]))
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_slice().map(|c| c.map(<[u8]>::to_vec)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    /// A reader that returns at most `step` bytes per read, to check that
    /// short reads do not move the cuts.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_cdc_chunks(data: &[u8], min: u32, avg: u32, max: u32) -> Vec<Vec<u8>> {
        fastcdc::v2020::StreamCDC::new(data, min, avg, max)
            .map(|c| c.expect("in-memory read").data)
            .collect()
    }

    #[test]
    fn cuts_where_stream_cdc_cuts() {
        let mut data = vec![0u8; 3 << 20];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);
        // A run of zeros makes some chunks hit the maximum size.
        data[1 << 20..(1 << 20) + 300_000].fill(0);
        let (min, avg, max) = (4096, 16384, 65536);
        let expected = stream_cdc_chunks(&data, min, avg, max);
        assert!(expected.len() > 50, "{} chunks", expected.len());
        for step in [usize::MAX, 1000, 65536] {
            let got: Vec<Vec<u8>> =
                Chunker::with_sizes(Trickle { data: &data, step }, min, avg, max)
                    .collect::<io::Result<_>>()
                    .expect("in-memory read");
            assert_eq!(got.len(), expected.len(), "read step {step}");
            assert!(got == expected, "read step {step}: chunks differ");
        }
    }

    #[test]
    fn empty_and_short_sources() {
        assert_eq!(Chunker::with_sizes(&[][..], 4096, 16384, 65536).count(), 0);
        let short = [5u8; 100];
        let chunks: Vec<Vec<u8>> = Chunker::with_sizes(&short[..], 4096, 16384, 65536)
            .collect::<io::Result<_>>()
            .expect("in-memory read");
        assert_eq!(chunks, vec![short.to_vec()]);
    }

    #[test]
    fn read_errors_reach_the_caller() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = Chunker::with_sizes(Failing, 4096, 16384, 65536)
            .next()
            .expect("an item")
            .expect_err("the read error");
        assert_eq!(err.to_string(), "disk on fire");
    }
}
