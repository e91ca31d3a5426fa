//! Between the runtime's address types and their wire form.

use flotilla_core::{Address, UniqueAddress};
use flotilla_wire::{WireAddress, WireUniqueAddress};

/// Why a wire address is not a usable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address on the wire: {0}")]
pub struct BadAddress(pub String);

/// The wire form of a network address; `None` for a local-only address.
pub fn to_wire(a: &Address) -> Option<WireAddress> {
    Some(WireAddress {
        system: a.system().to_owned(),
        host: a.host()?.to_owned(),
        port: a.port()?,
    })
}

/// The wire form of a unique address; `None` for a local-only address.
pub fn to_wire_unique(a: &UniqueAddress) -> Option<WireUniqueAddress> {
    Some(WireUniqueAddress {
        address: to_wire(&a.address)?,
        uid: a.uid,
    })
}

/// An address from the wire, validated.
pub fn from_wire(a: &WireAddress) -> Result<Address, BadAddress> {
    Address::remote(&a.system, &a.host, a.port).map_err(|e| BadAddress(e.to_string()))
}

/// A unique address from the wire, validated.
pub fn from_wire_unique(a: &WireUniqueAddress) -> Result<UniqueAddress, BadAddress> {
    Ok(UniqueAddress {
        address: from_wire(&a.address)?,
        uid: a.uid,
    })
}
