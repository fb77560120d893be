//! A broker's local copy of the room's line: just the waiting tickets, kept
//! sorted, so any waiting session's exact position is a binary search.
//! It is loaded from a snapshot and then follows the change stream.
//! Tickets carry their lane ([`Lane`]): positions count inside a lane.

use std::collections::VecDeque;

use crate::queue::Lane;

#[derive(Debug, Default)]
pub struct LocalLine {
    /// Waiting tickets in ascending order. Joins append at the back and
    /// admissions pop the front, so both are O(1) in the common case.
    tickets: VecDeque<u64>,
}

impl LocalLine {
    pub fn from_sorted(tickets: impl IntoIterator<Item = u64>) -> Self {
        let mut tickets: VecDeque<u64> = tickets.into_iter().collect();
        tickets.make_contiguous().sort_unstable();
        LocalLine { tickets }
    }

    pub fn insert(&mut self, ticket: u64) {
        match self.tickets.back() {
            Some(&last) if last >= ticket => {
                if let Err(at) = self.tickets.binary_search(&ticket) {
                    self.tickets.insert(at, ticket);
                }
            }
            _ => self.tickets.push_back(ticket),
        }
    }

    pub fn remove(&mut self, ticket: u64) {
        if self.tickets.front() == Some(&ticket) {
            self.tickets.pop_front();
        } else if let Ok(at) = self.tickets.binary_search(&ticket) {
            self.tickets.remove(at);
        }
    }

    /// Waiting tickets below `ticket`, whatever their lane.
    fn below(&self, ticket: u64) -> u64 {
        self.tickets.partition_point(|&t| t < ticket) as u64
    }

    /// 1 + the number of waiting tickets of its lane before `ticket`.
    pub fn position(&self, ticket: u64) -> u64 {
        let lane_start = match Lane::of_ticket(ticket) {
            Lane::General => 0,
            Lane::Priority => self.below(Lane::Priority.tickets().start),
        };
        self.below(ticket) - lane_start + 1
    }

    pub fn len(&self) -> u64 {
        self.tickets.len() as u64
    }

    /// How many wait in each lane.
    pub fn lengths(&self) -> LaneLengths {
        let general = self.below(Lane::Priority.tickets().start);
        LaneLengths {
            general,
            priority: self.len() - general,
        }
    }
}

/// How many wait in each lane, taken once per broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneLengths {
    pub general: u64,
    pub priority: u64,
}

impl LaneLengths {
    pub fn of(self, lane: Lane) -> u64 {
        match lane {
            Lane::General => self.general,
            Lane::Priority => self.priority,
        }
    }

    /// About how many admissions come before that of the `position`-th of
    /// `lane`, when the priority lane gets `priority_share` percent of them
    /// while both lanes wait.
    pub fn admissions_before(self, lane: Lane, position: u64, priority_share: u8) -> u64 {
        let (own, other) = match lane {
            Lane::Priority => (u64::from(priority_share), Lane::General),
            Lane::General => (100 - u64::from(priority_share), Lane::Priority),
        };
        match own {
            // The other lane goes first.
            0 => self.of(other) + position,
            // The other lane waits until this one is through.
            100 => position,
            // Both move; this lane at its share, until the other runs dry.
            _ => (position * 100)
                .div_ceil(own)
                .min(position + self.of(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_joins_and_removals() {
        let mut line = LocalLine::from_sorted([5, 1, 3]);
        assert_eq!(
            (line.position(1), line.position(3), line.position(5)),
            (1, 2, 3)
        );
        line.insert(9);
        line.insert(4);
        line.insert(4);
        assert_eq!(line.len(), 5);
        assert_eq!(line.position(9), 5);
        line.remove(1);
        line.remove(4);
        line.remove(42);
        assert_eq!(
            (line.position(3), line.position(5), line.position(9)),
            (1, 2, 3)
        );
        assert_eq!(line.len(), 3);
    }

    #[test]
    fn positions_count_inside_each_lane() {
        use crate::queue::PRIORITY_BASE;
        let p = |n: u64| PRIORITY_BASE + n;
        let line = LocalLine::from_sorted([1, p(2), 3, p(4), 5]);
        assert_eq!(
            (line.position(1), line.position(3), line.position(5)),
            (1, 2, 3)
        );
        assert_eq!((line.position(p(2)), line.position(p(4))), (1, 2));
        let lengths = line.lengths();
        assert_eq!(
            (lengths.of(Lane::General), lengths.of(Lane::Priority)),
            (3, 2)
        );
        let before = |ticket: u64, share: u8| {
            lengths.admissions_before(Lane::of_ticket(ticket), line.position(ticket), share)
        };
        // Strictly first, the priority lane delays the general one.
        assert_eq!(before(3, 100), 2 + 2);
        assert_eq!(before(p(4), 100), 2);
        // At a quarter, the second priority visitor waits about 8
        // admissions, but never more than the whole line ahead.
        assert_eq!(before(p(4), 25), 2 + 3);
        assert_eq!(before(5, 25), 4);
        assert_eq!(before(5, 0), 3);
        assert_eq!(before(p(2), 0), 3 + 1);
    }

    #[test]
    fn matches_a_naive_count_under_random_changes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut line = LocalLine::default();
        let mut naive: Vec<u64> = Vec::new();
        let mut next = 0;
        for _ in 0..5000 {
            if rng.gen_bool(0.6) || naive.is_empty() {
                next += rng.gen_range(1..3);
                line.insert(next);
                naive.push(next);
            } else {
                let t = naive.remove(rng.gen_range(0..naive.len()));
                line.remove(t);
            }
            let probe = rng.gen_range(0..next + 2);
            assert_eq!(
                line.position(probe),
                naive.iter().filter(|&&t| t < probe).count() as u64 + 1
            );
        }
    }
}
