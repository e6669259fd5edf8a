//! What a recovery kit's scripts do to a resource.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One of a kit's action scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Brings the resource in service.
    Restore,
    /// Takes it out of service.
    Remove,
    /// Checks, quickly, that it is still in service.
    QuickCheck,
    /// Tries to repair it in place after a failed check.
    Recover,
    /// Cleans up when the resource is deleted from the hierarchy.
    Delete,
}

impl Action {
    /// Every action, in the order a kit's problems are reported.
    pub const ALL: [Action; 5] = [
        Action::Restore,
        Action::Remove,
        Action::QuickCheck,
        Action::Recover,
        Action::Delete,
    ];

    /// The script's file name under a kit's `actions/`.
    #[must_use]
    pub fn file_name(&self) -> &'static str {
        match self {
            Action::Restore => "restore",
            Action::Remove => "remove",
            Action::QuickCheck => "quickCheck",
            Action::Recover => "recover",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}
