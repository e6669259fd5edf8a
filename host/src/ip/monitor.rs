//! Watches the kernel's link and address events (routing netlink
//! multicast), so that a lost carrier, an interface set down or removed,
//! or an address deleted under the IP kit is noticed within milliseconds
//! rather than at the next quickCheck. It decides nothing: each event names
//! an interface, and the resource manager asks the brain to check now the
//! addresses on it ([`heartline_brain::Input::CheckNow`]); the check decides,
//! as at any other time.
//!
//! Events the kernel could not deliver (the socket's buffer full: netlink's
//! overrun) and a connection that ended are made up for by an event on
//! every interface: everything is checked. A connection that ended is
//! opened again, backing off from 1 s to 30 s.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::stream::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, MulticastGroup, new_multicast_connection};

/// Something happened to an interface that an address on it may depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// The interface's name.
    pub interface: String,
    /// What, in a few words: "link changed", "link renamed" (given the old
    /// name), "link removed", "address removed", "events lost", "events
    /// resumed".
    pub what: &'static str,
}

/// Opens the socket, its connection a task of the current runtime.
fn connect() -> std::io::Result<(
    Handle,
    impl futures_util::Stream<
        Item = (
            NetlinkMessage<RouteNetlinkMessage>,
            rtnetlink::sys::SocketAddr,
        ),
    > + Unpin
    + Send,
)> {
    let (connection, handle, messages) = new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(connection);
    Ok((handle, messages))
}

/// Starts watching (a task on the current tokio runtime); each event goes
/// to `deliver` until it returns false. Fails only if the first netlink
/// socket cannot be opened (the caller then relies on the checks' interval,
/// and says so).
pub fn spawn(mut deliver: impl FnMut(LinkEvent) -> bool + Send + 'static) -> std::io::Result<()> {
    let first = connect()?;
    tokio::spawn(async move {
        let mut next = Some(first);
        let mut backoff = Duration::from_secs(1);
        let mut resumed = false;
        loop {
            let (handle, mut messages) = match next.take().map_or_else(connect, Ok) {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::warn!(
                        "cannot watch the kernel's link events again ({e}); trying in {}",
                        humantime::format_duration(backoff)
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            // Address events name the interface by index only.
            let mut names = interfaces(&handle).await;
            if resumed {
                tracing::info!("watching the kernel's link events again: checking every address");
                if !every(&names, "events resumed", &mut deliver) {
                    return;
                }
            }
            while let Some((message, _)) = messages.next().await {
                backoff = Duration::from_secs(1);
                let message = match message.payload {
                    NetlinkPayload::InnerMessage(message) => message,
                    NetlinkPayload::Overrun(_) => {
                        tracing::warn!(
                            "the kernel's link events came faster than they were read and some were lost: checking every address"
                        );
                        names = interfaces(&handle).await;
                        if !every(&names, "events lost", &mut deliver) {
                            return;
                        }
                        continue;
                    }
                    _ => continue,
                };
                let (index, what) = match &message {
                    RouteNetlinkMessage::NewLink(link) => {
                        let renamed = name_of(link).and_then(|name| {
                            names
                                .insert(link.header.index, name.clone())
                                .filter(|old| *old != name)
                        });
                        // An address configured on the old name has lost
                        // its interface: its check says so.
                        if let Some(old) = renamed {
                            if !deliver(LinkEvent {
                                interface: old,
                                what: "link renamed",
                            }) {
                                return;
                            }
                        }
                        (link.header.index, "link changed")
                    }
                    RouteNetlinkMessage::DelLink(link) => (link.header.index, "link removed"),
                    RouteNetlinkMessage::DelAddress(address) => {
                        (address.header.index, "address removed")
                    }
                    _ => continue,
                };
                let interface = if matches!(message, RouteNetlinkMessage::DelLink(_)) {
                    names.remove(&index)
                } else {
                    names.get(&index).cloned()
                };
                let Some(interface) = interface else {
                    continue;
                };
                if !deliver(LinkEvent { interface, what }) {
                    return;
                }
            }
            tracing::warn!(
                "the kernel's link events stopped (netlink); watching again in {}, meanwhile addresses are checked at their interval",
                humantime::format_duration(backoff)
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            resumed = true;
        }
    });
    Ok(())
}

/// Every interface's name, by index; what could be read if the listing
/// fails part way (said in the log).
async fn interfaces(handle: &Handle) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    let mut links = handle.link().get().execute();
    loop {
        match links.try_next().await {
            Ok(Some(link)) => {
                if let Some(name) = name_of(&link) {
                    names.insert(link.header.index, name);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(
                    "cannot list the interfaces for the link monitor ({e}): events on those not listed go unnoticed until their addresses' next check"
                );
                break;
            }
        }
    }
    names
}

/// An event on every interface in `names`; false once `deliver` is done.
fn every(
    names: &HashMap<u32, String>,
    what: &'static str,
    deliver: &mut impl FnMut(LinkEvent) -> bool,
) -> bool {
    names.values().all(|interface| {
        deliver(LinkEvent {
            interface: interface.clone(),
            what,
        })
    })
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}
