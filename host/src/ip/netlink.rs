//! The kernel's routing netlink, through `rtnetlink`: an interface's index,
//! state and hardware address; finding, adding and deleting an address.

use std::net::IpAddr;

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use super::vip::VipSpec;

/// An interface, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// Its hardware address (empty if it has none).
    pub mac: Vec<u8>,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            up: message.header.flags.contains(LinkFlags::Up),
            carrier: message.header.flags.contains(LinkFlags::LowerUp),
            mac: Vec::new(),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Address(mac) => link.mac.clone_from(mac),
                _ => {}
            }
        }
        link
    }
}

/// An address found on an interface.
#[derive(Debug)]
pub struct Found {
    /// Its prefix length.
    pub prefix: u8,
    /// IPv6: duplicate address detection still runs on it.
    pub tentative: bool,
    /// IPv6: duplicate address detection found another holder.
    pub dad_failed: bool,
    /// The kernel's message, to delete it with.
    pub message: AddressMessage,
}

/// A connection to the kernel's routing netlink.
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

/// One line for a netlink failure.
fn failed(what: &str, e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(message) => {
            format!("{what}: {}", message.to_io())
        }
        other => format!("{what}: {other}"),
    }
}

/// An address's flags: the 32-bit attribute when the kernel gives it, else
/// the header's 8 bits.
fn flags_of(message: &AddressMessage) -> AddressFlags {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Flags(f) => Some(*f),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_truncate(u32::from(message.header.flags.bits())))
}

/// An IPv4 address message's local address.
fn local_of(message: &AddressMessage) -> Option<IpAddr> {
    message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    })
}

/// Whether `e` is the kernel's "no such device".
fn no_device(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -19)
}

/// Whether `e` is the kernel's "exists".
fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -17)
}

impl Netlink {
    /// Opens a socket; its connection runs as a task of the runtime.
    pub fn connect() -> std::io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The interface named `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, String> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(found) => Ok(found.as_ref().map(Link::from_message)),
            Err(e) if no_device(&e) => Ok(None),
            Err(e) => Err(failed(&format!("cannot read interface {name}"), &e)),
        }
    }

    /// The address `address` on interface `index` (whatever its prefix),
    /// if it is there. IPv4 is matched on the local address only (a
    /// point-to-point address's peer is not this node's), IPv6 on the
    /// local address if the kernel gives one, else the address.
    pub async fn find_address(&self, index: u32, address: IpAddr) -> Result<Option<Found>, String> {
        for message in self.addresses(index).await? {
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let plain = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let own = if address.is_ipv4() {
                local
            } else {
                local.or(plain)
            };
            if own == Some(address) {
                let flags = flags_of(&message);
                return Ok(Some(Found {
                    prefix: message.header.prefix_len,
                    tentative: flags.contains(AddressFlags::Tentative),
                    dad_failed: flags.contains(AddressFlags::Dadfailed),
                    message,
                }));
            }
        }
        Ok(None)
    }

    /// The IPv4 addresses that the kernel would delete with `found` (a
    /// primary address: the first of its subnet on the interface): the
    /// secondaries of its subnet on interface `index`. Empty for IPv6, for
    /// a secondary, and for a primary alone in its subnet.
    pub async fn secondaries_of(&self, index: u32, found: &Found) -> Result<Vec<IpAddr>, String> {
        let Some(IpAddr::V4(primary)) = local_of(&found.message) else {
            return Ok(Vec::new());
        };
        if flags_of(&found.message).contains(AddressFlags::Secondary) {
            return Ok(Vec::new());
        }
        let network = |ip: std::net::Ipv4Addr| {
            u32::from(ip)
                .checked_shr(32 - u32::from(found.prefix))
                .unwrap_or(0)
        };
        Ok(self
            .addresses(index)
            .await?
            .iter()
            .filter(|m| flags_of(m).contains(AddressFlags::Secondary))
            .filter(|m| m.header.prefix_len == found.prefix)
            .filter_map(local_of)
            .filter(|ip| match ip {
                IpAddr::V4(ip) => *ip != primary && network(*ip) == network(primary),
                IpAddr::V6(_) => false,
            })
            .collect())
    }

    /// An IPv6 address of interface `index` that may be a source now (not
    /// tentative, not failed): link-local first, else any. A link that
    /// just came up has its link-local address tentative for a second.
    pub async fn ipv6_source(&self, index: u32) -> Result<Option<std::net::Ipv6Addr>, String> {
        let unusable = AddressFlags::Tentative | AddressFlags::Dadfailed;
        let usable: Vec<std::net::Ipv6Addr> = self
            .addresses(index)
            .await?
            .iter()
            .filter(|m| !flags_of(m).intersects(unusable))
            .flat_map(|m| &m.attributes)
            .filter_map(|a| match a {
                AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
                _ => None,
            })
            .collect();
        Ok(usable
            .iter()
            .find(|ip| ip.is_unicast_link_local())
            .or(usable.first())
            .copied())
    }

    /// Every address of interface `index`.
    async fn addresses(&self, index: u32) -> Result<Vec<AddressMessage>, String> {
        let mut addresses = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut all = Vec::new();
        loop {
            match addresses.try_next().await {
                Ok(Some(message)) if message.header.index == index => all.push(message),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(all),
                Err(e) => return Err(failed("cannot list addresses", &e)),
            }
        }
    }

    /// Adds the address of `spec` to interface `index` (with its label, and
    /// for IPv6 without duplicate address detection unless asked); "exists"
    /// is no error here: the caller looks again at what is there.
    pub async fn add_address(&self, index: u32, spec: &VipSpec) -> Result<(), String> {
        let mut request = self.handle.address().add(index, spec.address, spec.prefix);
        let message = request.message_mut();
        if let Some(label) = &spec.label {
            message
                .attributes
                .push(AddressAttribute::Label(label.clone()));
        }
        if spec.address.is_ipv6() && !spec.dad {
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => Err(failed(
                &format!(
                    "cannot add {}/{} to {}",
                    spec.address, spec.prefix, spec.interface
                ),
                &e,
            )),
        }
    }

    /// Deletes an address found by [`Netlink::find_address`]; one gone
    /// meanwhile is no error.
    pub async fn delete_address(&self, message: AddressMessage) -> Result<(), String> {
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            // EADDRNOTAVAIL or ENODEV: deleted, or the interface removed,
            // meanwhile.
            Err(rtnetlink::Error::NetlinkError(m)) if [-99, -19].contains(&m.raw_code()) => Ok(()),
            Err(e) => Err(failed("cannot delete the address", &e)),
        }
    }
}
