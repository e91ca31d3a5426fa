//! The chaos harness's fault schedule, drawn from a seed: what happens to which process, when,
//! and for how long. Faults may overlap, but never two on one node at once.

use std::time::Duration;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` the node; start it again (a new incarnation, same address) when it ends.
    Kill(usize),
    /// `SIGSTOP` the node (a long GC-like pause); `SIGCONT` when it ends.
    Pause(usize),
    /// `SIGTERM` the node (it leaves gracefully); start it again when it ends.
    Restart(usize),
    /// `SIGSTOP` the etcd server; `SIGCONT` when it ends.
    EtcdPause,
    /// Every link between the two groups is cut, both ways; healed when it ends.
    Partition(Vec<usize>, Vec<usize>),
}

impl Fault {
    /// The nodes it touches.
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            Self::Kill(n) | Self::Pause(n) | Self::Restart(n) => vec![*n],
            Self::EtcdPause => Vec::new(),
            Self::Partition(a, b) => a.iter().chain(b).copied().collect(),
        }
    }
}

/// A fault and its time, from the start of the fault phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When it starts.
    pub at: Duration,
    /// How long it lasts.
    pub lasts: Duration,
    /// What.
    pub fault: Fault,
}

struct Draw(flotilla_proto::sim::seeded::SeededRng);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo * 1000 + self.below((hi - lo).max(1) * 1000))
    }
}

/// A schedule for `nodes` nodes over a fault phase of `phase`: a fault every 4–12 s, each
/// lasting `short`..`long` seconds (ended at the phase's end at the latest). Partitions cut the
/// nodes in two random non-empty groups.
pub fn generate(seed: u64, nodes: usize, phase: Duration, short: u64, long: u64) -> Vec<Scheduled> {
    let mut d = Draw(flotilla_proto::sim::seeded::SeededRng::new(seed));
    let mut out: Vec<Scheduled> = Vec::new();
    let mut at = d.secs(1, 4);
    while at < phase {
        let busy = |n: usize, out: &[Scheduled]| {
            out.iter()
                .any(|s| s.at + s.lasts > at && s.fault.nodes().contains(&n))
        };
        let lasts = d.secs(short, long).min(phase.saturating_sub(at));
        let node = d.below(nodes as u64) as usize;
        let fault = match d.below(5) {
            0 => Fault::Kill(node),
            1 => Fault::Pause(node),
            2 => Fault::Restart(node),
            3 => Fault::EtcdPause,
            _ => {
                let mask = 1 + d.below((1 << nodes) - 2);
                let (a, b): (Vec<usize>, Vec<usize>) = (0..nodes).partition(|i| mask >> i & 1 == 1);
                Fault::Partition(a, b)
            }
        };
        let clash = fault.nodes().iter().any(|n| busy(*n, &out))
            || (fault == Fault::EtcdPause
                && out
                    .iter()
                    .any(|s| s.fault == Fault::EtcdPause && s.at + s.lasts > at));
        if !clash && !lasts.is_zero() {
            out.push(Scheduled { at, lasts, fault });
        }
        at += d.secs(4, 12);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_no_node_has_two_faults_at_once() {
        let phase = Duration::from_secs(120);
        let a = generate(3, 5, phase, 3, 20);
        assert_eq!(a, generate(3, 5, phase, 3, 20));
        assert_ne!(a, generate(4, 5, phase, 3, 20));
        assert!(a.len() >= 5, "{a:?}");
        for (i, x) in a.iter().enumerate() {
            assert!(x.at + x.lasts <= phase);
            for y in &a[i + 1..] {
                let overlap = y.at < x.at + x.lasts;
                let shared = x.fault.nodes().iter().any(|n| y.fault.nodes().contains(n));
                assert!(!(overlap && shared), "{x:?} and {y:?}");
            }
            if let Fault::Partition(p, q) = &x.fault {
                assert!(!p.is_empty() && !q.is_empty() && p.len() + q.len() == 5);
            }
        }
        let kinds: std::collections::BTreeSet<u8> = (1..40)
            .flat_map(|s| generate(s, 5, phase, 3, 20))
            .map(|s| match s.fault {
                Fault::Kill(_) => 0,
                Fault::Pause(_) => 1,
                Fault::Restart(_) => 2,
                Fault::EtcdPause => 3,
                Fault::Partition(..) => 4,
            })
            .collect();
        assert_eq!(kinds.len(), 5, "every kind is drawn");
    }
}
