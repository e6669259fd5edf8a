//! Guest application monitoring, after Serviceguard's cmappserver and
//! cmappmgr: `appserver` runs on a guest (a VM, a container, another host)
//! and starts and watches commands for `appmgr` on a cluster node, over
//! mutually authenticated TLS on TCP port 5315, so the cluster can protect
//! applications it cannot see directly. The `gen/appmon` recovery kit makes
//! such an application a cluster resource.

pub mod cli;
#[cfg(unix)]
pub mod gate;
pub mod manager;
pub mod proto;
#[cfg(unix)]
pub mod server;
#[cfg(unix)]
pub mod table;
pub mod tls;
