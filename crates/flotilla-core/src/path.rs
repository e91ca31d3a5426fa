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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorPath {
    address: Arc<Address>,
    elements: Arc<[String]>,
}

impl ActorPath {
    /// The root path `flotilla://system/` of a system.
    pub fn root(address: Address) -> Self {
        Self {
            address: Arc::new(address),
            elements: Arc::from(Vec::new()),
        }
    }

    /// The path of a child called `name`. The name is not validated here: the runtime validates
    /// user-chosen names and generates the reserved ones.
    pub fn child(&self, name: &str) -> Self {
        let mut elements = self.elements.to_vec();
        elements.push(name.to_owned());
        Self {
            address: Arc::clone(&self.address),
            elements: Arc::from(elements),
        }
    }

    /// The system address this path belongs to.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The names from the root down.
    pub fn elements(&self) -> &[String] {
        &self.elements
    }

    /// The last element (the actor's own name), or `""` for the root.
    pub fn name(&self) -> &str {
        self.elements.last().map_or("", String::as_str)
    }

    /// The parent's path; the root is its own parent.
    pub fn parent(&self) -> Self {
        let n = self.elements.len().saturating_sub(1);
        Self {
            address: Arc::clone(&self.address),
            elements: Arc::from(&self.elements[..n]),
        }
    }
}

impl fmt::Display for ActorPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)?;
        if self.elements.is_empty() {
            return f.write_str("/");
        }
        for e in self.elements.iter() {
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
