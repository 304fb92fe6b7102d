//! Sorted disjoint address ranges with binary-search lookup.

/// Sorted, disjoint, non-adjacent inclusive ranges; starts and ends are kept apart
/// so the binary search touches only the starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Ranges<T> {
    pub(super) starts: Vec<T>,
    pub(super) ends: Vec<T>,
}

pub(super) trait Successor: Copy + Ord {
    fn successor(self) -> Option<Self>;
}

impl Successor for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Successor for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl<T: Successor> Ranges<T> {
    pub(super) fn build(mut ranges: Vec<(T, T)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            if let Some(last) = merged.last_mut() {
                // `last.1 == MAX` means everything from here on is covered already.
                if last.1.successor().is_none_or(|next| start <= next) {
                    last.1 = last.1.max(end);
                    continue;
                }
            }
            merged.push((start, end));
        }
        Self {
            starts: merged.iter().map(|r| r.0).collect(),
            ends: merged.iter().map(|r| r.1).collect(),
        }
    }

    pub(super) fn contains(&self, x: T) -> bool {
        let i = self.starts.partition_point(|&start| start <= x);
        i > 0 && x <= self.ends[i - 1]
    }
}
