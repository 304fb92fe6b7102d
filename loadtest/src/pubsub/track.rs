//! Loss, duplicate and order accounting of one subscriber for one publisher.
//!
//! A publisher numbers its measured messages 0, 1, 2, …; the tracker keeps the
//! next number it expects and the gaps (numbers skipped, not yet seen), so
//! that in-order delivery costs no memory and every arrival is classified at
//! once: new, late (new, but after a higher number: out of order) or
//! duplicate. Losses are known once the publisher's count is: the gaps left
//! plus whatever the tail is missing.

use std::collections::BTreeMap;

/// How one arrival was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next number expected (or beyond it: the numbers in between become a gap).
    New,
    /// A number from a gap: new, but out of order.
    Late,
    /// Seen before.
    Duplicate,
}

/// What one subscriber got from one publisher.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    /// One past the highest number seen.
    next: u32,
    /// Gaps below `next`: start → end (exclusive).
    gaps: BTreeMap<u32, u32>,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// The accounting of a tracker once the publisher's count is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub expected: u64,
    pub unique: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Numbers at or above the publisher's count (cannot happen unless
    /// payloads are mixed up).
    pub beyond: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.expected += o.expected;
        self.unique += o.unique;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.beyond += o.beyond;
    }
}

impl Tracker {
    pub fn on(&mut self, seq: u32) -> Arrival {
        if seq >= self.next {
            if seq > self.next {
                self.gaps.insert(self.next, seq);
            }
            self.next = seq + 1;
            self.unique += 1;
            return Arrival::New;
        }
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            self.duplicates += 1;
            return Arrival::Duplicate;
        };
        if seq >= end {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        self.unique += 1;
        self.out_of_order += 1;
        Arrival::Late
    }

    /// The accounting against `published` measured messages of this publisher.
    pub fn tally(&self, published: u64) -> Tally {
        let next = u64::from(self.next);
        // Numbers in gaps between `lo` and `hi`.
        let missing = |lo: u64, hi: u64| -> u64 {
            self.gaps
                .iter()
                .map(|(&s, &e)| u64::from(e).min(hi).saturating_sub(u64::from(s).max(lo)))
                .sum()
        };
        let beyond = next.saturating_sub(published) - missing(published, next);
        Tally {
            expected: published,
            unique: self.unique - beyond,
            lost: missing(0, published) + published.saturating_sub(next),
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            beyond,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u32]) -> (Tracker, Vec<Arrival>) {
        let mut t = Tracker::default();
        let arrivals = seqs.iter().map(|&s| t.on(s)).collect();
        (t, arrivals)
    }

    #[test]
    fn in_order_is_all_new() {
        let (t, a) = run(&[0, 1, 2, 3]);
        assert!(a.iter().all(|&x| x == Arrival::New));
        assert_eq!(
            t.tally(4),
            Tally {
                expected: 4,
                unique: 4,
                ..Tally::default()
            }
        );
        assert!(t.gaps.is_empty());
    }

    #[test]
    fn losses_in_the_middle_and_the_tail() {
        let (t, _) = run(&[0, 3, 4, 7]);
        let tally = t.tally(10);
        // 1, 2, 5, 6 missing in gaps; 8, 9 never came.
        assert_eq!((tally.unique, tally.lost), (4, 6));
        assert_eq!(tally.out_of_order, 0);
        let (t, _) = run(&[]);
        assert_eq!(t.tally(5).lost, 5);
    }

    #[test]
    fn late_arrivals_fill_gaps_and_count_as_out_of_order() {
        let (t, a) = run(&[0, 4, 2, 1, 3, 5]);
        use Arrival::*;
        assert_eq!(a, vec![New, New, Late, Late, Late, New]);
        let tally = t.tally(6);
        assert_eq!((tally.unique, tally.lost, tally.out_of_order), (6, 0, 3));
        assert!(t.gaps.is_empty());
    }

    #[test]
    fn duplicates_in_order_and_after_gaps() {
        let (t, a) = run(&[0, 1, 1, 5, 3, 3, 5, 0]);
        use Arrival::*;
        assert_eq!(
            a,
            vec![
                New, New, Duplicate, New, Late, Duplicate, Duplicate, Duplicate
            ]
        );
        let tally = t.tally(6);
        // 2 and 4 are still missing.
        assert_eq!(
            (
                tally.unique,
                tally.duplicates,
                tally.lost,
                tally.out_of_order
            ),
            (4, 4, 2, 1)
        );
    }

    #[test]
    fn numbers_beyond_the_count_are_not_counted_as_received() {
        let (t, _) = run(&[0, 1, 2, 7]);
        let tally = t.tally(3);
        assert_eq!((tally.unique, tally.lost, tally.beyond), (3, 0, 1));
        // A gap straddling the count: 1..5 missing, count 3 → 1, 2 lost.
        let (t, _) = run(&[0, 5]);
        let tally = t.tally(3);
        assert_eq!((tally.unique, tally.lost, tally.beyond), (1, 2, 1));
    }

    #[test]
    fn tallies_add_up() {
        let mut a = run(&[0, 2]).0.tally(3);
        a.add(&run(&[0, 0]).0.tally(1));
        assert_eq!(
            a,
            Tally {
                expected: 4,
                unique: 3,
                lost: 1,
                duplicates: 1,
                out_of_order: 0,
                beyond: 0
            }
        );
    }
}
