//! The reliable channel to one peer: ordered, exactly-once delivery of
//! mailbox messages and event reports, over whichever path is up.
//!
//! Sending: every message takes the next sequence number (from 1 for each
//! pair of incarnations) and waits in a bounded queue until the peer's
//! cumulative ack covers it; only then is it reported delivered. The first
//! `window` messages of the queue may be in flight at once. One
//! retransmission timer runs while anything is in flight (TCP's scheme): when
//! it fires, everything in flight is sent again in order (go-back-N, which
//! suits a receiver that keeps no out-of-order messages) and the timeout
//! doubles; any progress resets it. Messages in flight on a path that goes
//! down are sent again at once on another.
//!
//! Receiving: only the next expected sequence is delivered; a duplicate or a
//! message after a gap is dropped and answered with the cumulative ack, so the
//! sender resends what is missing. Every message also carries the sender's
//! `base`, the oldest sequence it still holds: anything before it was settled
//! (acked, or failed when the receiver was declared down), so a receiver
//! missing it skips ahead rather than waiting for what will never come. A message the application has no room for
//! is not acked either: a full inbox pushes back on the sender instead of
//! losing anything.
//!
//! Restarts: a message sent to a peer that then restarts may or may not have
//! reached the old run, so it is reported failed (`PeerRestarted`), never
//! silently resent to the new run; messages never sent are renumbered and go
//! to the new run. When a peer is declared down every queued message fails.

use heapless::{Deque, Vec};

use crate::ids::{MessageId, NodeId, PathId};
use crate::rtt::MAX_RTO;
use crate::time::{Duration, Instant};
use crate::wire::{Data, EventReport, MAX_PAYLOAD, Message};

/// What a queued message carries.
// Without a heap every queue slot is sized for a full mailbox message anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Content<const P: usize = MAX_PAYLOAD> {
    Mailbox {
        mailbox: u16,
        payload: Vec<u8, P>,
    },
    Event {
        code: u16,
        subject: NodeId,
        detail: u32,
    },
}

#[derive(Clone, Debug)]
struct Outgoing<const P: usize> {
    id: MessageId,
    seq: u32,
    content: Content<P>,
    /// The path of its latest transmission; `None` while it waits to be
    /// (re)sent.
    sent_on: Option<PathId>,
    attempts: u32,
}

/// Whether sequence `a` comes after `b`, in serial-number arithmetic
/// (RFC 1982), so numbering survives wrapping past `u32::MAX`.
fn seq_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

/// What to do with a received data or event message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next in order: deliver it if there is room, then call `delivered`.
    Next,
    /// Already delivered, or after a gap: drop it, ack what we have.
    Drop,
}

/// One peer's channel; `Q` messages of up to `P` bytes may wait unacked.
#[derive(Clone, Debug)]
pub(crate) struct Channel<const Q: usize, const P: usize = MAX_PAYLOAD> {
    outgoing: Deque<Outgoing<P>, Q>,
    next_seq: u32,
    window: usize,
    /// Highest sequence received in order from the peer.
    received: u32,
    /// Path to send the next ack on, if one is owed.
    ack_due: Option<PathId>,
    /// When everything in flight is resent, while anything is.
    timer: Option<Instant>,
    /// Timeouts in a row without progress: the timeout doubles each time.
    backoff: u32,
    /// The retransmission timeout of the path last used.
    timeout: Duration,
}

