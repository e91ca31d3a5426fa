//! Actor paths: `flotilla://<system>@<host>:<port>/user/<a>/<b>`.
//!
//! The first element below the root is the guardian: `user` for application actors, `system` for
//! the runtime's own. A path names a location; two actors that lived at the same path one after
//! the other are told apart by the runtime's actor id, not by the path.

use std::fmt;
use std::sync::Arc;

use crate::address::Address;

/// Why a name cannot be used for an actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid actor name {name:?}: names are non-empty, at most 255 bytes, may not start with '$' \
     and use only ASCII letters, digits and -_.*$+:@&=,!~';"
)]
pub struct InvalidActorName {
    /// The refused name.
    pub name: String,
}

/// Checks a user-chosen actor name. Names starting with `$` are reserved for generated names.
pub fn validate_actor_name(name: &str) -> Result<(), InvalidActorName> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('$')
        && name.bytes().all(is_name_byte);
    if ok {
        Ok(())
    } else {
        Err(InvalidActorName {
            name: name.to_owned(),
        })
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.*$+:@&=,!~';".contains(&b)
}

/// The location of one actor: the system's address plus the names from the root down.
///
/// Stored as a linked list towards the root, so a child's path costs one allocation however deep
/// it is, and cloning a path is a reference-count increment.
#[derive(Clone)]
pub struct ActorPath {
    node: Arc<Node>,
}

struct Node {
    address: Arc<Address>,
    parent: Option<ActorPath>,
    name: String,
    depth: usize,
}

impl ActorPath {
    /// The root path `flotilla://system/` of a system.
    pub fn root(address: Address) -> Self {
        let node = Node {
            address: Arc::new(address),
            parent: None,
            name: String::new(),
            depth: 0,
        };
        Self {
            node: Arc::new(node),
        }
    }

    /// The path of a child called `name`. The name is not validated here: the runtime validates
    /// user-chosen names and generates the reserved ones.
    pub fn child(&self, name: &str) -> Self {
        let node = Node {
            address: Arc::clone(&self.node.address),
            parent: Some(self.clone()),
            name: name.to_owned(),
            depth: self.node.depth + 1,
        };
        Self {
            node: Arc::new(node),
        }
    }

    /// The system address this path belongs to.
    pub fn address(&self) -> &Address {
        &self.node.address
    }

    /// The names from the root down.
    pub fn elements(&self) -> Vec<&str> {
        let mut out = Vec::with_capacity(self.node.depth);
        let mut at = self;
        while let Some(parent) = &at.node.parent {
            out.push(at.node.name.as_str());
            at = parent;
        }
        out.reverse();
        out
    }

    /// The last element (the actor's own name), or `""` for the root.
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// The parent's path; the root is its own parent.
    pub fn parent(&self) -> Self {
        self.node.parent.clone().unwrap_or_else(|| self.clone())
    }
}

impl PartialEq for ActorPath {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.node, &other.node)
            || (self.node.depth == other.node.depth
                && self.node.name == other.node.name
                && self.node.address == other.node.address
                && self.node.parent == other.node.parent)
    }
}

impl Eq for ActorPath {}

impl PartialOrd for ActorPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ActorPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.address(), self.elements()).cmp(&(other.address(), other.elements()))
    }
}

impl std::hash::Hash for ActorPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.address().hash(state);
        self.elements().hash(state);
    }
}

impl fmt::Display for ActorPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.node.address)?;
        if self.node.depth == 0 {
            return f.write_str("/");
        }
        for e in self.elements() {
            write!(f, "/{e}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ActorPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_uris() {
        let root = ActorPath::root(Address::remote("sys", "127.0.0.1", 2552).unwrap());
        assert_eq!(root.to_string(), "flotilla://sys@127.0.0.1:2552/");
        let b = root.child("user").child("a").child("b");
        assert_eq!(b.to_string(), "flotilla://sys@127.0.0.1:2552/user/a/b");
        assert_eq!(b.name(), "b");
        assert_eq!(
            b.parent().to_string(),
            "flotilla://sys@127.0.0.1:2552/user/a"
        );
        assert_eq!(root.parent(), root);
        assert_eq!(b.elements(), vec!["user", "a", "b"]);
        let again = root.child("user").child("a").child("b");
        assert_eq!(again, b, "equal by value, not by identity");
        assert_ne!(root.child("user").child("b").child("b"), b);
        let mut sorted = [
            b,
            root.child("user"),
            root.child("system"),
            root.child("user").child("a"),
        ];
        sorted.sort();
        let shown: Vec<String> = sorted.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "flotilla://sys@127.0.0.1:2552/system",
                "flotilla://sys@127.0.0.1:2552/user",
                "flotilla://sys@127.0.0.1:2552/user/a",
                "flotilla://sys@127.0.0.1:2552/user/a/b",
            ]
        );
        let local = ActorPath::root(Address::local("sys").unwrap()).child("system");
        assert_eq!(local.to_string(), "flotilla://sys/system");
    }

    #[test]
    fn names_are_validated() {
        for ok in ["worker", "worker-1", "a.b", "x:y@z"] {
            assert!(validate_actor_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "$a", "a/b", "a b", "é", &"x".repeat(256)] {
            assert!(validate_actor_name(bad).is_err(), "{bad}");
        }
    }
}
