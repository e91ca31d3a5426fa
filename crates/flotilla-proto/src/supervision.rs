//! The restart budget of a supervised actor.
//!
//! When an actor supervised with a restart strategy fails, its [`RestartBudget`] decides whether it
//! may restart and after how long:
//!
//! - restarts are counted in a sliding window of `within`; once `max_restarts` restarts lie in the
//!   window, the next failure gives up and the actor stops;
//! - the wait before restart `n` (1-based, counted within the window) is
//!   `min(max_backoff, min_backoff * 2^(n-1))`, stretched by up to `random_factor` so that many
//!   actors failing together do not restart in lock-step.
//!
//! The caller passes `now` and a uniform draw in `[0, 1)` for the jitter, so the decision is a
//! pure function of its inputs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why restart settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestartSettingsError {
    /// `min_backoff` is larger than `max_backoff`.
    #[error("min-backoff ({min:?}) must not exceed max-backoff ({max:?})")]
    BackoffOrder {
        /// The minimum backoff given.
        min: Duration,
        /// The maximum backoff given.
        max: Duration,
    },
    /// `random_factor` is negative, not finite, or above 1.
    #[error("random-factor must lie in [0, 1], got {0}")]
    RandomFactor(String),
    /// The window is zero while restarts are allowed.
    #[error("the restart window must be longer than zero")]
    EmptyWindow,
}

/// How a supervised actor restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartSettings {
    min_backoff: Duration,
    max_backoff: Duration,
    random_factor: f64,
    max_restarts: u32,
    within: Duration,
}

impl Default for RestartSettings {
    /// 200 ms doubling up to 10 s, 20 % jitter, at most 10 restarts within 1 minute.
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            random_factor: 0.2,
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

impl RestartSettings {
    /// Restart settings with exponential backoff and a restart limit.
    pub fn new(
        min_backoff: Duration,
        max_backoff: Duration,
        random_factor: f64,
        max_restarts: u32,
        within: Duration,
    ) -> Result<Self, RestartSettingsError> {
        if min_backoff > max_backoff {
            return Err(RestartSettingsError::BackoffOrder {
                min: min_backoff,
                max: max_backoff,
            });
        }
        if !(0.0..=1.0).contains(&random_factor) {
            return Err(RestartSettingsError::RandomFactor(
                random_factor.to_string(),
            ));
        }
        if within.is_zero() && max_restarts > 0 {
            return Err(RestartSettingsError::EmptyWindow);
        }
        Ok(Self {
            min_backoff,
            max_backoff,
            random_factor,
            max_restarts,
            within,
        })
    }

    /// Restarts at once, without backoff, at most `max_restarts` times within `within`.
    pub fn immediate(max_restarts: u32, within: Duration) -> Result<Self, RestartSettingsError> {
        Self::new(Duration::ZERO, Duration::ZERO, 0.0, max_restarts, within)
    }

    /// The most restarts allowed within the window.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The sliding window restarts are counted in.
    pub fn within(&self) -> Duration {
        self.within
    }

    /// The backoff before restart `attempt` (1-based) for a jitter draw in `[0, 1)`.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let base = self
            .min_backoff
            .checked_mul(1u32 << doublings.min(31))
            .map_or(self.max_backoff, |d| d.min(self.max_backoff));
        let stretch = 1.0 + self.random_factor * jitter.clamp(0.0, 1.0);
        base.mul_f64(stretch)
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after `backoff`; this is restart number `attempt` within the window.
    Restart {
        /// How long to wait before creating the new instance.
        backoff: Duration,
        /// The 1-based count of restarts inside the current window, this one included.
        attempt: u32,
    },
    /// The limit is reached: stop the actor.
    GiveUp {
        /// How many restarts lie inside the window.
        restarts: u32,
    },
}

/// Counts restarts in a sliding window and computes backoffs.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    settings: RestartSettings,
    /// Instants of the restarts inside the window, oldest first; never longer than
    /// `max_restarts`.
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// A fresh budget.
    pub fn new(settings: RestartSettings) -> Self {
        Self {
            settings,
            recent: VecDeque::new(),
        }
    }

    /// The settings this budget applies.
    pub fn settings(&self) -> &RestartSettings {
        &self.settings
    }

