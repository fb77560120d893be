//! A broker's local copy of the room's line: just the waiting tickets, kept
//! sorted, so any waiting session's exact position is a binary search.
//! It is loaded from a snapshot and then follows the change stream.

use std::collections::VecDeque;

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

    /// 1 + the number of waiting tickets before `ticket`.
    pub fn position(&self, ticket: u64) -> u64 {
        self.tickets.partition_point(|&t| t < ticket) as u64 + 1
    }

    pub fn len(&self) -> u64 {
        self.tickets.len() as u64
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
