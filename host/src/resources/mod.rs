//! Protected resources, the host's side: the shell that runs the resource
//! brain (the `heartline-brain` crate decides; [`shell`] carries out), the
//! configuration database on disk ([`lcd`]), the recovery kits ([`kit`]),
//! running their action scripts ([`script`]) once [`trust`] finds them safe
//! to run as root, and running fence agents ([`fence`]).

pub mod fence;
pub mod kit;
pub mod lcd;
pub mod script;
pub mod shell;
pub mod trust;

pub use shell::{Handle, start};
