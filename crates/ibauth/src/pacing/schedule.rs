//! The pure core: per-bucket timelines of reserved send times (whole milliseconds on one
//! clock), the earliest time a request may be sent, and its reservation. No clock, no I/O,
//! no locks — so every rule here is tested with made-up times.
//!
//! The invariant, for a bucket allowing `count` per window `w` (its period plus the margin):
//! every half-open window `[s, s + w)` holds at most `count` reserved times. Reservations need
//! not be in order: a time may go between two others when every window it falls in has room,
//! so a request waiting on a slow endpoint never holds up requests that only share the global
//! bucket.

use std::collections::VecDeque;

/// One bucket's reserved send times and pause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Timeline {
    /// `(time, how many)`, strictly increasing in time. Runs keep memory bounded by the
    /// distinct milliseconds in play, however big the count.
    runs: VecDeque<(u64, u32)>,
    /// Sum of the runs' counts.
    total: u64,
    /// Nothing may be sent before this (after a 429).
    pub(crate) paused_until: u64,
    /// Changed since last written to the ledger.
    pub(crate) dirty: bool,
}

/// How a bucket limits: `count` per window `window` (ms), or only by pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    /// `None`: not a rate (a concurrent bucket: only its pause is kept here).
    pub(crate) rate: Option<(u64, u64)>,
}

impl Spec {
    pub(crate) fn rate(count: u32, window_ms: u64) -> Self {
        // A zero count or window would mean "never" or "always"; both are refused by the
        // parser, and treated as 1 here so a hand-built limit cannot wedge the pacer.
        Self {
            rate: Some((u64::from(count.max(1)), window_ms.max(1))),
        }
    }

    pub(crate) fn pause_only() -> Self {
        Self { rate: None }
    }

    pub(crate) fn window(&self) -> u64 {
        self.rate.map_or(0, |(_, w)| w)
    }
}

impl Timeline {
    /// Forgets times that can no longer share a window with any time `>= now`.
    pub(crate) fn prune(&mut self, now: u64, window: u64) {
        while let Some(&(t, n)) = self.runs.front() {
            // Past the end of u64 counts as "still in the window".
            if t.checked_add(window).is_none_or(|end| end > now) {
                break;
            }
            self.runs.pop_front();
            self.total = self.total.saturating_sub(u64::from(n));
        }
        if self.paused_until <= now {
            self.paused_until = 0;
        }
    }

    /// The earliest time `>= from` at which one more request keeps the invariant.
    ///
    /// With the times sorted `p0 <= p1 <= …`, each group of `count` consecutive times that
    /// fits in a window (`p[i+count-1] - p[i] < w`) forbids exactly the open interval
    /// `(p[i+count-1] - w, p[i] + w)` (a group that does not fit forbids nothing). Both ends grow with `i`, so one sweep in order finds the
    /// first allowed time; per run of equal times only its first group matters.
    pub(crate) fn earliest(&self, from: u64, spec: Spec) -> u64 {
        let t = from.max(self.paused_until);
        let Some((count, w)) = spec.rate else {
            return t;
        };
        if self.total < count {
            return t;
        }
        let mut t = t;
        // `i_start`: index of the first time in run `r`; `j`/`j_start`: the run holding index
        // `i_start + count - 1`, and its first index.
        let mut i_start: u64 = 0;
        let mut j = 0usize;
        let mut j_start: u64 = 0;
        for &(a, n) in &self.runs {
            let last = i_start.saturating_add(count - 1);
            if last >= self.total {
                break;
            }
            while let Some(&(_, m)) = self.runs.get(j) {
                if j_start.saturating_add(u64::from(m)) > last {
                    break;
                }
                j_start = j_start.saturating_add(u64::from(m));
                j += 1;
            }
            let Some(&(b, _)) = self.runs.get(j) else {
                break;
            };
            // lo = b - w >= t: this group and every later one start after t.
            if b.checked_sub(w).is_some_and(|lo| lo >= t) {
                break;
            }
            // A group spanning a whole window forbids nothing: every window holding `t` misses
            // one of its ends.
            if b.saturating_sub(a) < w {
                t = t.max(a.saturating_add(w));
            }
            i_start = i_start.saturating_add(u64::from(n));
        }
        t
    }