impl<const Q: usize, const P: usize> Channel<Q, P> {
    pub(crate) fn new(window: usize) -> Self {
        Channel {
            outgoing: Deque::new(),
            next_seq: 1,
            window: window.clamp(1, Q.max(1)),
            received: 0,
            ack_due: None,
            timer: None,
            backoff: 0,
            timeout: MAX_RTO,
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.outgoing.len()
    }

    /// Queues a message; false if the queue is full.
    pub(crate) fn push(&mut self, id: MessageId, content: Content<P>) -> bool {
        let seq = self.next_seq;
        let queued = self.outgoing.push_back(Outgoing {
            id,
            seq,
            content,
            sent_on: None,
            attempts: 0,
        });
        if queued.is_ok() {
            self.next_seq = self.next_seq.wrapping_add(1);
        }
        queued.is_ok()
    }

    /// The peer acked everything up to `cumulative` at `now`; reports each
    /// newly delivered message.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        cumulative: u32,
        mut delivered: impl FnMut(MessageId),
    ) {
        let mut progressed = false;
        while let Some(front) = self.outgoing.front() {
            if seq_after(front.seq, cumulative) || front.attempts == 0 {
                break;
            }
            delivered(front.id);
            self.outgoing.pop_front();
            progressed = true;
        }
        if progressed {
            self.backoff = 0;
            let in_flight = self.outgoing.iter().any(|o| o.sent_on.is_some());
            self.timer = in_flight.then_some(now + self.timeout);
        }
    }

    /// When a message must next be (re)sent, if any waits.
    pub(crate) fn send_deadline(&self) -> Option<Instant> {
        let unsent = self
            .outgoing
            .iter()
            .take(self.window)
            .any(|o| o.sent_on.is_none());
        if unsent {
            Some(Instant::ZERO)
        } else {
            self.timer
        }
    }

    /// Which send round `now` is in: 0 until a timeout passes without
    /// progress, then one more per timeout (the round the next
    /// [`Channel::poll_send`] sends in), back to 0 on progress.
    pub(crate) fn round(&self, now: Instant) -> u32 {
        let expired = self.timer.is_some_and(|at| at <= now);
        self.backoff.saturating_add(u32::from(expired))
    }

