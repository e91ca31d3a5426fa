//! No message storm: the frames sent in any simulated second stay within a bound.
//!
//! A livelock — a message bounced between two machines, a region forwarding to itself, a
//! retry without backoff — may still let every shard answer in the end, so the liveness checks
//! alone would pass it. Its mark is the frame rate: a five-node cluster under the sweep's load
//! sends a few hundred frames in its busiest second (gossip, heartbeats, the workload, the
//! liveness probes from every node, hand-offs after a partition heals), where a storm sends
//! tens of thousands. [`MAX_FRAMES_PER_SECOND`] sits between, with room for legitimate bursts.

use crate::sim::World;

/// The invariant's name in reports.
pub const NAME: &str = "no message storm";

/// The most frames the whole cluster may send in one second of simulated time.
pub const MAX_FRAMES_PER_SECOND: u64 = 2_500;

/// Over the run: every second whose frames exceed the bound, with the count.
pub fn check_records(world: &World) -> Vec<String> {
    let storms: Vec<(usize, u64)> = world
        .frames_per_second
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, n)| *n > MAX_FRAMES_PER_SECOND)
        .collect();
    let Some((first, _)) = storms.first().copied() else {
        return Vec::new();
    };
    let worst = storms.iter().map(|(_, n)| *n).max().unwrap_or(0);
    vec![format!(
        "{} simulated second(s) sent more than {MAX_FRAMES_PER_SECOND} frames, the first at {first} s, the worst {worst} (a livelock: replay with FLOTILLA_SIM_TRACE=1 to see the busiest links)",
        storms.len()
    )]
}

/// The busiest second's frame count.
pub fn busiest_second(world: &World) -> u64 {
    world.frames_per_second.iter().copied().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::WorldSettings;

    #[test]
    fn a_second_over_the_bound_fails_the_run_and_says_where() {
        let mut world = World::new(1, WorldSettings::default(), crate::testing::epoch());
        world.frames_per_second = vec![300, MAX_FRAMES_PER_SECOND, 120];
        assert!(check_records(&world).is_empty(), "at the bound is fine");
        world.frames_per_second = vec![300, 6_000, 120, MAX_FRAMES_PER_SECOND + 1];
        let problems = check_records(&world);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("2 simulated second(s)")
                && problems[0].contains("the first at 1 s, the worst 6000"),
            "{}",
            problems[0]
        );
        assert_eq!(busiest_second(&world), 6_000);
    }
}
