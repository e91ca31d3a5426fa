//! Node addresses.
//!
//! An [`Address`] names an actor system: `flotilla://<system>` for a local-only system, or
//! `flotilla://<system>@<host>:<port>` for one reachable over the network. A [`UniqueAddress`] adds
//! the incarnation UID drawn when the system starts, so two runs of the same node on the same
//! host and port are told apart: quarantine targets one incarnation, never a host and port.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The URI scheme of every Flotilla address.
pub const SCHEME: &str = "flotilla";

/// Where an actor system lives.
///
/// Cloning is cheap (two reference counts, no allocation): remoting tags every inbound message
/// with its sender's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    system: Arc<str>,
    host_port: Option<(Arc<str>, u16)>,
}

/// Why a string is not a valid [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressParseError {
    /// The text does not start with `flotilla://`.
    #[error("address {0:?} must start with \"flotilla://\"")]
    Scheme(String),
    /// The system name is empty or holds characters other than ASCII letters, digits, `-`, `_`.
    #[error("invalid actor system name {0:?}: use ASCII letters, digits, '-' or '_'")]
    SystemName(String),
    /// The host is empty or the port is not a number from 0 to 65535.
    #[error("invalid host:port {0:?}")]
    HostPort(String),
    /// A unique address without `#<uid>` at its end, or with a UID that is not a number.
    #[error("unique address {0:?} must end with #<incarnation uid>")]
    Uid(String),
}

/// Checks an actor system name: non-empty ASCII letters, digits, `-` and `_`.
pub fn validate_system_name(name: &str) -> Result<(), AddressParseError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AddressParseError::SystemName(name.to_owned()))
    }
}

impl Address {
    /// A local-only address `flotilla://<system>`.
    pub fn local(system: &str) -> Result<Self, AddressParseError> {
        validate_system_name(system)?;
        Ok(Self {
            system: system.into(),
            host_port: None,
        })
    }

    /// A network address `flotilla://<system>@<host>:<port>`.
    pub fn remote(system: &str, host: &str, port: u16) -> Result<Self, AddressParseError> {
        validate_system_name(system)?;
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(AddressParseError::HostPort(format!("{host}:{port}")));
        }
        Ok(Self {
            system: system.into(),
            host_port: Some((host.into(), port)),
        })
    }

    /// The actor system's name.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// The host, for a network address.
    pub fn host(&self) -> Option<&str> {
        self.host_port.as_ref().map(|(h, _)| &**h)
    }

    /// The port, for a network address.
    pub fn port(&self) -> Option<u16> {
        self.host_port.as_ref().map(|(_, p)| *p)
    }

    /// True for an address without host and port.
    pub fn is_local(&self) -> bool {
        self.host_port.is_none()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host_port {
            None => write!(f, "{SCHEME}://{}", self.system),
            Some((host, port)) => write!(f, "{SCHEME}://{}@{host}:{port}", self.system),
        }
    }
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("flotilla://")
            .ok_or_else(|| AddressParseError::Scheme(s.to_owned()))?;
        match rest.split_once('@') {
            None => Self::local(rest),
            Some((system, host_port)) => {
                let (host, port) = host_port
                    .rsplit_once(':')
                    .ok_or_else(|| AddressParseError::HostPort(host_port.to_owned()))?;
                let port = port
                    .parse()
                    .map_err(|_| AddressParseError::HostPort(host_port.to_owned()))?;
                Self::remote(system, host, port)
            }
        }
    }
}

/// An [`Address`] plus the incarnation UID of one run of that node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UniqueAddress {
    /// Where the node lives.
    pub address: Address,
    /// The random 64-bit UID the node drew when it started.
    pub uid: u64,
}

impl fmt::Display for UniqueAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.address, self.uid)
    }
}

impl FromStr for UniqueAddress {
    type Err = AddressParseError;

    /// Parses what [`Display`](fmt::Display) writes: `flotilla://system@host:port#uid`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddressParseError::Uid(s.to_owned());
        let (address, uid) = s.rsplit_once('#').ok_or_else(bad)?;
        let uid = uid.parse().map_err(|_| bad())?;
        Ok(Self {
            address: address.parse()?,
            uid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_remote_round_trip() {
        for text in [
            "flotilla://demo",
            "flotilla://demo@127.0.0.1:2552",
            "flotilla://a-b_c@host:0",
        ] {
            let addr: Address = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        let addr: Address = "flotilla://demo@10.0.0.1:25520".parse().unwrap();
        assert_eq!(addr.system(), "demo");
        assert_eq!(addr.host(), Some("10.0.0.1"));
        assert_eq!(addr.port(), Some(25520));
        assert!(!addr.is_local());
        let unique: UniqueAddress = "flotilla://demo@10.0.0.1:25520#18446744073709551615"
            .parse()
            .unwrap();
        assert_eq!(unique.uid, u64::MAX);
        assert_eq!(unique.address, addr);
        assert_eq!(unique.to_string().parse::<UniqueAddress>(), Ok(unique));
        for bad in [
            "flotilla://demo@h:1",
            "flotilla://demo@h:1#x",
            "flotilla://demo@h:1#",
        ] {
            assert_eq!(
                bad.parse::<UniqueAddress>(),
                Err(AddressParseError::Uid(bad.into()))
            );
        }
    }

    #[test]
    fn bad_addresses_are_refused_with_a_reason() {
        assert_eq!(
            "akka://demo".parse::<Address>(),
            Err(AddressParseError::Scheme("akka://demo".into()))
        );
        assert!(matches!(
            "flotilla://".parse::<Address>(),
            Err(AddressParseError::SystemName(_))
        ));
        assert!(matches!(
            "flotilla://sys@host".parse::<Address>(),
            Err(AddressParseError::HostPort(_))
        ));
        assert!(matches!(
            "flotilla://sys@host:70000".parse::<Address>(),
            Err(AddressParseError::HostPort(_))
        ));
        assert!(matches!(
            "flotilla://s y s".parse::<Address>(),
            Err(AddressParseError::SystemName(_))
        ));
    }

    #[test]
    fn unique_address_shows_the_uid() {
        let ua = UniqueAddress {
            address: Address::local("sys").unwrap(),
            uid: 42,
        };
        assert_eq!(ua.to_string(), "flotilla://sys#42");
    }
}
