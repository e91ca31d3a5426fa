//! The fault-injection commands a node takes on stdin under `flotilla node --chaos-control`,
//! one per line, each acted on by the node's [`FaultInjector`] (see [`flotilla_remote::faults`]):
//!
//! ```text
//! blackhole flotilla://chaos@127.0.0.1:2553    drop every frame to and from that node
//! heal flotilla://chaos@127.0.0.1:2553         let them through again
//! ```
//!
//! The node answers each on stdout (`fault-ok <command>` or `fault-error <why>`). A line it
//! cannot read is answered with an error and changes nothing. For the chaos harness only: a
//! node run without the flag has no injector and reads nothing.

use flotilla_core::Address;
use flotilla_remote::{Direction, FaultInjector};

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Drop every frame to and from the node.
    Blackhole(Address),
    /// Let its frames through again.
    Heal(Address),
}

impl Command {
    /// The line that carries it.
    pub fn line(&self) -> String {
        match self {
            Self::Blackhole(a) => format!("blackhole {a}"),
            Self::Heal(a) => format!("heal {a}"),
        }
    }
}

/// Reads one command line.
pub fn parse(line: &str) -> Result<Command, String> {
    let (verb, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let address = || {
        rest.trim()
            .parse::<Address>()
            .map_err(|e| format!("bad address {rest:?}: {e}"))
    };
    match verb {
        "blackhole" => Ok(Command::Blackhole(address()?)),
        "heal" => Ok(Command::Heal(address()?)),
        other => Err(format!("unknown command {other:?} (blackhole, heal)")),
    }
}

/// Applies `command` to `faults`.
pub fn apply(faults: &FaultInjector, command: &Command) {
    match command {
        Command::Blackhole(a) => faults.blackhole(a, Direction::Both),
        Command::Heal(a) => faults.pass_through(a),
    }
}

/// Reads commands from stdin on a thread of its own until stdin closes.
pub fn listen(faults: FaultInjector) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if line.trim().is_empty() {
                continue;
            }
            match parse(&line) {
                Ok(c) => {
                    apply(&faults, &c);
                    tracing::info!("fault injection: {}", c.line());
                    crate::node::say(&format!("fault-ok {}", c.line()));
                }
                Err(e) => crate::node::say(&format!("fault-error {e}")),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_back_from_their_lines() {
        let a: Address = "flotilla://chaos@127.0.0.1:2553"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        for c in [Command::Blackhole(a.clone()), Command::Heal(a)] {
            assert_eq!(parse(&c.line()), Ok(c));
        }
        assert!(parse("cut flotilla://chaos@127.0.0.1:1").is_err());
        assert!(parse("blackhole nowhere").is_err());
        assert!(parse("heal").is_err());
    }

    #[test]
    fn a_blackhole_drops_both_ways_until_healed() {
        let faults = FaultInjector::new();
        let a: Address = "flotilla://chaos@127.0.0.1:2553"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        apply(&faults, &Command::Blackhole(a.clone()));
        let rule = faults.rule(&a);
        assert!(rule.drop_inbound && rule.drop_outbound);
        apply(&faults, &Command::Heal(a.clone()));
        assert_eq!(faults.rule(&a), flotilla_remote::faults::Rule::default());
    }
}
