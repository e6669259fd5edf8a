//! The per-path replay window: rejects a frame whose (incarnation, sequence)
//! was already accepted or is too old to tell.
//!
//! Each sender numbers its frames per path from 1 in every incarnation. The
//! receiver keeps the highest sequence accepted and a bitmap of the
//! [`WINDOW`] sequences below it (the scheme of IPsec's anti-replay window), so
//! frames reordered by up to [`WINDOW`] positions (a UDP path) are still
//! accepted once each. The window only ever sees authenticated frames, so
//! updating it cannot be driven by a forger.

/// How far behind the highest sequence a frame may arrive and still be accepted.
pub const WINDOW: u64 = 64;

/// The window refused a frame: already accepted, or older than the window reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Replayed;

/// The sequences of one sender's path accepted so far in its current incarnation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i` set: sequence `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Accepts `seq` if it is new, recording it.
    pub fn accept(&mut self, seq: u64) -> Result<(), Replayed> {
        if seq == 0 {
            return Err(Replayed);
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
            return Ok(());
        }
        let behind = self.highest - seq;
        if behind >= WINDOW {
            return Err(Replayed);
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return Err(Replayed);
        }
        self.seen |= bit;
        Ok(())
    }

    /// Forgets everything: the sender started a new incarnation.
    pub fn reset(&mut self) {
        *self = ReplayWindow::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_sequence_once_within_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(1), Ok(()));
        assert_eq!(w.accept(1), Err(Replayed));
        assert_eq!(w.accept(5), Ok(()));
        assert_eq!(w.accept(3), Ok(()));
        assert_eq!(w.accept(3), Err(Replayed));
        assert_eq!(w.accept(4), Ok(()));
        assert_eq!(w.accept(0), Err(Replayed));
    }

    #[test]
    fn refuses_what_fell_out_of_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(2), Ok(()));
        assert_eq!(w.accept(2 + WINDOW), Ok(()));
        assert_eq!(w.accept(2), Err(Replayed));
        assert_eq!(w.accept(3), Ok(()));
        assert_eq!(w.accept(10_000), Ok(()));
        assert_eq!(w.accept(3 + WINDOW), Err(Replayed));
    }

    #[test]
    fn reset_starts_a_new_incarnation() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(9), Ok(()));
        w.reset();
        assert_eq!(w.accept(1), Ok(()));
    }
}
