//! Write faults: one event each, or merged into aggregates reported at each flush and
//! when their region or process ends.

use super::*;

impl Correlator {
    /// A write fault; `kernel_stack` is set when the kernel did the write. Reported at
    /// once in every-event mode, otherwise merged into its aggregate.
    pub(super) fn write_fault(
        &mut self,
        record: &FaultRecord,
        kernel_stack: Option<&[u64]>,
    ) -> Option<Timed> {
        let process = self.process_info(&record.header);
        let state = self.processes.entry(process.pid).or_default();
        let mut region = record.region;
        let own = state
            .regions
            .find(record.address)
            .filter(|tracked| {
                // A fault matched through the parent's regions (right after a fork)
                // belongs to the child's copy of that region.
                tracked.region.id == region.id || record.flags & FAULT_VIA_PARENT != 0
            })
            .cloned();
        let path = own.as_ref().and_then(|tracked| tracked.path.clone());
        if let Some(own) = own {
            region = Region {
                path_filter: region.path_filter,
                ..own.region
            };
        }
        let maps = state.maps.clone();
        let image = state.image.clone();
        // Faults of a region still awaiting its `--path` verdict come to us.
        if region.path_filter == PATH_PENDING && !self.filter.audited(&region, path.as_deref()) {
            self.counters.faults_filtered_by_agent += 1;
            return None;
        }
        let depth = stack_depth(record.stack_bytes, record.stack.len());
        let fault = RawFault {
            process,
            maps,
            image,
            address: record.address,
            error_code: record.error_code,
            region,
            path,
            user_stack: record.stack[..depth].to_vec(),
            user_stack_truncated: record.flags & FAULT_STACK_TRUNCATED != 0,
            stack_end: record.stack_end,
            kernel_stack: kernel_stack.map(<[u64]>::to_vec),
            ts_ns: record.header.ts_ns,
            stack_hash: record.stack_hash,
            epoch: u64::from(record.epoch),
        };
        match &mut self.aggregator {
            Some(aggregator) => {
                aggregator.add(fault);
                None
            }
            None => Some(self.fault_event(fault, None)),
        }
    }

    /// Starts the next flush interval; returns the one that closes, whose aggregates
    /// are reported once its records are in (`None`: nothing to wait for).
    pub fn start_flush(&mut self) -> Option<u64> {
        self.aggregator.as_mut()?.start_interval()
    }

    /// Whether flushes start re-arm rounds (`--rearm-interval`).
    pub fn rearms(&self) -> bool {
        self.rearm_rounds.is_some()
    }

    /// Starts a re-arm round (`--rearm-interval`) at monotonic time `now_ns`; its
    /// processes are re-armed by `rearm_waiting`.
    pub fn start_round(&mut self, now_ns: u64) {
        if let Some(rounds) = &mut self.rearm_rounds {
            rounds.start(now_ns);
        }
    }

    /// Re-arms the processes with audited regions for the round that waits, if any.
    pub fn rearm_waiting(&mut self) {
        let Some(rounds) = &mut self.rearm_rounds else {
            return;
        };
        let pids = self
            .processes
            .iter()
            .filter(|(_, state)| state.regions.iter().next().is_some())
            .map(|(&pid, _)| pid);
        rounds.rearm(pids, soft_dirty::clear_soft_dirty);
    }

    /// Reports the aggregates `take` removes from the aggregator (none in every-event
    /// mode): before a region or process ends, and at each flush.
    pub fn flush(
        &mut self,
        take: impl FnOnce(&mut Aggregator) -> Vec<Aggregate>,
        out: &mut Vec<Timed>,
    ) {
        let Some(aggregator) = &mut self.aggregator else {
            return;
        };
        let aggregates = take(aggregator);
        self.take_arrivals(Duration::ZERO);
        for aggregate in aggregates {
            self.report_or_hold(aggregate, out);
        }
    }

    pub(super) fn report_aggregate(&mut self, aggregate: Aggregate, out: &mut Vec<Timed>) {
        {
            let summary = AggregateSummary {
                count: aggregate.count,
                pages: aggregate.pages(),
                first_ts: self.clock.format_monotonic(aggregate.first.ts_ns),
                last_ts: self.clock.format_monotonic(aggregate.last_ts_ns),
            };
            let mut event = self.fault_event(aggregate.first, Some(summary));
            event.ts_ns = Some(aggregate.last_ts_ns);
            out.push(event);
        }
    }

    /// The `write_fault` event for `fault` (standing for `summary.count` faults when
    /// aggregated): the only place stacks are symbolised.
    pub(super) fn fault_event(
        &mut self,
        fault: RawFault,
        summary: Option<AggregateSummary>,
    ) -> Timed {
        let mut fault = fault;
        // Names a runtime gave since the fault's record.
        self.fill_container(&mut fault.process);
        let stack = self.user_stack(&fault.maps, &fault.image, &fault.user_stack);
        let stack_truncated = fault.user_stack_truncated || stack.cut;
        let kernel_stack = fault.kernel_stack.as_deref().map(|addrs| {
            let mut stack = self.symbolizer.symbolize_kernel(addrs);
            self.counters.frames_unsymbolized += stack.unknown_frames;
            if stack.frames.len() > self.max_stack_depth {
                stack.frames.truncate(self.max_stack_depth);
                self.counters.stacks_cut_for_output += 1;
            }
            stack.frames
        });
        let count = summary.as_ref().map_or(1, |s| s.count);
        self.counters.faults_delivered += count;
        let round = self.rearm_rounds.as_mut().map(|rounds| {
            let round = rounds.round_of(fault.ts_ns);
            rounds.note_faults(fault.process.pid, round, count);
            round
        });
        self.counters.write_fault_events += 1;
        Timed {
            ts_ns: Some(fault.ts_ns),
            body: Body::WriteFault(WriteFault {
                process: fault.process,
                address: addresses::in_region(fault.address, fault.region.start),
                region: region_json(&fault.region, fault.path.as_deref()),
                access: if kernel_stack.is_some() {
                    Access::Kernel
                } else {
                    Access::User
                },
                error_code: (fault.error_code != ERROR_CODE_UNKNOWN).then_some(fault.error_code),
                stack: stack.json.clone(),
                stack_truncated,
                stack_end: StackEnd::from_kernel(fault.stack_end),
                kernel_stack,
                aggregate: summary,
                round,
            }),
        }
    }
}
