//! What a node and a quorum witness (`heartline witness`) say to each
//! other, on the reserved mailbox [`WITNESS_MAILBOX`] of the protocol's
//! reliable channel: JSON, versioned like the admin messages. A node asks
//! for the vote naming its partition and when it asked (its own clock,
//! echoed back, so a late answer is judged by the request it answers); the
//! witness says whether the vote is that partition's.

use serde::{Deserialize, Serialize};

pub use heartline_brain::message::WITNESS_MAILBOX;

/// The format this build speaks.
pub const VERSION: u64 = 1;

/// A node asks for the vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// [`VERSION`].
    pub version: u64,
    /// The nodes the asker sees up, itself included.
    pub view: Vec<u16>,
    /// When it asked, in µs of its own clock (echoed back).
    pub sent_us: u64,
}

/// The witness answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteAnswer {
    /// [`VERSION`].
    pub version: u64,
    /// The request's view.
    pub view: Vec<u16>,
    /// The request's `sent_us`.
    pub sent_us: u64,
    /// Whether the vote is that view's.
    pub granted: bool,
    /// The partition holding the vote now (empty: none).
    pub holder: Vec<u16>,
}

/// Encodes a message.
#[must_use]
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).unwrap_or_default()
}

/// Decodes a message, refusing another version with a clear reason.
pub fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<u64>,
    }
    let versioned: Versioned =
        serde_json::from_slice(bytes).map_err(|e| format!("not a witness message: {e}"))?;
    match versioned.version {
        Some(VERSION) => {
            serde_json::from_slice(bytes).map_err(|e| format!("a malformed witness message: {e}"))
        }
        Some(v) => Err(format!(
            "witness message version {v}; this build speaks {VERSION}"
        )),
        None => Err("a witness message without a version".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_other_versions_are_refused() {
        let request = VoteRequest {
            version: VERSION,
            view: vec![1, 2],
            sent_us: 5,
        };
        assert_eq!(decode::<VoteRequest>(&encode(&request)), Ok(request));
        let e = decode::<VoteRequest>(br#"{"version":9,"view":[1],"sent_us":1}"#).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        assert!(decode::<VoteAnswer>(b"garbage").is_err());
        assert!(decode::<VoteAnswer>(br#"{"view":[1]}"#).is_err());
    }
}
