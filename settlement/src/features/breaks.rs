//! Per-provider reconciliation state: the breaks (ledger/statement mismatches) each provider
//! has open, so that "a provider with rising mismatches" shows in the features of its
//! transactions. It exists apart from the transaction state because it changes by other
//! events: [`BreakEvent`]s, a break opened or closed, reported by reconciliation.
//!
//! Serving calls [`FeatureExtractor::note_break`] when a break opens or closes; training
//! replays the stored events with [`BreakReplay`], which applies each event ahead of the
//! first transaction (in `seq` order) that occurred at or after it, and to every transaction
//! after that one. Both run the same state code, so a model sees in training what it will
//! see in serving, provided an event's `at` is the instant the break became known (when
//! reconciliation recorded it), not the business day it concerns: a break found on the
//! 25th about the 24th was not visible to the transactions of the 24th.
//!
//! # Bounded state
//! Per provider: the count of open breaks (exact), the opening instants of the oldest
//! `open_break_times_per_provider_max` of them (a sorted multiset, O(log n) per event), and
//! a decayed count of breaks opened. Providers live in a table capped by
//! `break_providers_max` (CLOCK eviction, like the other tables; an evicted provider's open
//! breaks are forgotten and their later closes count as unmatched).
//!
//! Beyond the per-provider cap, an opening is counted but its instant is not kept (the
//! oldest are kept, since the age feature needs the oldest). The count stays exact; the
//! oldest age stays exact as long as one kept break is open. Once every kept break is
//! closed while uncounted ones remain, the age is measured from the earliest opening that
//! went over the cap, a lower bound of the real oldest opening (so the age may be
//! overstated if that one has closed since), until the provider has no open break again.
//!
//! A break's `Closed` event must come after its `Opened` one (in serving, note the opening
//! first; [`BreakReplay`] orders openings before closes at one instant).
//! A close whose opening is not known (opened before the extractor started, for instance
//! when exporting part of the ledger, or forgotten by eviction) changes nothing and is
//! counted in [`ExtractorStats::break_closes_unmatched`](super::ExtractorStats).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::stats::decay;
use super::{FeatureExtractor, Transaction};

/// A break opened or closed at a provider, at an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakEvent {
    /// The provider id, as in [`Transaction::provider`].
    pub provider: String,
    /// When the change became known: the break's opening, or its closing.
    pub at: DateTime<Utc>,
    pub change: BreakChange,
}

/// What happened to a break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakChange {
    /// A new break is open (its opening instant is the event's `at`).
    Opened,
    /// A break is closed; `opened_at` is the `at` of its `Opened` event, which says which
    /// of the provider's open breaks this is.
    Closed { opened_at: DateTime<Utc> },
}

/// One stored change of a break's status, as the store records it (`Store::break_events`):
/// the break's id, its provider, when the change was recorded, and whether it became
/// unsettled (opened or reopened) or settled.
#[derive(Clone, Copy, Debug)]
pub struct BreakStatusChange<'a> {
    pub break_id: i64,
    pub provider: &'a str,
    pub at: DateTime<Utc>,
    pub opened: bool,
}

/// The feature events of a break history given in time order: a settling carries the
/// time its break was last opened. A settling of a break never seen opened (its opening is
/// older than the history) is left out, as is a second opening of a break already open.
pub fn break_events_from_changes<'a>(changes: impl IntoIterator<Item = BreakStatusChange<'a>>) -> Vec<BreakEvent> {
    let mut opened_at: BTreeMap<i64, DateTime<Utc>> = BTreeMap::new();
    let mut events = Vec::new();
    for change in changes {
        let event = if change.opened {
            if opened_at.contains_key(&change.break_id) {
                continue; // already open: a second opening would count it twice
            }
            opened_at.insert(change.break_id, change.at);
            BreakEvent { provider: change.provider.to_string(), at: change.at, change: BreakChange::Opened }
        } else {
            let Some(opened) = opened_at.remove(&change.break_id) else { continue };
            BreakEvent {
                provider: change.provider.to_string(),
                at: change.at,
                change: BreakChange::Closed { opened_at: opened },
            }
        };
        events.push(event);
    }
    events
}

/// Estimated heap bytes per distinct opening instant kept (a B-tree entry of `(i64, u32)`
/// with the node overhead, nodes at least half full).
pub(crate) const OPEN_BREAK_TIME_BYTES_ESTIMATE: usize = 32;

/// One provider's open breaks.
#[derive(Debug, Default)]
pub(crate) struct ProviderBreaks {
    /// Opening instant (ns) → how many open breaks opened then; the oldest ones, at most
    /// the per-provider cap in total.
    kept: BTreeMap<i64, u32>,
    kept_count: usize,
    /// Open breaks whose instants are not kept; every one opened at or after each kept one.
    uncounted_times: u64,
    /// The earliest opening among those not kept (a lower bound once some have closed).
    uncounted_floor_nanos: i64,
    /// The oldest open break's opening and `ln(1 + open breaks)`, cached for the hot path.
    oldest_nanos: Option<i64>,
    open_count_log: f64,
    opened_decayed: f64,
    opened_last_nanos: i64,
    opened_any: bool,
}

