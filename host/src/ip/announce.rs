//! Telling the segment where an address now lives: gratuitous ARP for
//! IPv4 (a broadcast ARP request whose sender and target are the address,
//! with this interface's hardware address), unsolicited neighbour
//! advertisements for IPv6 (to all nodes, with the override flag, the
//! router flag where the node forwards IPv6, and the
//! target link-layer address), so that clients and switches move to this
//! node at once rather than when their caches expire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};

use pnet_datalink::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperation, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, MutableNeighborSolicitPacket, NdpOption, NdpOptionTypes,
    NeighborAdvertFlags,
};
use pnet_packet::icmpv6::{Icmpv6Code, Icmpv6Types};

use super::netlink::Link;
use super::vip::VipSpec;

/// Sends the announcements `spec` asks for; one phrase saying what was
/// sent (a failure is said, not returned: the address is in place).
pub async fn announce(link: &Link, spec: &VipSpec) -> String {
    if spec.announce_count == 0 {
        return "not announced (announce_count = 0)".into();
    }
    let kind = if spec.address.is_ipv4() {
        "gratuitous ARP"
    } else {
        "unsolicited neighbour advertisement"
    };
    for sent in 0..spec.announce_count {
        if sent > 0 {
            tokio::time::sleep(spec.announce_interval).await;
        }
        let (link, address) = (link.clone(), spec.address);
        let result = tokio::task::spawn_blocking(move || send_once(&link, address))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = result {
            return format!("the {kind} could not be sent: {e}");
        }
    }
    format!(
        "{} {kind}{} sent",
        spec.announce_count,
        if spec.announce_count == 1 { "" } else { "s" }
    )
}

fn send_once(link: &Link, address: IpAddr) -> std::io::Result<()> {
    match address {
        IpAddr::V4(ip) => {
            let frame = arp_frame(&mac_of(link)?, ArpOperations::Request, ip, ip);
            super::probe::send_frame(link, &frame)
        }
        IpAddr::V6(ip) => send_advert(link, ip),
    }
}

/// The interface's hardware address, or why there is none.
pub fn mac_of(link: &Link) -> std::io::Result<[u8; 6]> {
    <[u8; 6]>::try_from(link.mac.as_slice()).map_err(|_| {
        std::io::Error::other(format!(
            "{} has no Ethernet address to announce from",
            link.name
        ))
    })
}

/// A broadcast Ethernet frame carrying an ARP `operation` from `mac`,
/// sender `sender`, asking for `target`.
pub fn arp_frame(
    mac: &[u8; 6],
    operation: ArpOperation,
    sender: Ipv4Addr,
    target: Ipv4Addr,
) -> Vec<u8> {
    let mut frame = vec![0u8; 42];
    let mac = MacAddr::from(*mac);
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(MacAddr::broadcast());
        ethernet.set_source(mac);
        ethernet.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = MutableArpPacket::new(&mut frame[14..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(operation);
        arp.set_sender_hw_addr(mac);
        arp.set_sender_proto_addr(sender);
        arp.set_target_hw_addr(MacAddr::zero());
        arp.set_target_proto_addr(target);
    }
    frame
}

/// An ICMPv6 socket on `link` whose packets have the hop limit neighbour
/// discovery requires (255).
pub fn icmpv6_socket(link: &Link) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(link.index)?;
    socket.bind_device(Some(link.name.as_bytes()))?;
    Ok(socket)
}

fn send_advert(link: &Link, target: Ipv6Addr) -> std::io::Result<()> {
    let mac = mac_of(link)?;
    let socket = icmpv6_socket(link)?;
    // From the address itself where the kernel allows it (it is on this
    // interface, without duplicate address detection); else the kernel
    // picks the link-local one.
    let _ = socket.bind(&SocketAddrV6::new(target, 0, 0, 0).into());
    let mut packet = vec![0u8; 32];
    if let Some(mut advert) = MutableNeighborAdvertPacket::new(&mut packet) {
        advert.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        advert.set_icmpv6_code(Icmpv6Code(0));
        let router = if forwards_ipv6(&link.name) {
            NeighborAdvertFlags::Router
        } else {
            0
        };
        advert.set_flags(NeighborAdvertFlags::Override | router);
        advert.set_target_addr(target);
        advert.set_options(&[NdpOption {
            option_type: NdpOptionTypes::TargetLLAddr,
            length: 1,
            data: mac.to_vec(),
        }]);
    }
    // The kernel fills in the checksum of a raw ICMPv6 socket.
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, link.index);
    socket.send_to(&packet, &all_nodes.into())?;
    Ok(())
}

/// Whether this node routes IPv6 on `interface` (its `forwarding` sysctl):
/// then its advertisements carry the router flag, as RFC 4861 wants. An
/// advertisement without it makes hosts drop the sender from their
/// default routers, which for a VIP that is the segment's gateway would cut
/// their way out.
fn forwards_ipv6(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/forwarding"))
        .is_ok_and(|v| v.trim() == "1")
}

/// A neighbour solicitation for `target`, with this interface's hardware
/// address as its source link-layer address: sent to `target`'s
/// solicited-node multicast address by [`super::probe`].
pub fn solicitation(link: &Link, target: Ipv6Addr) -> std::io::Result<(Vec<u8>, SocketAddrV6)> {
    let mac = mac_of(link)?;
    let mut packet = vec![0u8; 32];
    if let Some(mut solicit) = MutableNeighborSolicitPacket::new(&mut packet) {
        solicit.set_icmpv6_type(Icmpv6Types::NeighborSolicit);
        solicit.set_icmpv6_code(Icmpv6Code(0));
        solicit.set_target_addr(target);
        solicit.set_options(&[NdpOption {
            option_type: NdpOptionTypes::SourceLLAddr,
            length: 1,
            data: mac.to_vec(),
        }]);
    }
    let o = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    Ok((packet, SocketAddrV6::new(group, 0, 0, link.index)))
}
