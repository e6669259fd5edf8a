//! The admin channel's framing: admin messages of any size cut into
//! mailbox messages (at most 512 bytes each) and joined again, sans-IO.
//!
//! Each fragment starts with a flags byte (bit 0: more fragments follow;
//! bit 1: this is a message's first) and the message's number (u32 LE),
//! then up to [`FRAGMENT`] bytes of the message. The mailbox channel
//! delivers a peer's fragments in order and exactly once while both stay
//! up; when a peer goes down or restarts, the caller resets it here, which
//! drops what was queued for it and what was half-received from it. A
//! fragment that does not continue the message being joined (its start
//! was lost) is dropped, and the message with it.
//!
//! Sending is windowed: at most `window` fragments per peer are handed to
//! the endpoint before earlier ones are delivered, so a large snapshot
//! never fills the endpoint's queue that application messages share.

use std::collections::{BTreeMap, VecDeque};

/// Bytes of a message per fragment.
pub const FRAGMENT: usize = 500;
/// Bytes before each fragment's piece.
pub const HEADER: usize = 5;

const MORE: u8 = 1;
const FIRST: u8 = 2;

/// Largest message joined (a snapshot of a very large configuration);
/// a peer sending more is cut off and the message dropped.
pub const MAX_MESSAGE: usize = 64 << 20;

#[derive(Debug, Default)]
struct Outbound {
    queue: VecDeque<Vec<u8>>,
    in_flight: usize,
    number: u32,
}

#[derive(Debug, Default)]
struct Inbound {
    number: u32,
    bytes: Vec<u8>,
    joining: bool,
}

/// What happened to a fragment that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Part of a message; more to come.
    Partial,
    /// A whole message.
    Message(Vec<u8>),
    /// Dropped: it did not continue what was being joined, was too short,
    /// or the message grew past [`MAX_MESSAGE`]; the text says which.
    Dropped(&'static str),
}

/// Every peer's fragments, both ways.
#[derive(Debug)]
pub struct Link {
    window: usize,
    out: BTreeMap<u16, Outbound>,
    inbound: BTreeMap<u16, Inbound>,
}

impl Link {
    /// A link that keeps at most `window` fragments per peer in flight.
    #[must_use]
    pub fn new(window: usize) -> Link {
        Link {
            window: window.max(1),
            out: BTreeMap::new(),
            inbound: BTreeMap::new(),
        }
    }