    pub(crate) fn insert(&mut self, t: u64) {
        self.insert_n(t, 1);
    }

    fn insert_n(&mut self, t: u64, n: u32) {
        if n == 0 {
            return;
        }
        // Most reservations go at the end: check that before searching.
        match self.runs.back_mut() {
            Some((last, m)) if *last == t => *m = m.saturating_add(n),
            Some((last, _)) if *last > t => match self.runs.binary_search_by(|(x, _)| x.cmp(&t)) {
                Ok(i) => {
                    if let Some((_, m)) = self.runs.get_mut(i) {
                        *m = m.saturating_add(n);
                    }
                }
                Err(i) => self.runs.insert(i, (t, n)),
            },
            _ => self.runs.push_back((t, n)),
        }
        self.total = self.total.saturating_add(u64::from(n));
        self.dirty = true;
    }

    /// Takes back one reservation at `t` (a caller gave up waiting); false if none is there.
    pub(crate) fn remove(&mut self, t: u64) -> bool {
        let Ok(i) = self.runs.binary_search_by(|(x, _)| x.cmp(&t)) else {
            return false;
        };
        match self.runs.get_mut(i) {
            Some((_, n)) if *n > 1 => *n -= 1,
            Some(_) => {
                self.runs.remove(i);
            }
            None => return false,
        }
        self.total = self.total.saturating_sub(1);
        self.dirty = true;
        true
    }

    /// Pauses until `until` (a later pause wins).
    pub(crate) fn pause(&mut self, until: u64) {
        if until > self.paused_until {
            self.paused_until = until;
            self.dirty = true;
        }
    }

    /// Moves times later than `latest` to `latest`, and a pause past `pause_latest` to it: a
    /// stale or hostile time cannot hold a bucket further out than that.
    pub(crate) fn clamp(&mut self, latest: u64, pause_latest: u64) {
        let mut over: u32 = 0;
        while let Some(&(t, n)) = self.runs.back() {
            if t <= latest {
                break;
            }
            over = over.saturating_add(n);
            self.runs.pop_back();
            self.total = self.total.saturating_sub(u64::from(n));
        }
        self.insert_n(latest, over);
        if self.paused_until > pause_latest {
            self.paused_until = pause_latest;
            self.dirty = true;
        }
    }

    /// Takes in times known elsewhere (the ledger): per millisecond the larger count wins, so
    /// our own times, already in both, are not counted twice. `runs` must be sorted.
    pub(crate) fn merge_max(&mut self, runs: &[(u64, u32)], paused_until: u64) {
        if paused_until > self.paused_until {
            self.paused_until = paused_until;
        }
        if runs.is_empty() {
            return;
        }
        let mut merged = VecDeque::with_capacity(self.runs.len().max(runs.len()));
        let mut ours = self.runs.iter().copied().peekable();
        let mut theirs = runs.iter().copied().peekable();
        loop {
            let next = match (ours.peek().copied(), theirs.peek().copied()) {
                (None, None) => break,
                (Some(a), None) => {
                    ours.next();
                    a
                }
                (None, Some(b)) => {
                    theirs.next();
                    b
                }
                (Some(a), Some(b)) if a.0 < b.0 => {
                    ours.next();
                    a
                }
                (Some(a), Some(b)) if b.0 < a.0 => {
                    theirs.next();
                    b
                }
                (Some(a), Some(b)) => {
                    ours.next();
                    theirs.next();
                    (a.0, a.1.max(b.1))
                }
            };
            merged.push_back(next);
        }
        self.total = merged.iter().map(|&(_, n)| u64::from(n)).sum();
        self.runs = merged;
    }

    /// The runs, oldest first.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.runs.iter().copied()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }
}

