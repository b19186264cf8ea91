//! Delivery accounting: what each connection must have seen of its room's
//! sequence, and what it did see.
//!
//! - [`Track`] follows one connection through its room's `seq`s across
//!   reconnects: the join (`lastSeq`, `history`, `recovered`), then live
//!   frames. A gap is recorded as a hole (filled later = reordered, else
//!   lost), a seq seen twice is a duplicate, a resume answered with
//!   `"recovered": false` loses the range it cannot replay, and at the end
//!   anything short of the room's highest observed seq is tail loss.
//! - [`Rooms`] keeps the highest seq anyone observed per room, per epoch:
//!   when a room's sequence restarts (server state lost), the first
//!   connection to see it starts a new epoch, so the tail check compares
//!   seqs of the same sequence only.
//! - [`Outbox`] keeps a sender's messages that nobody has seen yet.
//!
//! Counting rules: a connection is responsible for every seq after the
//! room's `lastSeq` at its first join (the history sent on a first join is
//! context, not a delivery) up to the room's final highest seq (or, for a
//! connection no longer open at the end, up to the last seq it saw).
//! `expected - delivered == lost_gap + lost_tail + lost_unrecovered`,
//! except where a `recovered: false` could not say how much was missing
//! (counted as 1 lost and flagged in `unrecovered_unknown`).

use serde::Serialize;

/// At most this many open holes per connection; older ones are written off as lost.
const MAX_HOLES: usize = 64;

/// At most this many unseen messages are remembered per sender; more are counted only.
const MAX_PENDING: usize = 65_536;

/// Totals over every connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Seqs the connections were responsible for (see the module doc).
    pub expected: u64,
    /// Of those, how many were received (each seq once per connection).
    pub delivered: u64,
    /// Seqs skipped inside a connection's sequence and never filled.
    pub lost_gap: u64,
    /// Seqs after a connection's last one, up to the room's highest, at the end.
    pub lost_tail: u64,
    /// Seqs a resume could not replay (`recovered: false`).
    pub lost_unrecovered: u64,
    /// Resumes answered with `recovered: false`.
    pub unrecovered_resumes: u64,
    /// Of those, how many did not show what was missing (counted as 1 lost).
    pub unrecovered_unknown: u64,
    /// Seqs received again by the same connection.
    pub duplicated: u64,
    /// Seqs that arrived after a later one (filled a hole).
    pub reordered: u64,
    /// Joins whose `lastSeq` was below the seq the connection resumed from.
    pub seq_regressions: u64,
    /// Joins whose history was not ascending and contiguous, overran
    /// `lastSeq`, lacked seqs, or (on a resume) lacked `recovered`.
    pub history_anomalies: u64,
    /// Chat frames received before the join (`system`) frame.
    pub chat_before_join: u64,
}

impl Tally {
    /// Lost deliveries: gaps, tails and unrecoverable resumes.
    pub fn lost(&self) -> u64 {
        self.lost_gap + self.lost_tail + self.lost_unrecovered
    }
}

/// What a join (`system` frame on open) said.
#[derive(Debug, Clone, Copy)]
pub struct Join<'a> {
    /// The room's latest seq at the moment of joining.
    pub last_seq: u64,
    /// The seqs of the history, in the order received.
    pub history: &'a [u64],
    /// `recovered`, present on a resume.
    pub recovered: Option<bool>,
}

/// One connection's view of its room's sequence, across reconnects.
#[derive(Debug, Default, Clone)]
pub struct Track {
    /// The highest seq accounted for (seen, or written off); `None` before
    /// the first join. A resume asks for `since = last`.
    last: Option<u64>,
    /// The seq after which this connection is responsible.
    base: u64,
    /// Responsibility from before a seq regression restarted `base`.
    carried: u64,
    /// Seqs in (base, last] received (once each).
    delivered: u64,
    /// Inclusive ranges skipped and not (yet) received.
    holes: Vec<(u64, u64)>,
    /// Sizes of holes written off when there were too many.
    written_off: u64,
    /// The room epoch this track follows (see [`Rooms::restart`]).
    pub epoch: u32,
}

