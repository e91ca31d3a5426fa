//! The phi-accrual failure detector (Hayashibara et al.), as a pure value.
//!
//! A detector watches one remote's heartbeats. Instead of a yes/no timeout it answers *how
//! suspicious* the silence since the last heartbeat is: φ = −log10(P(a heartbeat arrives later
//! than this)), with the arrival intervals modelled as a normal distribution fitted to the last
//! `max-sample-size` intervals. φ = 1 means a 10 % chance that the remote is in fact alive and
//! just late, φ = 2 a 1 % chance, and so on; the remote counts as unavailable once φ reaches the
//! `threshold`.
//!
//! Two settings keep it calm:
//! - `acceptable-heartbeat-pause` is added to the mean interval, so a pause of that length (a GC,
//!   a network hiccup) barely moves φ;
//! - `min-std-deviation` floors the standard deviation, so very regular heartbeats do not make
//!   the detector jump at the first late one.
//!
//! Before the second heartbeat there is no interval to learn from: the history starts from
//! `first-heartbeat-estimate` ± a quarter of it. The normal CDF uses the logistic approximation
//! `1 / (1 + e^(−y(1.5976 + 0.070566 y²)))` (maximum error about 1.4·10⁻⁴).
//!
//! Inputs: [`PhiAccrual::heartbeat`] with the time it arrived. Queries: [`PhiAccrual::phi`] and
//! [`PhiAccrual::is_available`] at a given time. The caller owns the clock; nothing here reads
//! one. [`DetectorRegistry`] keeps one detector per key (a node, a unique address).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::FailureDetectorSettings;

#[cfg(test)]
mod tests;

/// The last intervals between heartbeats, with running sums for mean and variance.
#[derive(Debug, Clone)]
struct History {
    max: usize,
    intervals_ms: VecDeque<f64>,
    sum: f64,
    squared_sum: f64,
}

impl History {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            intervals_ms: VecDeque::new(),
            sum: 0.0,
            squared_sum: 0.0,
        }
    }

    fn push(&mut self, interval_ms: f64) {
        if self.intervals_ms.len() == self.max
            && let Some(dropped) = self.intervals_ms.pop_front()
        {
            self.sum -= dropped;
            self.squared_sum -= dropped * dropped;
        }
        self.intervals_ms.push_back(interval_ms);
        self.sum += interval_ms;
        self.squared_sum += interval_ms * interval_ms;
    }

    fn mean(&self) -> f64 {
        self.sum / self.intervals_ms.len().max(1) as f64
    }

    fn std_deviation(&self) -> f64 {
        let mean = self.mean();
        let variance = self.squared_sum / self.intervals_ms.len().max(1) as f64 - mean * mean;
        variance.max(0.0).sqrt()
    }
}

/// One remote's failure detector. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    settings: FailureDetectorSettings,
    history: History,
    last: Option<Instant>,
}

/// φ for a heartbeat `elapsed_ms` after the last one, given the interval distribution.
pub fn phi(elapsed_ms: f64, mean_ms: f64, std_deviation_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / std_deviation_ms;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed_ms > mean_ms {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl PhiAccrual {
    /// A detector that has seen no heartbeat yet (φ = 0: nothing is suspected before
    /// monitoring starts).
    pub fn new(settings: FailureDetectorSettings) -> Self {
        Self {
            history: History::new(settings.max_sample_size),
            settings,
            last: None,
        }
    }

    /// Records a heartbeat that arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        match self.last {
            None => {
                let estimate = ms(self.settings.first_heartbeat_estimate);
                let spread = estimate / 4.0;
                self.history.push(estimate - spread);
                self.history.push(estimate + spread);
            }
            Some(last) => {
                // A heartbeat after the remote was already declared unavailable is not a normal
                // interval: learning from it would teach the detector to tolerate outages.
                if self.is_available(now) {
                    self.history.push(ms(now.saturating_duration_since(last)));
                }
            }
        }
        self.last = Some(now);
    }

    /// How suspicious the silence is at `now`; 0 before the first heartbeat.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let elapsed = ms(now.saturating_duration_since(last));
        let mean = self.history.mean() + ms(self.settings.acceptable_heartbeat_pause);
        let std = self
            .history
            .std_deviation()
            .max(ms(self.settings.min_std_deviation));
        phi(elapsed, mean, std)
    }

    /// False once φ has reached the threshold.
    pub fn is_available(&self, now: Instant) -> bool {
        self.phi(now) < self.settings.threshold
    }

    /// True once a heartbeat has been seen.
    pub fn is_monitoring(&self) -> bool {
        self.last.is_some()
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }

    /// The settings in use.
    pub fn settings(&self) -> &FailureDetectorSettings {
        &self.settings
    }
}

/// One detector per key, created at its first heartbeat.
#[derive(Debug, Clone)]
pub struct DetectorRegistry<K: Ord> {
    settings: FailureDetectorSettings,
    detectors: BTreeMap<K, PhiAccrual>,
}

impl<K: Ord + Clone> DetectorRegistry<K> {
    /// An empty registry whose detectors use `settings`.
    pub fn new(settings: FailureDetectorSettings) -> Self {
        Self {
            settings,
            detectors: BTreeMap::new(),
        }
    }

    /// Records a heartbeat from `key`.
    pub fn heartbeat(&mut self, key: &K, now: Instant) {
        self.detectors
            .entry(key.clone())
            .or_insert_with(|| PhiAccrual::new(self.settings.clone()))
            .heartbeat(now);
    }

    /// Whether `key` is available; true for a key never heard from (not monitored yet).
    pub fn is_available(&self, key: &K, now: Instant) -> bool {
        self.detectors.get(key).is_none_or(|d| d.is_available(now))
    }

    /// φ of `key`; 0 when never heard from.
    pub fn phi(&self, key: &K, now: Instant) -> f64 {
        self.detectors.get(key).map_or(0.0, |d| d.phi(now))
    }

    /// Whether a heartbeat from `key` has been seen.
    pub fn is_monitoring(&self, key: &K) -> bool {
        self.detectors.contains_key(key)
    }

    /// Stops watching `key`; a later heartbeat starts afresh.
    pub fn remove(&mut self, key: &K) {
        self.detectors.remove(key);
    }

    /// The keys being watched, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.detectors.keys()
    }
}