/// Why a request waits as long as it does: the bucket that set its time last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) at: u64,
    /// The bucket that pushed the time out last, and whether by its pause; `None`: no wait.
    pub(crate) culprit: Option<(usize, bool)>,
}

/// The earliest time `>= now` that every bucket in `ids` allows. `timelines[i]` and `specs[i]`
/// describe bucket `i`.
pub(crate) fn plan(timelines: &[Timeline], specs: &[Spec], ids: &[usize], now: u64) -> Plan {
    let mut at = now;
    let mut culprit = None;
    // Each bucket's `earliest` only moves forward and its forbidden intervals are finite, so
    // repeating until no bucket moves the time ends, at the first time all allow.
    loop {
        let mut moved = false;
        for &id in ids {
            let (Some(tl), Some(&spec)) = (timelines.get(id), specs.get(id)) else {
                continue;
            };
            let next = tl.earliest(at, spec);
            if next > at {
                at = next;
                culprit = Some((id, next == tl.paused_until));
                moved = true;
            }
        }
        if !moved {
            return Plan { at, culprit };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic PRNG (xorshift64*), so failures reproduce without a dependency.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Brute force: does any half-open window of length `w` hold more than `count` of `times`?
    pub(crate) fn violation(times: &[u64], count: u64, w: u64) -> Option<(u64, u64)> {
        let mut sorted = times.to_vec();
        sorted.sort_unstable();
        let c = usize::try_from(count).unwrap();
        sorted
            .windows(c + 1)
            .find(|g| g[c] - g[0] < w)
            .map(|g| (g[0], g[c]))
    }

    fn feasible(times: &[u64], t: u64, count: u64, w: u64) -> bool {
        let mut with = times.to_vec();
        with.push(t);
        violation(&with, count, w).is_none()
    }

    #[test]
    fn one_per_window_spaces_requests_by_the_window() {
        let spec = Spec::rate(1, 5100);
        let mut tl = Timeline::default();
        assert_eq!(tl.earliest(0, spec), 0);
        tl.insert(0);
        assert_eq!(tl.earliest(0, spec), 5100);
        assert_eq!(tl.earliest(7000, spec), 7000);
        tl.insert(5100);
        assert_eq!(tl.earliest(1, spec), 10_200);
    }

    #[test]
    fn a_gap_between_reservations_is_used_when_it_fits() {
        // 2 per 10 with 0 and 30 reserved: times are taken from the gap in between, each the
        // earliest the brute force allows, and never after 30 while the gap has room.
        let spec = Spec::rate(2, 10);
        let mut tl = Timeline::default();
        let mut times = vec![0, 30];
        for &t in &times {
            tl.insert(t);
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            let t = tl.earliest(0, spec);
            assert!(feasible(&times, t, 2, 10), "{t} allowed");
            assert!(
                (0..t).all(|u| !feasible(&times, u, 2, 10)),
                "{t} is the earliest"
            );
            tl.insert(t);
            times.push(t);
            got.push(t);
        }
        assert_eq!(got, vec![0, 10, 10, 20, 20]);
    }

    #[test]
    fn pause_forbids_everything_before_its_end() {
        let spec = Spec::rate(10, 1000);
        let mut tl = Timeline::default();
        tl.pause(500);
        assert_eq!(tl.earliest(0, spec), 500);
        assert_eq!(tl.earliest(600, spec), 600);
        tl.pause(100);
        assert_eq!(
            tl.paused_until, 500,
            "an earlier pause does not shorten a later one"
        );
        assert_eq!(tl.earliest(0, Spec::pause_only()), 500);
        tl.prune(500, 1000);
        assert_eq!(tl.paused_until, 0);
    }

    #[test]
    fn prune_keeps_times_that_can_still_share_a_window() {
        let mut tl = Timeline::default();
        for t in [0, 5, 10] {
            tl.insert(t);
        }
        tl.prune(14, 10);
        assert_eq!(tl.runs().collect::<Vec<_>>(), vec![(5, 1), (10, 1)]);
        tl.prune(u64::MAX, u64::MAX);
        assert_eq!(
            tl.len(),
            2,
            "saturating: far-future now with a huge window keeps all"
        );
        tl.prune(u64::MAX, 1);
        assert_eq!(tl.len(), 0);
    }

    #[test]
    fn equal_times_form_runs_and_remove_takes_one_back() {
        let mut tl = Timeline::default();
        for t in [5, 5, 5, 3, 7, 5] {
            tl.insert(t);
        }
        assert_eq!(tl.runs().collect::<Vec<_>>(), vec![(3, 1), (5, 4), (7, 1)]);
        assert!(tl.remove(5));
        assert!(tl.remove(3));
        assert!(!tl.remove(3));
        assert!(!tl.remove(4));
        assert_eq!(tl.runs().collect::<Vec<_>>(), vec![(5, 3), (7, 1)]);
        assert_eq!(tl.total, 4);
    }

    #[test]
    fn clamp_pulls_far_times_and_pauses_in() {
        let mut tl = Timeline::default();
        for t in [5, 50, 90, 90] {
            tl.insert(t);
        }
        tl.pause(1000);
        tl.clamp(60, 200);
        assert_eq!(
            tl.runs().collect::<Vec<_>>(),
            vec![(5, 1), (50, 1), (60, 2)]
        );
        assert_eq!(tl.total, 4);
        assert_eq!(tl.paused_until, 200);
        let before = tl.clone();
        tl.clamp(100, 300);
        assert_eq!(
            tl.runs().collect::<Vec<_>>(),
            before.runs().collect::<Vec<_>>()
        );
        assert_eq!(tl.paused_until, 200);
    }

    #[test]
    fn merge_takes_the_larger_count_per_millisecond() {
        let mut tl = Timeline::default();
        for t in [1, 2, 2, 9] {
            tl.insert(t);
        }
        tl.merge_max(&[(2, 1), (3, 2), (9, 4)], 50);
        assert_eq!(
            tl.runs().collect::<Vec<_>>(),
            vec![(1, 1), (2, 2), (3, 2), (9, 4)]
        );
        assert_eq!(tl.total, 9);
        assert_eq!(tl.paused_until, 50);
    }

    /// Random request streams over random buckets: after every reservation no window of any
    /// bucket holds too many, the chosen time is the earliest allowed, and a request that
    /// would wait longer than its `max_wait` reserves nothing.
    #[test]
    fn random_streams_never_break_the_window_and_never_wait_needlessly() {
        for seed in 1..=40u64 {
            let mut rng = Rng::new(seed);
            let specs = [
                Spec::rate(1 + rng.below(6) as u32, 1 + rng.below(40)),
                Spec::rate(1, 10 + rng.below(60)),
                Spec::rate(1 + rng.below(3) as u32, 1 + rng.below(25)),
                Spec::pause_only(),
            ];
            let mut timelines = vec![Timeline::default(); specs.len()];
            let mut log: Vec<Vec<u64>> = vec![Vec::new(); specs.len()];
            let mut now = 0u64;
            for _ in 0..300 {
                now += rng.below(4);
                if rng.below(30) == 0 {
                    let b = rng.below(4) as usize;
                    timelines[b].pause(now + rng.below(50));
                }
                // Bucket 0 is the "global" one every request counts against.
                let mut ids = vec![0];
                match rng.below(4) {
                    0 => {}
                    k => ids.push(k as usize),
                }
                for (tl, spec) in timelines.iter_mut().zip(&specs) {
                    tl.prune(now, spec.window());
                }
                let plan = plan(&timelines, &specs, &ids, now);
                assert!(plan.at >= now);
                // Earliest: no time in [now, at) is allowed by every bucket.
                for t in now..plan.at {
                    let ok = ids.iter().all(|&b| {
                        let paused = timelines[b].paused_until > t;
                        let rate_ok = specs[b]
                            .rate
                            .is_none_or(|(c, w)| feasible(&log[b], t, c, w));
                        !paused && rate_ok
                    });
                    assert!(!ok, "seed {seed}: {t} was allowed before {}", plan.at);
                }
                let max_wait = rng.below(60);
                if plan.at - now > max_wait {
                    continue; // refused: nothing reserved
                }
                for &b in &ids {
                    timelines[b].insert(plan.at);
                    log[b].push(plan.at);
                    assert!(plan.at >= timelines[b].paused_until || timelines[b].paused_until == 0);
                    if let Some((c, w)) = specs[b].rate {
                        assert_eq!(
                            violation(&log[b], c, w),
                            None,
                            "seed {seed}: bucket {b} ({c} per {w})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_slow_endpoint_does_not_delay_the_global_bucket() {
        // Global 2 per 10; endpoint 1 per 100. Two endpoint requests: the second waits 100.
        let specs = [Spec::rate(2, 10), Spec::rate(1, 100)];
        let mut tls = vec![Timeline::default(); 2];
        let reserve = |tls: &mut Vec<Timeline>, ids: &[usize], now| {
            let p = plan(tls, &specs, ids, now);
            for &b in ids {
                tls[b].insert(p.at);
            }
            p
        };
        assert_eq!(reserve(&mut tls, &[0, 1], 0).at, 0);
        let slow = reserve(&mut tls, &[0, 1], 0);
        assert_eq!(
            slow,
            Plan {
                at: 100,
                culprit: Some((1, false))
            }
        );
        // Global-only requests go now, before the slow one's time: one more fits at 0,
        // then the global window pushes to 10 — not to 100.
        assert_eq!(reserve(&mut tls, &[0], 0).at, 0);
        assert_eq!(reserve(&mut tls, &[0], 0).at, 10);
        assert_eq!(reserve(&mut tls, &[0], 0).at, 10);
        assert_eq!(reserve(&mut tls, &[0], 0).at, 20);
    }

    #[test]
    fn equal_requests_get_times_in_arrival_order() {
        let specs = [Spec::rate(3, 100), Spec::rate(1, 30)];
        let mut tls = vec![Timeline::default(); 2];
        let mut last = 0;
        for _ in 0..50 {
            let p = plan(&tls, &specs, &[0, 1], 0);
            assert!(p.at >= last, "{} after {last}", p.at);
            last = p.at;
            tls[0].insert(p.at);
            tls[1].insert(p.at);
        }
    }

    #[test]
    fn the_culprit_names_the_bucket_and_whether_it_was_a_pause() {
        let specs = [Spec::rate(5, 1000), Spec::rate(1, 5000)];
        let mut tls = vec![Timeline::default(); 2];
        tls[1].insert(0);
        assert_eq!(plan(&tls, &specs, &[0, 1], 0).culprit, Some((1, false)));
        tls[0].pause(9000);
        assert_eq!(
            plan(&tls, &specs, &[0, 1], 0),
            Plan {
                at: 9000,
                culprit: Some((0, true))
            }
        );
        assert_eq!(plan(&tls, &specs, &[0, 1], 9000).culprit, None);
    }

    #[test]
    fn huge_counts_and_far_times_do_not_overflow() {
        let spec = Spec::rate(u32::MAX, u64::MAX);
        let mut tl = Timeline::default();
        tl.merge_max(&[(u64::MAX - 1, u32::MAX), (u64::MAX, u32::MAX)], u64::MAX);
        assert_eq!(tl.earliest(0, spec), u64::MAX);
        let mut tl = Timeline::default();
        tl.merge_max(&[(u64::MAX, u32::MAX)], 0);
        // Its window [MAX - w, …) starts at 0 here: 0 itself is allowed, 1 is not.
        assert_eq!(tl.earliest(0, Spec::rate(1, u64::MAX)), 0);
        assert_eq!(tl.earliest(1, Spec::rate(1, u64::MAX)), u64::MAX);
        tl.insert(u64::MAX);
        assert_eq!(tl.runs().next(), Some((u64::MAX, u32::MAX)), "saturates");
    }
}
