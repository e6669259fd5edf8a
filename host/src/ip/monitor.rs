//! Watches the kernel's link and address events (routing netlink
//! multicast), so that a lost carrier, an interface set down or removed,
//! or an address deleted under the IP kit is noticed within milliseconds
//! rather than at the next quickCheck. It decides nothing: each event names
//! an interface, and the resource manager asks the brain to check now the
//! addresses on it ([`heartline_brain::Input::CheckNow`]); the check decides,
//! as at any other time.

use std::collections::HashMap;

use futures_util::stream::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{MulticastGroup, new_multicast_connection};

/// Something happened to an interface that an address on it may depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// The interface's name.
    pub interface: String,
    /// What, in a few words: "link changed", "link removed", "address
    /// removed".
    pub what: &'static str,
}

/// Starts watching (a task on the current tokio runtime); each event goes
/// to `deliver` until it returns false. Fails only if the netlink socket
/// cannot be opened (the caller then relies on the checks' interval, and
/// says so).
pub fn spawn(mut deliver: impl FnMut(LinkEvent) -> bool + Send + 'static) -> std::io::Result<()> {
    let (connection, handle, mut messages) = new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(connection);
    tokio::spawn(async move {
        // Address events name the interface by index only.
        let mut names: HashMap<u32, String> = HashMap::new();
        let mut links = handle.link().get().execute();
        while let Ok(Some(link)) = links.try_next().await {
            if let Some(name) = name_of(&link) {
                names.insert(link.header.index, name);
            }
        }
        while let Some((message, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(message) = message.payload else {
                continue;
            };
            let (index, what) = match &message {
                RouteNetlinkMessage::NewLink(link) => {
                    if let Some(name) = name_of(link) {
                        names.insert(link.header.index, name);
                    }
                    (link.header.index, "link changed")
                }
                RouteNetlinkMessage::DelLink(link) => (link.header.index, "link removed"),
                RouteNetlinkMessage::DelAddress(address) => {
                    (address.header.index, "address removed")
                }
                _ => continue,
            };
            let Some(interface) = names.get(&index).cloned() else {
                continue;
            };
            if matches!(message, RouteNetlinkMessage::DelLink(_)) {
                names.remove(&index);
            }
            if !deliver(LinkEvent { interface, what }) {
                return;
            }
        }
        tracing::warn!(
            "the kernel's link events stopped (netlink); addresses are checked at their interval only"
        );
    });
    Ok(())
}

fn name_of(link: &rtnetlink::packet_route::link::LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}
