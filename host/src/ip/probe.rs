//! Whether another host already answers for an address, before this node
//! adds it: for IPv4 an ARP probe (sender address 0.0.0.0, as RFC 5227
//! has it, so that no cache learns anything from it), for IPv6 a neighbour
//! solicitation to the address's solicited-node group; any answer for it
//! within the bounded wait is a conflict. Both are sent twice, at once and
//! halfway through the wait.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use pnet_packet::Packet;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmpv6::Icmpv6Types;
use pnet_packet::icmpv6::ndp::NeighborAdvertPacket;

use super::announce::{arp_frame, icmpv6_socket, mac_of, solicitation};
use super::netlink::Link;

/// Who answers for `address` on `link` within `wait` (its hardware or
/// link-local address), if anyone does.
pub async fn answered(
    nl: &super::netlink::Netlink,
    link: &Link,
    address: IpAddr,
    wait: Duration,
) -> Result<Option<String>, String> {
    let (on, name) = (link.clone(), link.name.clone());
    let source = match address {
        IpAddr::V4(_) => None,
        IpAddr::V6(_) => Some(ipv6_source(nl, link, address).await?),
    };
    tokio::task::spawn_blocking(move || match (address, source) {
        (IpAddr::V4(ip), _) => arp_probe(&on, ip, wait),
        (IpAddr::V6(ip), Some(source)) => nd_probe(&on, source, ip, wait),
        (IpAddr::V6(_), None) => Ok(None),
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot probe for {address} on {name}: {e}"))
}

/// An IPv6 source for the probe on `link`: a link that just came up has
/// its link-local address tentative for about a second, so this waits up
/// to two seconds for one.
async fn ipv6_source(
    nl: &super::netlink::Netlink,
    link: &Link,
    address: IpAddr,
) -> Result<Ipv6Addr, String> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(source) = nl.ipv6_source(link.index).await? {
            return Ok(source);
        }
        if Instant::now() >= until {
            return Err(format!(
                "cannot probe for {address} on {}: it has no usable IPv6 address (its link-local one still tentative 2 s on), so {address} was not added",
                link.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A packet channel on `link`, whose reads wait at most `read_timeout`.
fn channel(
    link: &Link,
    read_timeout: Duration,
) -> std::io::Result<(
    Box<dyn pnet_datalink::DataLinkSender>,
    Box<dyn pnet_datalink::DataLinkReceiver>,
)> {
    let interface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.index == link.index)
        .ok_or_else(|| std::io::Error::other(format!("{} is gone", link.name)))?;
    // Not promiscuous (the default would flip the interface in and out of
    // promiscuous mode at every frame), and a send that cannot go out gives
    // up rather than hang its thread.
    let config = pnet_datalink::Config {
        read_timeout: Some(read_timeout),
        write_timeout: Some(Duration::from_millis(500)),
        promiscuous: false,
        ..pnet_datalink::Config::default()
    };
    match pnet_datalink::channel(&interface, config)? {
        pnet_datalink::Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => Err(std::io::Error::other("not an Ethernet channel")),
    }
}

/// Sends one Ethernet frame on `link`.
pub fn send_frame(link: &Link, frame: &[u8]) -> std::io::Result<()> {
    let (mut tx, _) = channel(link, Duration::from_millis(1))?;
    tx.send_to(frame, None)
        .unwrap_or_else(|| Err(std::io::Error::other("nothing was sent")))
}

fn arp_probe(link: &Link, address: Ipv4Addr, wait: Duration) -> std::io::Result<Option<String>> {
    let mac = mac_of(link)?;
    let (mut tx, mut rx) = channel(link, Duration::from_millis(10))?;
    let probe = arp_frame(&mac, ArpOperations::Request, Ipv4Addr::UNSPECIFIED, address);
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < wait {
        if sent == 0 || (sent == 1 && started.elapsed() >= wait / 2) {
            tx.send_to(&probe, None)
                .unwrap_or_else(|| Err(std::io::Error::other("nothing was sent")))?;
            sent += 1;
        }
        let frame = match rx.next() {
            Ok(frame) => frame,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(e),
        };
        let Some(ethernet) = EthernetPacket::new(frame) else {
            continue;
        };
        if ethernet.get_ethertype() != EtherTypes::Arp {
            continue;
        }
        let Some(arp) = ArpPacket::new(ethernet.payload()) else {
            continue;
        };
        if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
            || arp.get_protocol_type() != EtherTypes::Ipv4
            || arp.get_hw_addr_len() != 6
            || arp.get_proto_addr_len() != 4
        {
            continue;
        }
        let from = arp.get_sender_hw_addr();
        if from.octets() == mac {
            continue;
        }
        if arp.get_sender_proto_addr() == address {
            return Ok(Some(from.to_string()));
        }
        // Another host probing for the same address at the same moment
        // (RFC 5227): neither may take it.
        if arp.get_sender_proto_addr() == Ipv4Addr::UNSPECIFIED
            && arp.get_target_proto_addr() == address
            && arp.get_operation() == ArpOperations::Request
        {
            return Ok(Some(format!("{from} (probing for it at the same moment)")));
        }
    }
    Ok(None)
}

fn nd_probe(
    link: &Link,
    source: Ipv6Addr,
    address: Ipv6Addr,
    wait: Duration,
) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let socket = icmpv6_socket(link)?;
    let scope = if source.is_unicast_link_local() {
        link.index
    } else {
        0
    };
    socket.bind(&std::net::SocketAddrV6::new(source, 0, 0, scope).into())?;
    socket.set_read_timeout(Some(Duration::from_millis(10)))?;
    let (packet, group) = solicitation(link, address)?;
    let started = Instant::now();
    let mut sent = 0;
    let mut buffer = [0u8; 1500];
    while started.elapsed() < wait {
        if sent == 0 || (sent == 1 && started.elapsed() >= wait / 2) {
            socket.send_to(&packet, &group.into())?;
            sent += 1;
        }
        // Who sent the next message, then the message itself.
        let from = match socket.peek_sender() {
            Ok(from) => from,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let len = (&socket).read(&mut buffer)?;
        let Some(advert) = NeighborAdvertPacket::new(&buffer[..len]) else {
            continue;
        };
        if advert.get_icmpv6_type() == Icmpv6Types::NeighborAdvert
            && advert.get_target_addr() == address
        {
            let who = from
                .as_socket_ipv6()
                .map_or_else(|| "another host".to_string(), |a| a.ip().to_string());
            return Ok(Some(who));
        }
    }
    Ok(None)
}