impl Track {
    /// The seq to resume after (`since`), once joined.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Accounts for a join: a first join sets the baseline; a resume (the
    /// track has a `last`) must replay everything after it. Returns true
    /// when the room's sequence went backwards (the caller moves the track
    /// to the room's new epoch).
    pub fn join(&mut self, j: Join<'_>, t: &mut Tally) -> bool {
        let Some(since) = self.last else {
            // First join: history is context. Check its shape only.
            if !history_is_well_formed(j.history, j.last_seq) {
                t.history_anomalies += 1;
            }
            self.last = Some(j.last_seq);
            self.base = j.last_seq;
            return false;
        };
        if j.last_seq < since {
            // The room's sequence went backwards (state lost on the server):
            // close the old responsibility and start again from here.
            t.seq_regressions += 1;
            self.carried += since - self.base;
            self.base = j.last_seq;
            self.last = Some(j.last_seq);
            return true;
        }
        match j.recovered {
            Some(false) => {
                t.unrecovered_resumes += 1;
                let first_after = j.history.iter().copied().filter(|&q| q > since).min();
                let missing = match first_after {
                    Some(q) => q - since - 1,
                    None => j.last_seq - since,
                };
                if missing == 0 {
                    t.unrecovered_unknown += 1;
                    t.lost_unrecovered += 1;
                } else {
                    t.lost_unrecovered += missing;
                    // Written off, not a hole: they cannot arrive any more.
                    self.last = Some(since + missing);
                }
            }
            Some(true) => {}
            None => t.history_anomalies += 1,
        }
        for &q in j.history {
            if q > j.last_seq {
                t.history_anomalies += 1;
            }
            self.observe(q, t);
        }
        // The history must reach lastSeq; what it left out is a gap.
        let last = self.last.unwrap_or(since);
        if last < j.last_seq {
            self.add_hole(last + 1, j.last_seq);
            self.last = Some(j.last_seq);
        }
        false
    }

    /// Accounts for one received seq (live, or replayed on a resume).
    pub fn observe(&mut self, seq: u64, t: &mut Tally) {
        let Some(last) = self.last else {
            t.chat_before_join += 1;
            self.base = seq.saturating_sub(1);
            self.last = Some(seq);
            self.delivered += 1;
            return;
        };
        if seq == last + 1 {
            self.last = Some(seq);
            self.delivered += 1;
        } else if seq > last + 1 {
            self.add_hole(last + 1, seq - 1);
            self.last = Some(seq);
            self.delivered += 1;
        } else if self.fill(seq) {
            t.reordered += 1;
            self.delivered += 1;
        } else {
            t.duplicated += 1;
        }
    }

    /// Adds this connection's totals. `room_max` is the room's highest
    /// observed seq when the connection is open at the end (tail check),
    /// `None` when it is not (it is judged up to what it saw).
    pub fn finish(&self, room_max: Option<u64>, t: &mut Tally) {
        let Some(last) = self.last else { return };
        let end = room_max.map_or(last, |m| m.max(last));
        t.lost_tail += end - last;
        t.lost_gap += self.written_off + self.holes.iter().map(|(a, b)| b - a + 1).sum::<u64>();
        t.expected += self.carried + (end - self.base);
        t.delivered += self.delivered;
    }

    fn add_hole(&mut self, from: u64, to: u64) {
        if self.holes.len() >= MAX_HOLES {
            let (a, b) = self.holes.remove(0);
            self.written_off += b - a + 1;
        }
        self.holes.push((from, to));
    }

    /// Removes `seq` from a hole; false when it is in none.
    fn fill(&mut self, seq: u64) -> bool {
        let Some(i) = self.holes.iter().position(|&(a, b)| (a..=b).contains(&seq)) else {
            return false;
        };
        let (a, b) = self.holes[i];
        match (seq == a, seq == b) {
            (true, true) => {
                self.holes.remove(i);
            }
            (true, false) => self.holes[i].0 = a + 1,
            (false, true) => self.holes[i].1 = b - 1,
            (false, false) => {
                self.holes[i].1 = seq - 1;
                self.holes.insert(i + 1, (seq + 1, b));
            }
        }
        true
    }
}

