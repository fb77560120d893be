//! Lanes: the general line and a priority lane (presale codes, eligible
//! platform users) beside it, in one sorted set. A ticket carries its lane
//! in its high bits: general tickets are the join sequence, priority
//! tickets are [`PRIORITY_BASE`] plus it. So one ordered set holds both
//! lines, and positions stay exact inside each lane: a waiting session's
//! position counts only the earlier tickets of its own lane.
//! `lua/common.lua` uses the same layout.

use serde::Serialize;

/// Where priority tickets start (2^48: exact in Lua's doubles).
pub const PRIORITY_BASE: u64 = 1 << 48;

/// The line a session waits in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    #[default]
    General,
    /// Admitted ahead of the general line, or at a set share of admissions.
    Priority,
}

impl Lane {
    pub fn of_ticket(ticket: u64) -> Lane {
        if ticket >= PRIORITY_BASE {
            Lane::Priority
        } else {
            Lane::General
        }
    }

    /// The tickets of this lane: `lowest..highest`.
    pub fn tickets(self) -> std::ops::Range<u64> {
        match self {
            Lane::General => 0..PRIORITY_BASE,
            Lane::Priority => PRIORITY_BASE..u64::MAX,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::General => "general",
            Lane::Priority => "priority",
        }
    }

    /// How the store scripts name the lane.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Lane::General => "g",
            Lane::Priority => "p",
        }
    }
}

/// The number a visitor sees: the order of joins, whatever the lane.
pub fn join_number(ticket: u64) -> u64 {
    ticket % PRIORITY_BASE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_carry_their_lane() {
        assert_eq!(Lane::of_ticket(7), Lane::General);
        assert_eq!(Lane::of_ticket(PRIORITY_BASE + 7), Lane::Priority);
        assert_eq!(join_number(PRIORITY_BASE + 7), 7);
        assert!(Lane::Priority.tickets().contains(&(PRIORITY_BASE + 1)));
        assert!(!Lane::General.tickets().contains(&PRIORITY_BASE));
    }
}
