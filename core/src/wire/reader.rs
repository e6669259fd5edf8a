//! Splits a byte stream (TCP, serial) into frames at `0x00` delimiters.
//!
//! The reader keeps at most `N` bytes of a frame in progress; a run longer
//! than that is discarded up to the next delimiter and reported once as an
//! [`Overflow`], so junk on a line costs bounded memory and resynchronises at
//! the next frame.

use heapless::Vec;

/// An over-long run of bytes without a delimiter was discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Overflow;

/// Reassembles delimited frames from arbitrary chunks of a stream.
#[derive(Debug)]
pub struct FrameReader<const N: usize> {
    pending: Vec<u8, N>,
    overflowed: bool,
}

impl<const N: usize> Default for FrameReader<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameReader<N> {
    /// An empty reader. Use `N >= `[`super::MAX_ENCODED_LEN`] so that every
    /// valid frame fits.
    #[must_use]
    pub const fn new() -> Self {
        FrameReader {
            pending: Vec::new(),
            overflowed: false,
        }
    }

    /// Feeds `input` and calls `on_frame` for every frame it completes, with
    /// the frame's COBS bytes (without the delimiter) ready for
    /// [`super::decode`], or with [`Overflow`] for a discarded run. Empty
    /// frames (two delimiters in a row) are skipped: senders may use a lone
    /// delimiter to flush a line.
    pub fn push(&mut self, input: &[u8], mut on_frame: impl FnMut(Result<&mut [u8], Overflow>)) {
        let mut rest = input;
        while !rest.is_empty() {
            let (chunk, complete) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            rest = &rest[chunk.len() + usize::from(complete)..];
            if !self.overflowed && self.pending.extend_from_slice(chunk).is_err() {
                self.overflowed = true;
                self.pending.clear();
            }
            if complete {
                if self.overflowed {
                    on_frame(Err(Overflow));
                } else if !self.pending.is_empty() {
                    on_frame(Ok(self.pending.as_mut_slice()));
                }
                self.pending.clear();
                self.overflowed = false;
            }
        }
    }

    /// Bytes of an unfinished frame held now.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{FrameReader, Overflow};

    fn frames<const N: usize>(
        reader: &mut FrameReader<N>,
        input: &[u8],
    ) -> Vec<Result<Vec<u8>, Overflow>> {
        let mut out = Vec::new();
        reader.push(input, |f| out.push(f.map(|b| b.to_vec())));
        out
    }

    #[test]
    fn splits_at_delimiters_across_chunks() {
        let mut r = FrameReader::<8>::new();
        assert!(frames(&mut r, b"ab").is_empty());
        assert_eq!(
            frames(&mut r, b"c\0de\0\0f"),
            [Ok(b"abc".to_vec()), Ok(b"de".to_vec())]
        );
        assert_eq!(r.buffered(), 1);
    }

    #[test]
    fn discards_an_overlong_run_and_resynchronises() {
        let mut r = FrameReader::<4>::new();
        assert_eq!(
            frames(&mut r, b"123456789\0ok\0"),
            [Err(Overflow), Ok(b"ok".to_vec())]
        );
    }
}