/// History on a first join: ascending by exactly 1, ending at `last_seq`.
fn history_is_well_formed(history: &[u64], last_seq: u64) -> bool {
    history.windows(2).all(|w| w[1] == w[0] + 1) && history.last().is_none_or(|&l| l == last_seq)
}

/// The highest seq anyone observed, per room, in the room's current epoch.
#[derive(Debug, Clone)]
pub struct Rooms {
    max: Vec<Option<u64>>,
    epoch: Vec<u32>,
}

impl Rooms {
    /// `n` rooms, nothing observed, epoch 0.
    pub fn new(n: usize) -> Rooms {
        Rooms { max: vec![None; n], epoch: vec![0; n] }
    }

    /// Notes that `seq` exists in `room` (a chat seq or a join's `lastSeq`),
    /// as seen by a track in `epoch`; seqs of an older epoch are ignored.
    pub fn observe(&mut self, room: usize, seq: u64, epoch: u32) {
        if epoch != self.epoch[room] {
            return;
        }
        let m = &mut self.max[room];
        if m.is_none_or(|x| seq > x) {
            *m = Some(seq);
        }
    }

    /// A track in `epoch` found `room`'s sequence restarted at `last_seq`.
    /// The first to find it starts a new epoch; later ones join it. Returns
    /// the epoch the track now follows.
    pub fn restart(&mut self, room: usize, epoch: u32, last_seq: u64) -> u32 {
        if epoch == self.epoch[room] {
            self.epoch[room] += 1;
            self.max[room] = Some(last_seq);
        }
        self.epoch[room]
    }

    /// The highest seq observed in `room` by tracks in `epoch`; `None` when
    /// the room has moved to a later epoch (nothing to compare with).
    pub fn max(&self, room: usize, epoch: u32) -> Option<u64> {
        if epoch == self.epoch[room] {
            self.max[room]
        } else {
            None
        }
    }
}

/// A sender's messages that nobody in this process has seen yet.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    /// Messages sent so far (the next message's number).
    sent: u32,
    /// Numbers sent and not seen.
    pending: Vec<u32>,
    /// Unseen messages beyond [`MAX_PENDING`], counted but not remembered.
    overflow: u32,
}

impl Outbox {
    /// Takes the next message number and remembers it as unseen.
    pub fn next(&mut self) -> u32 {
        let n = self.sent;
        self.sent += 1;
        if self.pending.len() < MAX_PENDING {
            self.pending.push(n);
        } else {
            self.overflow += 1;
        }
        n
    }

    /// Marks message `n` as seen; false if it was not pending (seen before).
    pub fn seen(&mut self, n: u32) -> bool {
        match self.pending.iter().position(|&p| p == n) {
            Some(i) => {
                self.pending.remove(i);
                true
            }
            None => false,
        }
    }