    /// Decides what a failure at `now` leads to. `jitter` is a uniform draw in `[0, 1)`.
    pub fn on_failure(&mut self, now: Instant, jitter: f64) -> RestartDecision {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.settings.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let in_window = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if in_window >= self.settings.max_restarts {
            return RestartDecision::GiveUp {
                restarts: in_window,
            };
        }
        self.recent.push_back(now);
        let attempt = in_window + 1;
        RestartDecision::Restart {
            backoff: self.settings.backoff(attempt, jitter),
            attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings(max_restarts: u32, within: Duration) -> RestartSettings {
        RestartSettings::new(ms(100), ms(1000), 0.0, max_restarts, within).unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = settings(100, Duration::from_secs(60));
        let got: Vec<_> = (1..=6).map(|n| s.backoff(n, 0.5)).collect();
        assert_eq!(
            got,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(
            s.backoff(u32::MAX, 0.0),
            ms(1000),
            "no overflow on huge attempts"
        );
    }

    #[test]
    fn jitter_stretches_by_at_most_the_random_factor() {
        let s = RestartSettings::new(ms(100), ms(1000), 0.5, 3, ms(1000)).unwrap();
        assert_eq!(s.backoff(1, 0.0), ms(100));
        assert_eq!(s.backoff(1, 1.0), ms(150));
        assert_eq!(s.backoff(1, 7.0), ms(150), "out-of-range draws are clamped");
    }

    #[test]
    fn gives_up_after_max_restarts_within_the_window() {
        let t0 = crate::testing::epoch();
        let mut b = RestartBudget::new(settings(3, Duration::from_secs(10)));
        let decisions: Vec<_> = (0..4).map(|i| b.on_failure(t0 + ms(i * 10), 0.0)).collect();
        assert_eq!(
            decisions,
            vec![
                RestartDecision::Restart {
                    backoff: ms(100),
                    attempt: 1
                },
                RestartDecision::Restart {
                    backoff: ms(200),
                    attempt: 2
                },
                RestartDecision::Restart {
                    backoff: ms(400),
                    attempt: 3
                },
                RestartDecision::GiveUp { restarts: 3 },
            ]
        );
    }

    #[test]
    fn old_restarts_slide_out_of_the_window_and_reset_the_backoff() {
        let t0 = crate::testing::epoch();
        let mut b = RestartBudget::new(settings(2, Duration::from_secs(1)));
        assert!(matches!(
            b.on_failure(t0, 0.0),
            RestartDecision::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            b.on_failure(t0 + ms(500), 0.0),
            RestartDecision::Restart { attempt: 2, .. }
        ));
        // The first restart left the window at t0 + 1 s; one slot is free again.
        assert_eq!(
            b.on_failure(t0 + ms(1000), 0.0),
            RestartDecision::Restart {
                backoff: ms(200),
                attempt: 2
            }
        );
        // Long quiet: the window empties and the backoff starts from the minimum.
        assert_eq!(
            b.on_failure(t0 + ms(10_000), 0.0),
            RestartDecision::Restart {
                backoff: ms(100),
                attempt: 1
            }
        );
    }

    #[test]
    fn zero_restarts_always_gives_up() {
        let mut b = RestartBudget::new(settings(0, Duration::from_secs(1)));
        assert_eq!(
            b.on_failure(crate::testing::epoch(), 0.0),
            RestartDecision::GiveUp { restarts: 0 }
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            RestartSettings::new(ms(2), ms(1), 0.0, 1, ms(1)),
            Err(RestartSettingsError::BackoffOrder { .. })
        ));
        assert!(matches!(
            RestartSettings::new(ms(1), ms(2), 1.5, 1, ms(1)),
            Err(RestartSettingsError::RandomFactor(_))
        ));
        assert!(matches!(
            RestartSettings::new(ms(1), ms(2), f64::NAN, 1, ms(1)),
            Err(RestartSettingsError::RandomFactor(_))
        ));
        assert_eq!(
            RestartSettings::new(ms(1), ms(2), 0.1, 1, Duration::ZERO),
            Err(RestartSettingsError::EmptyWindow)
        );
    }
}
