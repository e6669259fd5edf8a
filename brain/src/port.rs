//! The admin channel on a protocol endpoint: admin messages in and out of
//! the reliable mailboxes, with the bookkeeping the endpoint's events
//! drive. The daemon's communication manager and the simulator both use
//! it, so the channel they test is the channel that runs.
//!
//! The caller hands it every endpoint event (it turns membership events
//! into the brain's [`Membership`], in order, and uses deliveries and
//! failures to pace and reset the [`Link`]), every message received on
//! [`ADMIN_MAILBOX`], and calls [`AdminPort::flush`] after each, with a
//! closure that queues one mailbox message on the endpoint.

use std::collections::BTreeMap;

use heartline_core::{Event, MessageId, SendError};

use crate::brain::Membership;
use crate::link::{Link, Received};
use crate::message::{AdminMessage, DecodeError, decode, encode};

pub use crate::message::ADMIN_MAILBOX;

/// Admin fragments in flight per peer: a quarter of the host endpoint's
/// queue, so application messages always find room.
pub const WINDOW: usize = 16;

/// The admin channel of one node.
#[derive(Debug)]
pub struct AdminPort {
    link: Link,
    in_flight: BTreeMap<MessageId, u16>,
    /// Fragments dropped because their message's start was lost, or it
    /// grew too large.
    pub dropped: u64,
}

impl AdminPort {
    /// A port that keeps at most `window` fragments per peer in flight.
    #[must_use]
    pub fn new(window: usize) -> AdminPort {
        AdminPort {
            link: Link::new(window),
            in_flight: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Queues `message` for node `to`.
    pub fn send(&mut self, to: u16, message: &AdminMessage) {
        self.link.push(to, &encode(message));
    }

    /// Queues a message already encoded ([`encode`]) for node `to`: the
    /// daemon encodes off its communication manager's thread.
    pub fn send_encoded(&mut self, to: u16, bytes: &[u8]) {
        self.link.push(to, bytes);
    }

    /// Hands queued fragments to the endpoint through `send` (which queues
    /// one mailbox message on [`ADMIN_MAILBOX`] of a node), as far as each
    /// peer's window and the endpoint's queue allow.
    pub fn flush(&mut self, mut send: impl FnMut(u16, &[u8]) -> Result<MessageId, SendError>) {
        let mut full: Vec<u16> = Vec::new();
        while let Some((to, fragment)) = self.link.poll_except(&full) {
            match send(to, &fragment) {
                Ok(id) => {
                    self.in_flight.insert(id, to);
                }
                Err(SendError::QueueFull(_)) => {
                    self.link.unsent(to, fragment);
                    full.push(to);
                }
                Err(_) => {
                    // Down or unknown: what is queued for it is moot; the
                    // brains say hello again when it is back.
                    self.link.reset(to);
                    self.in_flight.retain(|_, n| *n != to);
                }
            }
        }
    }

    /// Takes an endpoint event; a membership change for the brain comes
    /// back.
    pub fn event(&mut self, event: &Event) -> Option<Membership> {
        match *event {
            Event::Delivered { id, .. } => {
                if let Some(to) = self.in_flight.remove(&id) {
                    self.link.delivered(to);
                }
                None
            }
            Event::SendFailed { id, .. } => {
                if let Some(to) = self.in_flight.remove(&id) {
                    self.reset(to);
                }
                None
            }
            Event::NodeUp { node, incarnation } => Some(Membership::Up {
                node: node.0,
                incarnation: incarnation.0,
            }),
            Event::NodeDown { node } => {
                self.reset(node.0);
                Some(Membership::Down { node: node.0 })
            }
            Event::NodeRestarted { node, new, .. } => {
                self.reset(node.0);
                Some(Membership::Restarted {
                    node: node.0,
                    incarnation: new.0,
                })
            }
            Event::Reincarnated { new, .. } => {
                // Every channel started over: what is half-sent is gone.
                // The core reports each message in flight as failed right
                // after this event; with `in_flight` cleared those reports
                // find nothing, so the links are reset once, here.
                self.in_flight.clear();
                self.link.reset_all();
                Some(Membership::Reincarnated { incarnation: new.0 })
            }
            _ => None,
        }
    }

    fn reset(&mut self, node: u16) {
        self.link.reset(node);
        self.in_flight.retain(|_, n| *n != node);
    }

    /// A mailbox message on [`ADMIN_MAILBOX`] from `from`: a whole admin
    /// message once its last fragment is in, still encoded (see
    /// [`decode`]).
    pub fn receive(&mut self, from: u16, payload: &[u8]) -> Option<Vec<u8>> {
        match self.link.receive(from, payload) {
            Received::Partial => None,
            Received::Dropped(_) => {
                self.dropped += 1;
                None
            }
            Received::Message(bytes) => Some(bytes),
        }
    }

    /// As [`AdminPort::receive`], decoded.
    pub fn receive_decoded(
        &mut self,
        from: u16,
        payload: &[u8],
    ) -> Option<Result<AdminMessage, DecodeError>> {
        self.receive(from, payload).map(|bytes| decode(&bytes))
    }

    /// Fragments queued or in flight.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.link.pending()
    }
}