impl ProviderBreaks {
    /// A break opened at `at_nanos`.
    pub(crate) fn open(&mut self, at_nanos: i64, times_max: usize, window_seconds: f64) {
        let fits_before_uncounted = self.uncounted_times == 0
            || at_nanos <= self.uncounted_floor_nanos
            || self.kept.last_key_value().is_some_and(|(&newest, _)| at_nanos <= newest);
        if fits_before_uncounted {
            *self.kept.entry(at_nanos).or_insert(0) += 1;
            self.kept_count += 1;
            if self.kept_count > times_max {
                // Give up the newest kept instant: it is no older than any uncounted one.
                if let Some(mut newest) = self.kept.last_entry() {
                    let instant = *newest.key();
                    *newest.get_mut() -= 1;
                    if *newest.get() == 0 {
                        newest.remove();
                    }
                    self.kept_count -= 1;
                    self.add_uncounted(instant);
                }
            }
        } else {
            self.add_uncounted(at_nanos);
        }
        if self.opened_any {
            let elapsed = super::stats::seconds_between(at_nanos, self.opened_last_nanos);
            self.opened_decayed = self.opened_decayed * decay(elapsed, window_seconds) + 1.0;
            self.opened_last_nanos = self.opened_last_nanos.max(at_nanos);
        } else {
            self.opened_any = true;
            self.opened_decayed = 1.0;
            self.opened_last_nanos = at_nanos;
        }
        self.refresh_oldest();
    }

    fn add_uncounted(&mut self, at_nanos: i64) {
        self.uncounted_floor_nanos =
            if self.uncounted_times == 0 { at_nanos } else { self.uncounted_floor_nanos.min(at_nanos) };
        self.uncounted_times = self.uncounted_times.saturating_add(1);
    }

    /// The break opened at `opened_nanos` closed; false if no such break is open here.
    pub(crate) fn close(&mut self, opened_nanos: i64) -> bool {
        let matched = if let Some(count) = self.kept.get_mut(&opened_nanos) {
            *count -= 1;
            if *count == 0 {
                self.kept.remove(&opened_nanos);
            }
            self.kept_count -= 1;
            true
        } else if self.uncounted_times > 0 && opened_nanos >= self.uncounted_floor_nanos {
            self.uncounted_times -= 1;
            true
        } else {
            false
        };
        self.refresh_oldest();
        matched
    }

    fn refresh_oldest(&mut self) {
        self.open_count_log = (self.open_count() as f64).ln_1p();
        self.oldest_nanos = match self.kept.first_key_value() {
            Some((&oldest, _)) => Some(oldest),
            None if self.uncounted_times > 0 => Some(self.uncounted_floor_nanos),
            None => None,
        };
    }

    /// Open breaks (kept and not).
    pub(crate) fn open_count(&self) -> u64 {
        (self.kept_count as u64).saturating_add(self.uncounted_times)
    }

    /// `ln(1 + open breaks)`.
    pub(crate) fn open_count_log(&self) -> f64 {
        self.open_count_log
    }

    /// The oldest open break's opening instant, if any is open.
    pub(crate) fn oldest_nanos(&self) -> Option<i64> {
        self.oldest_nanos
    }

    /// The decayed count of breaks opened, seen at `at_nanos` (an instant before the latest
    /// opening decays nothing).
    pub(crate) fn opened_decayed_at(&self, at_nanos: i64, window_seconds: f64) -> f64 {
        if !self.opened_any {
            return 0.0;
        }
        self.opened_decayed * decay(super::stats::seconds_between(at_nanos, self.opened_last_nanos), window_seconds)
    }

    /// Distinct opening instants kept (for the memory estimate).
    pub(crate) fn kept_instants(&self) -> usize {
        self.kept.len()
    }
}

/// Break events replayed into an extractor in time order, ahead of the transactions they
/// precede: the interleaving rule of training (see the module docs). Events are ordered by
/// `at`, and at one instant openings before closes (a break closed the instant it opened,
/// as an automatic close can be, is opened first), whatever order they are given in. Before
/// each transaction,
/// every event not yet applied whose `at` is at or before the transaction's `occurred_at`
/// is applied; so an event reaches the first transaction (in the order given) that occurred
/// at or after it, and every transaction after that one, as in serving, where the event is
/// noted once and stays.
pub struct BreakReplay<'a> {
    order: Vec<&'a BreakEvent>,
    next: usize,
}