    /// The message to send now on `path`, if one is due; records the send.
    /// `timeout` is that path's retransmission timeout.
    pub(crate) fn poll_send(
        &mut self,
        now: Instant,
        path: PathId,
        timeout: Duration,
    ) -> Option<Message<'_>> {
        self.timeout = timeout;
        if self.timer.is_some_and(|at| at <= now) {
            for o in self.outgoing.iter_mut().take(self.window) {
                o.sent_on = None;
            }
            self.backoff = self.backoff.saturating_add(1);
            self.timer = None;
        }
        let base = self.outgoing.front().map_or(self.next_seq, |o| o.seq);
        let next = self
            .outgoing
            .iter_mut()
            .take(self.window)
            .find(|o| o.sent_on.is_none())?;
        next.sent_on = Some(path);
        next.attempts = next.attempts.saturating_add(1);
        if self.timer.is_none() {
            let backed_off = timeout * (1u32 << self.backoff.min(16));
            self.timer = Some(now + backed_off.min(MAX_RTO));
        }
        Some(match &next.content {
            Content::Mailbox { mailbox, payload } => Message::Data(Data {
                seq: next.seq,
                base,
                mailbox: *mailbox,
                payload,
            }),
            Content::Event {
                code,
                subject,
                detail,
            } => Message::Event(EventReport {
                seq: next.seq,
                base,
                code: *code,
                subject: *subject,
                detail: *detail,
            }),
        })
    }

    /// `path` went down: what was in flight on it goes out again at once.
    pub(crate) fn path_down(&mut self, path: PathId) {
        for o in self.outgoing.iter_mut().filter(|o| o.sent_on == Some(path)) {
            o.sent_on = None;
        }
    }

    /// Classifies a received message with sequence `seq` and the sender's
    /// `base` that came in on `path`.
    pub(crate) fn arrival(&mut self, seq: u32, base: u32, path: PathId) -> Arrival {
        self.ack_due = Some(path);
        if seq_after(base, self.received.wrapping_add(1)) {
            self.received = base.wrapping_sub(1);
        }
        if seq == self.received.wrapping_add(1) {
            Arrival::Next
        } else {
            Arrival::Drop
        }
    }

    /// The application took the message [`Arrival::Next`] announced.
    pub(crate) fn delivered(&mut self) {
        self.received = self.received.wrapping_add(1);
    }

    /// The ack owed, with the path it should go on.
    pub(crate) fn take_ack(&mut self) -> Option<(PathId, u32)> {
        self.ack_due.take().map(|path| (path, self.received))
    }

    /// The peer is down: everything queued fails.
    pub(crate) fn fail_all(&mut self, mut failed: impl FnMut(MessageId)) {
        while let Some(o) = self.outgoing.pop_front() {
            failed(o.id);
        }
        self.timer = None;
        self.backoff = 0;
    }

    /// The peer restarted: fail what the old run may have seen, renumber the
    /// rest for the new run, and start receiving from 1.
    pub(crate) fn peer_restarted(&mut self, mut failed: impl FnMut(MessageId)) {
        let mut kept: Deque<Outgoing<P>, Q> = Deque::new();
        while let Some(o) = self.outgoing.pop_front() {
            if o.attempts > 0 {
                failed(o.id);
            } else {
                // Cannot fail: `kept` has the capacity `outgoing` had.
                let _ = kept.push_back(o);
            }
        }
        self.outgoing = kept;
        self.next_seq = 1;
        for o in &mut self.outgoing {
            o.seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
        }
        self.received = 0;
        self.ack_due = None;
        self.timer = None;
        self.backoff = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: PathId = PathId(0);
    const P1: PathId = PathId(1);
    const RTO: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn mail(byte: u8) -> Content {
        Content::Mailbox {
            mailbox: 7,
            payload: Vec::from_slice(&[byte]).unwrap(),
        }
    }

    fn seq_of(m: Option<Message<'_>>) -> Option<u32> {
        match m? {
            Message::Data(d) => Some(d.seq),
            Message::Event(e) => Some(e.seq),
            _ => None,
        }
    }

    #[test]
    fn sends_in_order_and_reports_delivery_on_cumulative_ack() {
        let mut c = Channel::<4>::new(4);
        assert!(c.push(MessageId(10), mail(1)));
        assert!(c.push(MessageId(11), mail(2)));
        assert_eq!(seq_of(c.poll_send(ms(0), P0, RTO)), Some(1));
        assert_eq!(seq_of(c.poll_send(ms(0), P0, RTO)), Some(2));
        assert_eq!(seq_of(c.poll_send(ms(0), P0, RTO)), None);
        let mut done = std::vec::Vec::new();
        c.on_ack(ms(1), 1, |id| done.push(id));
        assert_eq!(done, [MessageId(10)]);
        c.on_ack(ms(1), 2, |id| done.push(id));
        assert_eq!(done, [MessageId(10), MessageId(11)]);
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn retransmits_after_timeout_with_backoff() {
        let mut c = Channel::<4>::new(4);
        c.push(MessageId(1), mail(1));
        assert_eq!(seq_of(c.poll_send(ms(0), P0, RTO)), Some(1));
        assert_eq!(c.send_deadline(), Some(ms(50)));
        assert_eq!(seq_of(c.poll_send(ms(49), P0, RTO)), None);
        assert_eq!(seq_of(c.poll_send(ms(50), P0, RTO)), Some(1));
        assert_eq!(c.send_deadline(), Some(ms(150)), "second timeout doubled");
        c.on_ack(ms(60), 1, |_| {});
        assert_eq!(c.send_deadline(), None, "nothing in flight");
    }

    #[test]
    fn a_timeout_resends_everything_in_flight_in_order() {
        let mut c = Channel::<4>::new(4);
        for i in 1..=3 {
            c.push(MessageId(i), mail(0));
            let _ = c.poll_send(ms(0), P0, RTO);
        }
        let resent: std::vec::Vec<_> = (0..4)
            .map(|_| seq_of(c.poll_send(ms(50), P0, RTO)))
            .collect();
        assert_eq!(resent, [Some(1), Some(2), Some(3), None]);
        c.on_ack(ms(60), 1, |_| {});
        assert_eq!(
            c.send_deadline(),
            Some(ms(110)),
            "progress resets the backoff"
        );
    }

    #[test]
    fn a_failed_path_hands_its_in_flight_messages_to_the_next() {
        let mut c = Channel::<4>::new(4);
        c.push(MessageId(1), mail(1));
        c.push(MessageId(2), mail(2));
        let _ = c.poll_send(ms(0), P0, RTO);
        let _ = c.poll_send(ms(0), P1, RTO);
        c.path_down(P0);
        assert_eq!(c.send_deadline(), Some(Instant::ZERO));
        assert_eq!(seq_of(c.poll_send(ms(1), P1, RTO)), Some(1));
        assert_eq!(
            seq_of(c.poll_send(ms(1), P1, RTO)),
            None,
            "2 is still in flight on P1"
        );
    }

    #[test]
    fn window_limits_messages_in_flight() {
        let mut c = Channel::<8>::new(2);
        for i in 0..5 {
            c.push(MessageId(i), mail(0));
        }
        assert!(c.poll_send(ms(0), P0, RTO).is_some());
        assert!(c.poll_send(ms(0), P0, RTO).is_some());
        assert!(c.poll_send(ms(0), P0, RTO).is_none());
        c.on_ack(ms(1), 1, |_| {});
        assert_eq!(seq_of(c.poll_send(ms(0), P0, RTO)), Some(3));
    }

    #[test]
    fn sequence_comparison_survives_wrapping() {
        assert!(seq_after(2, 1));
        assert!(!seq_after(1, 1));
        assert!(!seq_after(1, 2));
        assert!(seq_after(0, u32::MAX));
        assert!(seq_after(3, u32::MAX - 3));
    }

    #[test]
    fn queue_is_bounded() {
        let mut c = Channel::<2>::new(2);
        assert!(c.push(MessageId(1), mail(1)));
        assert!(c.push(MessageId(2), mail(2)));
        assert!(!c.push(MessageId(3), mail(3)));
    }

    #[test]
    fn receiver_delivers_only_the_next_sequence_and_acks_cumulatively() {
        let mut c = Channel::<2>::new(2);
        assert_eq!(c.arrival(2, 1, P0), Arrival::Drop, "gap");
        assert_eq!(c.take_ack(), Some((P0, 0)));
        assert_eq!(c.arrival(1, 1, P1), Arrival::Next);
        c.delivered();
        assert_eq!(c.arrival(1, 1, P1), Arrival::Drop, "duplicate");
        assert_eq!(c.take_ack(), Some((P1, 1)));
        assert_eq!(c.take_ack(), None);
    }

    #[test]
    fn receiver_skips_what_the_sender_gave_up() {
        let mut c = Channel::<2>::new(2);
        assert_eq!(c.arrival(1, 1, P0), Arrival::Next);
        c.delivered();
        // 2 to 4 failed at the sender; 5 arrives with base 5.
        assert_eq!(c.arrival(5, 5, P0), Arrival::Next);
        c.delivered();
        assert_eq!(c.take_ack(), Some((P0, 5)));
        // A late copy of 3 is a duplicate now.
        assert_eq!(c.arrival(3, 2, P0), Arrival::Drop);
    }

    #[test]
    fn sender_advertises_its_oldest_unsettled_message() {
        let mut c = Channel::<4>::new(4);
        c.push(MessageId(1), mail(1));
        c.push(MessageId(2), mail(2));
        c.fail_all(|_| {});
        c.push(MessageId(3), mail(3));
        match c.poll_send(ms(0), P0, RTO) {
            Some(Message::Data(d)) => assert_eq!((d.seq, d.base), (3, 3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peer_restart_fails_what_was_sent_and_renumbers_the_rest() {
        let mut c = Channel::<4>::new(1);
        c.push(MessageId(1), mail(1));
        c.push(MessageId(2), mail(2));
        c.push(MessageId(3), mail(3));
        let _ = c.poll_send(ms(0), P0, RTO);
        let mut failed = std::vec::Vec::new();
        c.peer_restarted(|id| failed.push(id));
        assert_eq!(failed, [MessageId(1)]);
        assert_eq!(seq_of(c.poll_send(ms(1), P0, RTO)), Some(1));
        c.on_ack(ms(2), 1, |id| assert_eq!(id, MessageId(2)));
        assert_eq!(seq_of(c.poll_send(ms(1), P0, RTO)), Some(2));
    }
}
