use super::*;
use proptest::prelude::*;

fn settings(
    threshold: f64,
    max: usize,
    min_std_ms: u64,
    pause_ms: u64,
    first_ms: u64,
) -> FailureDetectorSettings {
    FailureDetectorSettings {
        threshold,
        max_sample_size: max,
        min_std_deviation: Duration::from_millis(min_std_ms),
        acceptable_heartbeat_pause: Duration::from_millis(pause_ms),
        first_heartbeat_estimate: Duration::from_millis(first_ms),
        ..FailureDetectorSettings::default()
    }
}

fn cdf(y: f64) -> f64 {
    1.0 / (1.0 + (-y * (1.5976 + 0.070566 * y * y)).exp())
}

/// Runs `testdata/phi_accrual.txt`; each failure names its line.
#[test]
fn data_driven_cases() {
    let text = include_str!("../../testdata/phi_accrual.txt");
    let t0 = crate::testing::epoch();
    let at =
        |ms: &str| t0 + Duration::from_millis(ms.parse().unwrap_or_else(|e| panic!("{ms}: {e}")));
    let mut fd = PhiAccrual::new(FailureDetectorSettings::default());
    let mut checked = 0;
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["settings", kvs @ ..] => {
                let mut s = settings(8.0, 1000, 10, 0, 1000);
                for kv in kvs {
                    let (k, v) = kv
                        .split_once('=')
                        .unwrap_or_else(|| panic!("line {n}: {kv}"));
                    let num = || v.parse::<u64>().unwrap_or_else(|e| panic!("line {n}: {e}"));
                    match k {
                        "threshold" => {
                            s.threshold = v.parse().unwrap_or_else(|e| panic!("line {n}: {e}"))
                        }
                        "max-samples" => s.max_sample_size = num() as usize,
                        "min-std-ms" => s.min_std_deviation = Duration::from_millis(num()),
                        "pause-ms" => s.acceptable_heartbeat_pause = Duration::from_millis(num()),
                        "first-ms" => s.first_heartbeat_estimate = Duration::from_millis(num()),
                        other => panic!("line {n}: unknown setting {other}"),
                    }
                }
                fd = PhiAccrual::new(s);
            }
            ["heartbeat", t] => fd.heartbeat(at(t)),
            ["phi", t, "=>", want] => {
                let want: f64 = want.parse().unwrap_or_else(|e| panic!("line {n}: {e}"));
                let got = fd.phi(at(t));
                assert!((got - want).abs() < 0.005, "line {n}: {line}: got {got}");
                checked += 1;
            }
            ["phi", t, ">=", want] => {
                let want: f64 = want.parse().unwrap_or_else(|e| panic!("line {n}: {e}"));
                let got = fd.phi(at(t));
                assert!(got >= want, "line {n}: {line}: got {got}");
                checked += 1;
            }
            ["available", t, "=>", want] => {
                let got = fd.is_available(at(t));
                assert_eq!(
                    got.to_string(),
                    *want,
                    "line {n}: {line}: phi {}",
                    fd.phi(at(t))
                );
                checked += 1;
            }
            ["cdf", y, "=>", want] => {
                let y: f64 = y.parse().unwrap_or_else(|e| panic!("line {n}: {e}"));
                let want: f64 = want.parse().unwrap_or_else(|e| panic!("line {n}: {e}"));
                assert!(
                    (cdf(y) - want).abs() < 0.001,
                    "line {n}: {line}: got {}",
                    cdf(y)
                );
                checked += 1;
            }
            _ => panic!("line {n}: cannot read {line:?}"),
        }
    }
    assert!(checked >= 20, "only {checked} checks ran");
}

#[test]
fn a_heartbeat_after_an_outage_is_not_learned_as_an_interval() {
    let t0 = crate::testing::epoch();
    let mut fd = PhiAccrual::new(settings(8.0, 1000, 10, 0, 1000));
    for i in 0..10 {
        fd.heartbeat(t0 + Duration::from_secs(i));
    }
    let before = fd.history.intervals_ms.len();
    // A minute of silence: unavailable. The next heartbeat does not teach it 60 s intervals.
    let back = t0 + Duration::from_secs(69);
    assert!(!fd.is_available(back));
    fd.heartbeat(back);
    assert_eq!(fd.history.intervals_ms.len(), before);
    assert!(fd.is_available(back + Duration::from_millis(900)));
}

#[test]
fn the_registry_tracks_each_key_and_forgets_removed_ones() {
    let t0 = crate::testing::epoch();
    let mut reg = DetectorRegistry::new(settings(8.0, 100, 10, 0, 1000));
    assert!(reg.is_available(&"a", t0), "unknown keys are not suspected");
    assert!(!reg.is_monitoring(&"a"));
    for i in 0..5 {
        reg.heartbeat(&"a", t0 + Duration::from_secs(i));
        reg.heartbeat(&"b", t0 + Duration::from_secs(i));
    }
    reg.heartbeat(&"b", t0 + Duration::from_secs(5));
    let later = t0 + Duration::from_secs(8);
    assert!(!reg.is_available(&"a", later));
    assert!(reg.phi(&"b", later) < reg.phi(&"a", later));
    assert_eq!(reg.keys().copied().collect::<Vec<_>>(), ["a", "b"]);
    reg.remove(&"a");
    assert!(reg.is_available(&"a", later));
    assert!(!reg.is_monitoring(&"a"));
}

proptest! {
    /// Phi never decreases as the silence grows, and is never negative.
    #[test]
    fn phi_grows_with_silence(
        intervals in proptest::collection::vec(50u64..3000, 1..50),
        a in 0u64..60_000,
        b in 0u64..60_000,
    ) {
        let t0 = crate::testing::epoch();
        let mut fd = PhiAccrual::new(FailureDetectorSettings::default());
        let mut t = t0;
        fd.heartbeat(t);
        for i in intervals {
            t += Duration::from_millis(i);
            fd.heartbeat(t);
        }
        let (early, late) = (a.min(b), a.max(b));
        let p_early = fd.phi(t + Duration::from_millis(early));
        let p_late = fd.phi(t + Duration::from_millis(late));
        prop_assert!(p_early >= 0.0);
        prop_assert!(p_late >= p_early - 1e-9, "{p_early} then {p_late}");
    }
}
