//! Aggregates held back a bounded time for names still on their way: a debug file
//! being fetched from debuginfod (up to `--debuginfod-wait`), or a container's lookup in
//! its runtime's API (up to `CONTAINER_WAIT`). They are reported as soon as the names
//! arrive, or at their deadline with what is known (counted for debug files; a lookup
//! that fails is counted as a miss).

use super::*;

/// How long an aggregate waits for its container's lookup (which times out at 2 s).
const CONTAINER_WAIT: Duration = Duration::from_millis(2500);

impl Correlator {
    /// Reports `aggregate`, or holds it while names for it are on their way.
    pub(super) fn report_or_hold(&mut self, aggregate: Aggregate, out: &mut Vec<Timed>) {
        let (debug_file, container) = self.waits_for(&aggregate);
        if !debug_file && !container {
            self.report_aggregate(aggregate, out);
            return;
        }
        let wait = match (debug_file, container) {
            (true, true) => self.debug_file_wait.max(CONTAINER_WAIT),
            (true, false) => self.debug_file_wait,
            _ => CONTAINER_WAIT,
        };
        self.held.push((Instant::now() + wait, aggregate));
    }

    /// Reports the held aggregates whose names have arrived or whose time is up. With
    /// `stopping`, waits for the names on their way up to the latest deadline.
    pub fn release_held(&mut self, stopping: bool, out: &mut Vec<Timed>) {
        let arrived = self.take_arrivals(Duration::ZERO);
        let first_deadline = self.held.iter().map(|(deadline, _)| *deadline).min();
        // Nothing new and no deadline passed: the held ones still wait (checking them
        // costs a stat per frame).
        if first_deadline.is_none_or(|first| !stopping && !arrived && Instant::now() < first) {
            return;
        }
        if stopping {
            let latest = self.held.iter().map(|(deadline, _)| *deadline).max();
            while let Some(left) = latest.and_then(|l| l.checked_duration_since(Instant::now()))
                && self.held.iter().any(|(_, a)| {
                    let (debug_file, container) = self.waits_for(a);
                    debug_file || container
                })
            {
                // Blocks on debuginfod's answers when it is asked; lookups are polled.
                if !self.take_arrivals(left.min(Duration::from_millis(10))) {
                    std::thread::sleep(left.min(Duration::from_millis(5)));
                }
            }
        }
        let now = Instant::now();
        for (deadline, aggregate) in std::mem::take(&mut self.held) {
            let (debug_file, container) = self.waits_for(&aggregate);
            if (debug_file || container) && !stopping && now < deadline {
                self.held.push((deadline, aggregate));
                continue;
            }
            if debug_file {
                self.counters.aggregates_sent_before_debug_file += 1;
            }
            self.report_aggregate(aggregate, out);
        }
    }

    /// Whether the aggregate waits for a debug file, and for its container's names.
    fn waits_for(&self, aggregate: &Aggregate) -> (bool, bool) {
        let first = &aggregate.first;
        let debug_file = !self.debug_file_wait.is_zero()
            && self
                .symbolizer
                .waits_for_debug_file(&first.maps, &first.image, &first.user_stack);
        let container = match (&self.container_apis, &first.process.container) {
            (Some(apis), Some(container)) => apis.pending(&container.id),
            _ => false,
        };
        (debug_file, container)
    }

    /// Takes the debug files and container names that arrived (waiting up to `wait`
    /// for a debug file); true when any did. Stacks rendered before are rendered again.
    pub(super) fn take_arrivals(&mut self, wait: Duration) -> bool {
        let names = self
            .container_apis
            .as_mut()
            .is_some_and(ContainerApis::take_answers);
        let files = self.symbolizer.poll_debug_files(wait);
        if files {
            self.rendered_stacks.clear();
        }
        names || files
    }

    /// Fills the container's (and pod's) names the runtime has given.
    pub(super) fn fill_container(&mut self, process: &mut ProcessInfo) {
        if let (Some(apis), Some(container)) = (&mut self.container_apis, &mut process.container) {
            apis.fill(container, &mut process.kubernetes);
        }
    }
}