impl<'a> BreakReplay<'a> {
    pub fn new(events: &'a [BreakEvent]) -> BreakReplay<'a> {
        let mut order: Vec<&BreakEvent> = events.iter().collect();
        order.sort_by_key(|event| (event.at, matches!(event.change, BreakChange::Closed { .. })));
        BreakReplay { order, next: 0 }
    }

    /// Applies every pending event with `at <= until`; returns how many.
    pub fn apply_until(&mut self, extractor: &mut FeatureExtractor, until: DateTime<Utc>) -> usize {
        let start = self.next;
        while let Some(event) = self.order.get(self.next).filter(|event| event.at <= until) {
            extractor.note_break(event);
            self.next += 1;
        }
        self.next - start
    }

    /// Applies the events due before `transaction`, then extracts its vector into `out`.
    pub fn extract(&mut self, extractor: &mut FeatureExtractor, transaction: &Transaction, out: &mut [f64]) {
        self.apply_until(extractor, transaction.occurred_at);
        extractor.extract(transaction, out);
    }

    /// Events not applied yet (later than every transaction so far).
    pub fn pending(&self) -> usize {
        self.order.len() - self.next
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn stored_changes_become_events_with_their_opening_time() {
        let at = |minute: i64| DateTime::from_timestamp(1_763_251_200 + minute * 60, 0).expect("a time");
        let change = |break_id, minute, opened| BreakStatusChange { break_id, provider: "p", at: at(minute), opened };
        let events = break_events_from_changes([
            change(9, 0, false), // settled before the history starts: left out
            change(1, 1, true),
            change(2, 2, true),
            change(1, 3, true), // opened twice without a settling: counted once
            change(1, 4, false),
            change(1, 5, true), // reopened
            change(2, 6, false),
        ]);
        let expected = [
            (at(1), BreakChange::Opened),
            (at(2), BreakChange::Opened),
            (at(4), BreakChange::Closed { opened_at: at(1) }),
            (at(5), BreakChange::Opened),
            (at(6), BreakChange::Closed { opened_at: at(2) }),
        ];
        let got: Vec<(DateTime<Utc>, BreakChange)> = events.iter().map(|event| (event.at, event.change)).collect();
        assert_eq!(got, expected);
    }

    use super::*;

    const WINDOW: f64 = 86_400.0;

    #[test]
    fn count_and_oldest_follow_opens_and_closes() {
        let mut breaks = ProviderBreaks::default();
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (0, None));
        breaks.open(30, 8, WINDOW);
        breaks.open(10, 8, WINDOW);
        breaks.open(10, 8, WINDOW);
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (3, Some(10)));
        assert_eq!(breaks.open_count_log(), 4f64.ln());
        assert!(breaks.close(10));
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (2, Some(10)));
        assert!(breaks.close(10));
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (1, Some(30)));
        assert!(!breaks.close(10), "no break opened at 10 is open any more");
        assert!(breaks.close(30));
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (0, None));
        assert_eq!(breaks.kept_instants(), 0);
    }

    #[test]
    fn beyond_the_cap_the_count_stays_exact_and_the_oldest_are_kept() {
        let mut breaks = ProviderBreaks::default();
        for at in 1..=5 {
            breaks.open(at * 100, 2, WINDOW);
        }
        // Kept: 100, 200; uncounted: 300, 400, 500 (floor 300).
        assert_eq!((breaks.open_count(), breaks.oldest_nanos(), breaks.kept_instants()), (5, Some(100), 2));
        // An opening older than a kept one takes its place; the newest kept goes uncounted.
        breaks.open(50, 2, WINDOW);
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (6, Some(50)));
        // Kept: 50, 100; uncounted 200..500, floor 200.
        assert!(breaks.close(400));
        assert!(breaks.close(50));
        assert!(breaks.close(100));
        // Nothing kept; 200, 300, 500 open: the oldest is the floor, exact here.
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (3, Some(200)));
        assert!(breaks.close(200));
        // The floor stays (a lower bound) until no break is open.
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (2, Some(200)));
        assert!(breaks.close(300) && breaks.close(500));
        assert_eq!((breaks.open_count(), breaks.oldest_nanos()), (0, None));
        // Fresh after that: a new opening is kept again.
        breaks.open(900, 2, WINDOW);
        assert_eq!((breaks.open_count(), breaks.oldest_nanos(), breaks.kept_instants()), (1, Some(900), 1));
        assert!(!breaks.close(7));
    }

    #[test]
    fn the_opened_rate_decays_from_the_latest_opening() {
        let mut breaks = ProviderBreaks::default();
        assert_eq!(breaks.opened_decayed_at(0, WINDOW), 0.0);
        let day = 86_400 * 1_000_000_000i64;
        breaks.open(0, 8, WINDOW);
        breaks.open(day, 8, WINDOW);
        let expected = (-1f64).exp() + 1.0;
        assert!((breaks.opened_decayed_at(day, WINDOW) - expected).abs() < 1e-12);
        assert!((breaks.opened_decayed_at(2 * day, WINDOW) - expected * (-1f64).exp()).abs() < 1e-12);
        // Before the latest opening: no decay.
        assert!((breaks.opened_decayed_at(0, WINDOW) - expected).abs() < 1e-12);
        // Closing does not change the rate of openings.
        assert!(breaks.close(0));
        assert!((breaks.opened_decayed_at(day, WINDOW) - expected).abs() < 1e-12);
    }
}
