//! Re-arm rounds (`--rearm-interval`): the round a fault belongs to, and which
//! processes a new round re-arms. A round starts when the agent starts it (before it
//! clears any soft-dirty bit), so a fault is in the last round started at or before its
//! time; faults before the first round (first writes) are round 0.

use std::collections::{HashMap, VecDeque};

use crate::proc::soft_dirty::RearmError;

/// Round starts kept to place late faults: a fault is delivered well within a round,
/// so the last few are enough (and memory stays flat on a long run).
const STARTS_KEPT: usize = 16;

/// What a round did, for `agent_stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundCounters {
    pub rounds: u64,
    pub processes_rearmed: u64,
    pub rearm_failed: u64,
    pub process_gone: u64,
    pub rearm_skipped_over_budget: u64,
}

pub struct RearmRounds {
    /// `--rearm-budget`: re-armed faults per second per process.
    budget: Option<u64>,
    /// Monotonic start (ns) of rounds `first_kept..`.
    starts: VecDeque<u64>,
    first_kept: u64,
    /// A round started and its processes are not re-armed yet (it waits for the
    /// previous round's aggregates, whose counts the budget needs).
    waiting: bool,
    /// Faults reported per (process, round), for the budget; pruned each round.
    faults: HashMap<(u32, u64), u64>,
    pub counters: RoundCounters,
}

impl RearmRounds {
    pub fn new(budget: Option<u64>) -> Self {
        Self {
            budget,
            starts: VecDeque::new(),
            first_kept: 1,
            waiting: false,
            faults: HashMap::new(),
            counters: RoundCounters::default(),
        }
    }

    /// The round in progress (0 before the first).
    pub fn current(&self) -> u64 {
        self.first_kept + self.starts.len() as u64 - 1
    }

    /// Starts the next round at monotonic time `now_ns`; `rearm` then re-arms it. A
    /// round not re-armed yet goes on instead (a slow drain: ticks merge, as flushes do).
    pub fn start(&mut self, now_ns: u64) {
        if self.waiting {
            return;
        }
        self.starts.push_back(now_ns);
        if self.starts.len() > STARTS_KEPT {
            self.starts.pop_front();
            self.first_kept += 1;
        }
        self.waiting = true;
        self.counters.rounds += 1;
        log::debug!("round {} starts at {now_ns}", self.current());
    }

    /// The round of a fault at monotonic time `ts_ns`.
    pub fn round_of(&self, ts_ns: u64) -> u64 {
        let started = self.starts.partition_point(|&start| start <= ts_ns) as u64;
        if started == 0 {
            // Before every start kept: round 0, or a round too old to tell apart.
            self.first_kept - 1
        } else {
            self.first_kept + started - 1
        }
    }

    /// `count` faults of process `pid` reported for `round`.
    pub fn note_faults(&mut self, pid: u32, round: u64, count: u64) {
        *self.faults.entry((pid, round)).or_default() += count;
    }

    /// Re-arms `pids` for the round waiting (nothing when none waits), skipping each
    /// process whose previous round went over the budget.
    pub fn rearm(
        &mut self,
        pids: impl IntoIterator<Item = u32>,
        mut clear: impl FnMut(u32) -> Result<(), RearmError>,
    ) {
        if !std::mem::take(&mut self.waiting) {
            return;
        }
        let current = self.current();
        let previous = self.previous_round_seconds();
        for pid in pids {
            let faults = self.faults.get(&(pid, current - 1)).copied().unwrap_or(0);
            if let (Some(budget), Some(seconds)) = (self.budget, previous)
                && faults as f64 / seconds > budget as f64
            {
                self.counters.rearm_skipped_over_budget += 1;
                continue;
            }
            match clear(pid) {
                Ok(()) => self.counters.processes_rearmed += 1,
                // Its exit record is on its way: nothing was lost.
                Err(RearmError::Exited) => self.counters.process_gone += 1,
                Err(err) => {
                    log::debug!("re-arming pid {pid} failed: {err}");
                    self.counters.rearm_failed += 1;
                }
            }
        }
        self.faults.retain(|&(_, round), _| round + 1 >= current);
        log::debug!("round {current} re-armed: {:?}", self.counters);
    }