    /// Queues `message` for `to`, cut into fragments.
    pub fn push(&mut self, to: u16, message: &[u8]) {
        let out = self.out.entry(to).or_default();
        out.number = out.number.wrapping_add(1);
        let pieces: Vec<&[u8]> = if message.is_empty() {
            vec![&[]]
        } else {
            message.chunks(FRAGMENT).collect()
        };
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut flags = 0;
            if i < last {
                flags |= MORE;
            }
            if i == 0 {
                flags |= FIRST;
            }
            let mut fragment = Vec::with_capacity(HEADER + piece.len());
            fragment.push(flags);
            fragment.extend_from_slice(&out.number.to_le_bytes());
            fragment.extend_from_slice(piece);
            out.queue.push_back(fragment);
        }
    }

    /// The next fragment to hand to the endpoint, if a peer has one queued
    /// and room in its window. The caller reports its fate with
    /// [`Link::delivered`], or gives it back with [`Link::unsent`] if the
    /// endpoint would not take it now.
    pub fn poll(&mut self) -> Option<(u16, Vec<u8>)> {
        self.poll_except(&[])
    }

    /// As [`Link::poll`], for peers other than `skip`.
    pub fn poll_except(&mut self, skip: &[u16]) -> Option<(u16, Vec<u8>)> {
        let window = self.window;
        let (node, out) = self
            .out
            .iter_mut()
            .find(|(n, o)| o.in_flight < window && !o.queue.is_empty() && !skip.contains(n))?;
        let fragment = out.queue.pop_front()?;
        out.in_flight += 1;
        Some((*node, fragment))
    }

    /// A fragment [`Link::poll`] gave was not taken (the endpoint's queue
    /// was full): it goes back to the front.
    pub fn unsent(&mut self, to: u16, fragment: Vec<u8>) {
        let out = self.out.entry(to).or_default();
        out.in_flight = out.in_flight.saturating_sub(1);
        out.queue.push_front(fragment);
    }

    /// A fragment to `to` was delivered.
    pub fn delivered(&mut self, to: u16) {
        if let Some(out) = self.out.get_mut(&to) {
            out.in_flight = out.in_flight.saturating_sub(1);
        }
    }

    /// Whether `to` has nothing queued or in flight.
    #[must_use]
    pub fn idle(&self, to: u16) -> bool {
        self.out
            .get(&to)
            .is_none_or(|o| o.queue.is_empty() && o.in_flight == 0)
    }

    /// Fragments queued or in flight, to every peer.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.out.values().map(|o| o.queue.len() + o.in_flight).sum()
    }

    /// `node` went down or restarted: what was queued for it, in flight to
    /// it and half-received from it is dropped.
    pub fn reset(&mut self, node: u16) {
        if let Some(out) = self.out.get_mut(&node) {
            out.queue.clear();
            out.in_flight = 0;
        }
        self.inbound.remove(&node);
    }

    /// This node took a new run: every peer's link starts over.
    pub fn reset_all(&mut self) {
        let nodes: Vec<u16> = self
            .out
            .keys()
            .chain(self.inbound.keys())
            .copied()
            .collect();
        for node in nodes {
            self.reset(node);
        }
    }

    /// A fragment arrived from `from`.
    pub fn receive(&mut self, from: u16, fragment: &[u8]) -> Received {
        if fragment.len() < HEADER {
            return Received::Dropped("a fragment shorter than its header");
        }
        let flags = fragment[0];
        let number = u32::from_le_bytes([fragment[1], fragment[2], fragment[3], fragment[4]]);
        let piece = &fragment[HEADER..];
        let joining = self.inbound.entry(from).or_default();
        if flags & FIRST != 0 {
            // A message joined before and never finished was given up by
            // its sender; this one starts afresh.
            *joining = Inbound {
                number,
                bytes: piece.to_vec(),
                joining: true,
            };
        } else if joining.joining && joining.number == number {
            joining.bytes.extend_from_slice(piece);
        } else {
            *joining = Inbound::default();
            return Received::Dropped("a fragment whose message's start was lost");
        }
        if joining.bytes.len() > MAX_MESSAGE {
            *joining = Inbound::default();
            return Received::Dropped("a message larger than the admin channel takes");
        }
        if flags & MORE != 0 {
            return Received::Partial;
        }
        joining.joining = false;
        Received::Message(std::mem::take(&mut joining.bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn send_all(link: &mut Link, peer: &mut Link, from: u16) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Some((_, fragment)) = link.poll() {
            link.delivered(0);
            if let Received::Message(m) = peer.receive(from, &fragment) {
                got.push(m);
            }
        }
        got
    }

    #[test]
    fn messages_of_every_size_arrive_whole_and_in_order() {
        let mut a = Link::new(4);
        let mut b = Link::new(4);
        let messages: Vec<Vec<u8>> = [0, 1, 499, 500, 501, 1000, 12_345]
            .iter()
            .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
            .collect();
        for m in &messages {
            a.push(0, m);
        }
        assert_eq!(send_all(&mut a, &mut b, 1), messages);
        assert!(a.idle(0));
    }

    #[test]
    fn the_window_holds_fragments_back_until_delivered() {
        let mut a = Link::new(2);
        a.push(7, &[0; 2000]);
        assert!(a.poll().is_some() && a.poll().is_some());
        assert!(a.poll().is_none(), "window full");
        a.delivered(7);
        let (to, fragment) = a.poll().unwrap();
        a.unsent(to, fragment.clone());
        assert_eq!(a.poll().unwrap().1, fragment, "given back to the front");
    }

    #[test]
    fn a_reset_drops_half_messages_both_ways() {
        let mut a = Link::new(100);
        let mut b = Link::new(100);
        a.push(0, &[1; 1200]);
        let (_, first) = a.poll().unwrap();
        assert_eq!(b.receive(1, &first), Received::Partial);
        // The sender's peer went down: the rest is dropped, the receiver
        // resets too.
        a.reset(0);
        b.reset(1);
        assert!(a.idle(0));
        a.push(0, b"next");
        assert_eq!(send_all(&mut a, &mut b, 1), vec![b"next".to_vec()]);
        // Only the receiver noticed: the tail of a message whose start it
        // dropped is dropped too, and the next message arrives.
        a.push(0, &[2; 1200]);
        let (_, head) = a.poll().unwrap();
        b.receive(1, &head);
        b.reset(1);
        let got = send_all(&mut a, &mut b, 1);
        assert!(got.is_empty(), "{got:?}");
        a.push(0, b"after");
        assert_eq!(send_all(&mut a, &mut b, 1), vec![b"after".to_vec()]);
    }

    #[test]
    fn a_message_cut_short_by_its_sender_is_dropped_for_the_next() {
        let mut a = Link::new(100);
        let mut b = Link::new(100);
        a.push(0, &[3; 1200]);
        let (_, head) = a.poll().unwrap();
        assert_eq!(b.receive(1, &head), Received::Partial);
        a.reset(0);
        a.push(0, b"fresh");
        assert_eq!(send_all(&mut a, &mut b, 1), vec![b"fresh".to_vec()]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut b = Link::new(1);
        for junk in [
            &b""[..],
            b"\x01",
            b"\x00\x00\x00\x00\x00abc",
            b"\xff\xff\xff\xff\xff\xff",
        ] {
            let _ = b.receive(3, junk);
        }
    }
}