    /// Messages sent and never seen.
    pub fn unseen(&self) -> u32 {
        self.pending.len() as u32 + self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(t: &mut Track, tally: &mut Tally, last_seq: u64, history: &[u64], recovered: Option<bool>) -> bool {
        t.join(Join { last_seq, history, recovered }, tally)
    }

    fn live(t: &mut Track, tally: &mut Tally, seqs: impl IntoIterator<Item = u64>) {
        for s in seqs {
            t.observe(s, tally);
        }
    }

    fn finish(t: &Track, room_max: Option<u64>) -> Tally {
        let mut tally = Tally::default();
        t.finish(room_max, &mut tally);
        tally
    }

    #[test]
    fn clean_run_delivers_everything_expected() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[8, 9, 10], None);
        live(&mut t, &mut tally, 11..=20);
        assert_eq!(tally, Tally::default());
        assert_eq!(t.last(), Some(20));
        let end = finish(&t, Some(20));
        assert_eq!((end.expected, end.delivered, end.lost()), (10, 10, 0));
    }

    #[test]
    fn empty_room_starts_at_zero() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 0, &[], None);
        live(&mut t, &mut tally, 1..=3);
        let end = finish(&t, Some(3));
        assert_eq!((end.expected, end.delivered, end.lost()), (3, 3, 0));
        assert_eq!(tally, Tally::default());
    }

    #[test]
    fn a_gap_is_lost() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 0, &[], None);
        live(&mut t, &mut tally, [1, 2, 5, 6, 10]);
        let end = finish(&t, Some(10));
        assert_eq!((end.lost_gap, end.lost_tail), (2 + 3, 0));
        assert_eq!((end.expected, end.delivered), (10, 5));
        assert_eq!(end.expected - end.delivered, end.lost());
    }

    #[test]
    fn a_duplicate_is_counted_and_not_delivered_twice() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 4, &[3, 4], None);
        live(&mut t, &mut tally, [5, 6, 6, 7, 5, 4]);
        assert_eq!(tally.duplicated, 3);
        let end = finish(&t, Some(7));
        assert_eq!((end.expected, end.delivered, end.lost()), (3, 3, 0));
    }

    #[test]
    fn a_late_message_fills_its_hole_and_counts_as_reordered() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 0, &[], None);
        live(&mut t, &mut tally, [1, 5, 3, 2, 3, 7]);
        assert_eq!((tally.reordered, tally.duplicated), (2, 1));
        let end = finish(&t, Some(7));
        // Still missing: 4 and 6.
        assert_eq!((end.lost_gap, end.delivered, end.expected), (2, 5, 7));
    }

    #[test]
    fn tail_loss_against_the_room_maximum() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 100, &[], None);
        live(&mut t, &mut tally, 101..=105);
        let end = finish(&t, Some(109));
        assert_eq!((end.lost_tail, end.lost(), end.expected, end.delivered), (4, 4, 9, 5));
        // Not open at the end: judged up to what it saw.
        let end = finish(&t, None);
        assert_eq!((end.lost_tail, end.expected, end.delivered), (0, 5, 5));
        // A room maximum below what we saw changes nothing.
        assert_eq!(finish(&t, Some(50)).lost_tail, 0);
    }

    #[test]
    fn never_joined_counts_nothing() {
        let t = Track::default();
        assert_eq!(finish(&t, Some(10)), Tally::default());
    }

    #[test]
    fn resume_with_since_replays_the_missed_range() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[9, 10], None);
        live(&mut t, &mut tally, 11..=13);
        // Disconnected; the room went on to 17; we resume with since=13.
        assert_eq!(t.last(), Some(13));
        join(&mut t, &mut tally, 17, &[14, 15, 16, 17], Some(true));
        live(&mut t, &mut tally, 18..=20);
        assert_eq!(tally, Tally::default());
        let end = finish(&t, Some(20));
        assert_eq!((end.expected, end.delivered, end.lost()), (10, 10, 0));
    }

    #[test]
    fn resume_with_nothing_missed() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 5, &[], None);
        join(&mut t, &mut tally, 5, &[], Some(true));
        assert_eq!(tally, Tally::default());
        assert_eq!(finish(&t, Some(5)).expected, 0);
    }

    #[test]
    fn resume_history_with_a_hole_or_short_of_last_seq_is_loss() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[], None);
        // since=10: 11, 13 replayed, 12 missing; lastSeq=15 but 14, 15 missing too.
        join(&mut t, &mut tally, 15, &[11, 13], Some(true));
        assert_eq!(t.last(), Some(15));
        live(&mut t, &mut tally, [16]);
        let end = finish(&t, Some(16));
        assert_eq!((end.lost_gap, end.expected, end.delivered), (3, 6, 3));
    }

    #[test]
    fn resume_replaying_old_messages_counts_duplicates() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[], None);
        live(&mut t, &mut tally, [11, 12]);
        join(&mut t, &mut tally, 13, &[11, 12, 13], Some(true));
        assert_eq!(tally.duplicated, 2);
        assert_eq!(finish(&t, Some(13)).lost(), 0);
    }

    #[test]
    fn unrecovered_resume_counts_the_missing_range_when_it_can() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[], None);
        // since=10, only 16.. still stored: 11..=15 are gone.
        join(&mut t, &mut tally, 18, &[16, 17, 18], Some(false));
        assert_eq!((tally.unrecovered_resumes, tally.lost_unrecovered, tally.unrecovered_unknown), (1, 5, 0));
        live(&mut t, &mut tally, [19]);
        let end = finish(&t, Some(19));
        assert_eq!((end.lost_gap, end.lost_tail, end.expected, end.delivered), (0, 0, 9, 4));
        assert_eq!(end.expected - end.delivered, end.lost() + tally.lost_unrecovered);
    }

    #[test]
    fn unrecovered_resume_without_history_loses_everything_after_since() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[], None);
        join(&mut t, &mut tally, 14, &[], Some(false));
        assert_eq!((tally.lost_unrecovered, t.last()), (4, Some(14)));
        assert_eq!(finish(&t, Some(14)).lost_gap, 0);
    }

    #[test]
    fn unrecovered_resume_that_does_not_show_a_gap_counts_one_and_flags_it() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[], None);
        join(&mut t, &mut tally, 12, &[11, 12], Some(false));
        assert_eq!((tally.lost_unrecovered, tally.unrecovered_unknown, tally.unrecovered_resumes), (1, 1, 1));
        // And with nothing after since at all.
        join(&mut t, &mut tally, 12, &[], Some(false));
        assert_eq!((tally.lost_unrecovered, tally.unrecovered_unknown), (2, 2));
    }

    #[test]
    fn several_reconnects_accumulate() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 0, &[], None);
        live(&mut t, &mut tally, 1..=3);
        join(&mut t, &mut tally, 5, &[4, 5], Some(true));
        live(&mut t, &mut tally, [6]);
        join(&mut t, &mut tally, 6, &[], Some(true));
        join(&mut t, &mut tally, 9, &[7, 8, 9], Some(true));
        live(&mut t, &mut tally, 10..=12);
        assert_eq!(tally, Tally::default());
        let end = finish(&t, Some(12));
        assert_eq!((end.expected, end.delivered, end.lost()), (12, 12, 0));
    }

    #[test]
    fn sequence_going_backwards_is_flagged_and_rebased() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 10, &[], None);
        live(&mut t, &mut tally, 11..=12);
        // The server lost its state: the room restarted at 0.
        assert!(join(&mut t, &mut tally, 0, &[], Some(true)));
        assert_eq!(tally.seq_regressions, 1);
        live(&mut t, &mut tally, 1..=2);
        let end = finish(&t, Some(2));
        assert_eq!((end.expected, end.delivered, end.lost()), (4, 4, 0));
    }

    #[test]
    fn first_join_history_shape_is_checked() {
        for (history, last_seq, ok) in [
            (&[][..], 0, true),
            (&[][..], 7, true),
            (&[5, 6, 7][..], 7, true),
            (&[5, 7][..], 7, false),
            (&[5, 6][..], 7, false),
            (&[6, 5][..], 6, false),
            (&[7, 7][..], 7, false),
        ] {
            let (mut t, mut tally) = (Track::default(), Tally::default());
            join(&mut t, &mut tally, last_seq, history, None);
            assert_eq!(tally.history_anomalies == 0, ok, "{history:?} / {last_seq}");
            assert_eq!(t.last(), Some(last_seq));
        }
    }

    #[test]
    fn resume_without_recovered_flag_or_history_past_last_seq_is_an_anomaly() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 3, &[], None);
        join(&mut t, &mut tally, 4, &[4], None);
        assert_eq!(tally.history_anomalies, 1);
        join(&mut t, &mut tally, 4, &[5], Some(true));
        assert_eq!(tally.history_anomalies, 2);
    }

    #[test]
    fn chat_before_join_is_flagged_and_starts_the_track() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        live(&mut t, &mut tally, [5, 6]);
        assert_eq!(tally.chat_before_join, 1);
        let end = finish(&t, Some(6));
        assert_eq!((end.expected, end.delivered), (2, 2));
    }

    #[test]
    fn holes_split_and_shrink() {
        let mut t = Track::default();
        let mut tally = Tally::default();
        join(&mut t, &mut tally, 0, &[], None);
        live(&mut t, &mut tally, [10]);
        assert_eq!(t.holes, [(1, 9)]);
        live(&mut t, &mut tally, [1, 9, 5]);
        assert_eq!(t.holes, [(2, 4), (6, 8)]);
        live(&mut t, &mut tally, [2, 3, 4]);
        assert_eq!(t.holes, [(6, 8)]);
        assert_eq!(tally.reordered, 6);
    }

    #[test]
    fn too_many_holes_are_written_off_but_still_counted() {
        let (mut t, mut tally) = (Track::default(), Tally::default());
        join(&mut t, &mut tally, 0, &[], None);
        // Every other seq: 100 holes of one.
        live(&mut t, &mut tally, (0..=100).map(|i| i * 2));
        assert_eq!(t.holes.len(), MAX_HOLES);
        let end = finish(&t, Some(200));
        assert_eq!(end.lost_gap, 100);
        assert_eq!(end.expected - end.delivered, 100);
    }

    #[test]
    fn rooms_keep_the_maximum() {
        let mut r = Rooms::new(2);
        assert_eq!(r.max(0, 0), None);
        r.observe(0, 0, 0);
        assert_eq!(r.max(0, 0), Some(0));
        r.observe(0, 5, 0);
        r.observe(0, 3, 0);
        r.observe(1, 9, 0);
        assert_eq!((r.max(0, 0), r.max(1, 0)), (Some(5), Some(9)));
    }

    #[test]
    fn a_restarted_room_sequence_starts_a_new_epoch() {
        let mut rooms = Rooms::new(1);
        let (mut a, mut b, mut tally) = (Track::default(), Track::default(), Tally::default());
        // Two connections follow the room up to 300.
        for t in [&mut a, &mut b] {
            join(t, &mut tally, 0, &[], None);
            live(t, &mut tally, 1..=300);
        }
        rooms.observe(0, 300, 0);
        // The server restarts with empty rooms; `a` rejoins first and finds it.
        assert!(join(&mut a, &mut tally, 0, &[], Some(true)));
        a.epoch = rooms.restart(0, a.epoch, 0);
        assert_eq!((a.epoch, rooms.max(0, 1)), (1, Some(0)));
        live(&mut a, &mut tally, 1..=10);
        rooms.observe(0, 10, a.epoch);
        // A late frame of the old sequence does not count in the new epoch.
        rooms.observe(0, 301, 0);
        assert_eq!(rooms.max(0, 1), Some(10));
        // `b` rejoins later (lastSeq 10) and joins the same epoch: no second reset.
        assert!(join(&mut b, &mut tally, 10, &[], Some(true)));
        b.epoch = rooms.restart(0, b.epoch, 10);
        assert_eq!((b.epoch, rooms.max(0, 1)), (1, Some(10)));
        rooms.observe(0, 12, b.epoch);
        live(&mut a, &mut tally, 11..=12);
        live(&mut b, &mut tally, 11..=12);
        assert_eq!(tally.seq_regressions, 2);
        // Judged against 12, not 301: no tail loss.
        let (ea, eb) = (finish(&a, rooms.max(0, a.epoch)), finish(&b, rooms.max(0, b.epoch)));
        assert_eq!((ea.lost(), eb.lost()), (0, 0));
        // A track still in the old epoch is judged on what it saw.
        assert_eq!(rooms.max(0, 0), None);
    }

    #[test]
    fn outbox_tracks_unseen_messages() {
        let mut o = Outbox::default();
        let ns: Vec<u32> = (0..5).map(|_| o.next()).collect();
        assert_eq!(ns, [0, 1, 2, 3, 4]);
        assert!(o.seen(0) && o.seen(3));
        assert!(!o.seen(3), "already seen");
        assert!(!o.seen(99), "never sent");
        assert_eq!((o.sent, o.unseen()), (5, 3));
        for n in [1, 2, 4] {
            o.seen(n);
        }
        assert_eq!(o.unseen(), 0);
    }
}