    /// How long the previous round lasted (`None` before the second round).
    fn previous_round_seconds(&self) -> Option<f64> {
        let n = self.starts.len();
        (n >= 2).then(|| (self.starts[n - 1] - self.starts[n - 2]) as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_in_the_last_round_started_at_or_before_it() {
        let mut rounds = RearmRounds::new(None);
        assert_eq!(rounds.round_of(5), 0);
        rounds.start(100);
        rounds.rearm([], |_| Ok(()));
        rounds.start(200);
        assert_eq!(
            [99, 100, 150, 200, 1000].map(|ts| rounds.round_of(ts)),
            [0, 1, 1, 2, 2]
        );
        assert_eq!(rounds.current(), 2);
    }

    #[test]
    fn old_starts_are_dropped_but_rounds_keep_counting() {
        let mut rounds = RearmRounds::new(None);
        for round in 1..=40u64 {
            rounds.start(round * 10);
            rounds.rearm([], |_| Ok(()));
        }
        assert_eq!(rounds.starts.len(), STARTS_KEPT);
        assert_eq!(rounds.current(), 40);
        assert_eq!(rounds.round_of(400), 40);
        assert_eq!(rounds.round_of(395), 39);
        assert_eq!(rounds.round_of(250), 25);
        assert_eq!(rounds.counters.rounds, 40);
    }

    #[test]
    fn a_process_over_budget_skips_the_next_round_only() {
        let mut rounds = RearmRounds::new(Some(100));
        let mut cleared = Vec::new();
        rounds.start(0);
        rounds.rearm([1, 2], |pid| {
            cleared.push(pid);
            Ok(())
        });
        // Round 1 lasts 2 s: pid 1 took 300 faults (150/s), pid 2 took 200 (100/s).
        rounds.note_faults(1, 1, 300);
        rounds.note_faults(2, 1, 200);
        rounds.start(2_000_000_000);
        rounds.rearm([1, 2], |pid| {
            cleared.push(pid);
            Ok(())
        });
        // Round 2: pid 1 was not re-armed, so it took nothing and is re-armed in 3.
        rounds.start(4_000_000_000);
        rounds.rearm([1, 2], |pid| {
            cleared.push(pid);
            Ok(())
        });
        assert_eq!(cleared, [1, 2, 2, 1, 2]);
        assert_eq!(rounds.counters.rearm_skipped_over_budget, 1);
        assert_eq!(rounds.counters.processes_rearmed, 5);
    }

    #[test]
    fn a_round_waiting_for_its_rearm_is_not_started_again() {
        let mut rounds = RearmRounds::new(None);
        rounds.start(100);
        rounds.start(200);
        assert_eq!(rounds.current(), 1);
        assert_eq!(rounds.round_of(250), 1);
        rounds.rearm([1], |_| Ok(()));
        rounds.start(300);
        assert_eq!(rounds.current(), 2);
        assert_eq!(rounds.counters.rounds, 2);
    }

    #[test]
    fn failures_are_counted_and_a_round_rearms_once() {
        let mut rounds = RearmRounds::new(None);
        rounds.start(0);
        rounds.rearm([7, 8], |pid| {
            if pid == 7 {
                Err(RearmError::Exited)
            } else {
                Ok(())
            }
        });
        rounds.rearm([7, 8], |_| panic!("the round was re-armed already"));
        assert_eq!(rounds.counters.process_gone, 1);
        assert_eq!(rounds.counters.rearm_failed, 0);
        assert_eq!(rounds.counters.processes_rearmed, 1);
        rounds.start(100);
        rounds.rearm([8], |_| {
            Err(RearmError::Refused(std::io::Error::from_raw_os_error(
                libc::EACCES,
            )))
        });
        assert_eq!(rounds.counters.rearm_failed, 1);
    }
}
