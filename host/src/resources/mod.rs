//! Protected resources: the configuration database shared by every node
//! ([`lcd`]), the resource manager that brings hierarchies in and out of
//! service, checks, recovers and fails them over ([`manager`]), the
//! administrative channel between the nodes' resource managers
//! ([`remote`]), the recovery kits ([`kit`]) and running their action
//! scripts ([`script`]).

pub mod kit;
pub mod lcd;
pub mod manager;
pub mod remote;
pub mod script;

pub use manager::{Handle, Input, start};
