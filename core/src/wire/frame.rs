//! Whole frames: header, body, tag and CRC, COBS-encoded. The checks run in
//! the order the spec in [`crate::wire`] lists.

use crc::{CRC_32_ISO_HDLC, Crc, Table};

use super::auth::{Key, TAG_LEN};
use super::error::{EncodeError, WireError};
use super::header::{CRC_LEN, HEADER_LEN, Header, Kind, VERSION, le32};
use super::message::{Message, Provision};
use super::{MAX_ENCODED_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN};
use crate::ids::ClusterId;

/// Hosts (`std`) spend 16 KiB on slice-by-16 tables for speed; the dongle
/// keeps the 1 KiB bytewise table.
#[cfg(feature = "std")]
const CRC32: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISO_HDLC);
#[cfg(not(feature = "std"))]
const CRC32: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC_32_ISO_HDLC);

/// Encodes one frame into `out`: COBS bytes followed by the `0x00` delimiter.
/// Returns the number of bytes written. `header.kind` is taken from `message`.
pub fn encode(
    header: &Header,
    message: &Message<'_>,
    key: &Key,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut raw = [0u8; MAX_FRAME_LEN];
    let header = Header {
        kind: message.kind(),
        ..*header
    };
    let (head, rest) = raw.split_at_mut(HEADER_LEN);
    let head: &mut [u8; HEADER_LEN] = head.try_into().map_err(|_| EncodeError::BufferTooSmall)?;
    header.emit(head);
    let body_len = message.encode_body(&mut rest[..MAX_FRAME_LEN - MIN_FRAME_LEN])?;
    let tag_at = HEADER_LEN + body_len;
    let tag = key.tag(&raw[..tag_at]);
    raw[tag_at..tag_at + TAG_LEN].copy_from_slice(&tag);
    let crc_at = tag_at + TAG_LEN;
    let crc = CRC32.checksum(&raw[..crc_at]);
    raw[crc_at..crc_at + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    let raw = &raw[..crc_at + CRC_LEN];

    let written = cobs::try_encode(raw, out).map_err(|_| EncodeError::BufferTooSmall)?;
    let delimiter = out.get_mut(written).ok_or(EncodeError::BufferTooSmall)?;
    *delimiter = 0;
    Ok(written + 1)
}

/// Decodes and verifies one frame. `frame` holds the COBS bytes of one frame
/// without its delimiter (as [`super::FrameReader`] yields them); it is
/// decoded in place, and the returned message borrows from it.
pub fn decode<'a>(
    frame: &'a mut [u8],
    key: &Key,
    cluster: ClusterId,
) -> Result<(Header, Message<'a>), WireError> {
    let raw = unframe(frame)?;
    let cluster_in_frame = ClusterId(le32(raw, 4));
    if cluster_in_frame != cluster {
        return Err(WireError::WrongCluster(cluster_in_frame));
    }
    let kind = Kind::from_u8(raw[1]).ok_or(WireError::UnknownKind(raw[1]))?;
    let (signed, tag) = split_tag(raw);
    if !key.verify(signed, tag) {
        return Err(WireError::BadTag);
    }
    let (header, body) = split_header(signed, kind)?;
    let message = Message::decode_body(kind, body)?;
    Ok((header, message))
}

/// Decodes a provisioning frame for a dongle that may not know its cluster
/// or key yet: the cluster is taken as it comes, and the tag must verify
/// under the key the body carries. What that proves, and what it does not,
/// is under "Provisioning" in [`crate::wire`]. A frame of another kind is
/// `UnknownKind`.
pub fn decode_provision(frame: &mut [u8]) -> Result<(Header, Provision<'_>), WireError> {
    let raw = unframe(frame)?;
    if raw[1] != Kind::Provision as u8 {
        return Err(WireError::UnknownKind(raw[1]));
    }
    let (signed, tag) = split_tag(raw);
    let (header, body) = split_header(signed, Kind::Provision)?;
    let Message::Provision(provision) = Message::decode_body(Kind::Provision, body)? else {
        return Err(WireError::Malformed);
    };
    let key = Key::new(provision.secret).map_err(|_| WireError::Malformed)?;
    if !key.verify(signed, tag) {
        return Err(WireError::BadTag);
    }
    Ok((header, provision))
}

/// Undoes the COBS encoding in place and checks length, CRC and version:
/// the checks that need no key.
fn unframe(frame: &mut [u8]) -> Result<&[u8], WireError> {
    if frame.len() >= MAX_ENCODED_LEN {
        return Err(WireError::Oversize);
    }
    if frame.is_empty() {
        return Err(WireError::Truncated);
    }
    if frame.contains(&0) {
        return Err(WireError::Framing);
    }
    let len = cobs::decode_in_place(frame).map_err(|_| WireError::Framing)?;
    let raw = &frame[..len];
    if raw.len() < MIN_FRAME_LEN {
        return Err(WireError::Truncated);
    }
    if raw.len() > MAX_FRAME_LEN {
        return Err(WireError::Oversize);
    }
    let crc_at = raw.len() - CRC_LEN;
    if CRC32.checksum(&raw[..crc_at]) != le32(raw, crc_at) {
        return Err(WireError::BadCrc);
    }
    if raw[0] != VERSION {
        return Err(WireError::UnknownVersion(raw[0]));
    }
    Ok(&raw[..crc_at])
}

/// The signed bytes (header and body) and the tag of a frame without its CRC.
fn split_tag(raw: &[u8]) -> (&[u8], &[u8]) {
    raw.split_at(raw.len() - TAG_LEN)
}

fn split_header(signed: &[u8], kind: Kind) -> Result<(Header, &[u8]), WireError> {
    let (head, body) = signed.split_at(HEADER_LEN);
    let head: &[u8; HEADER_LEN] = head.try_into().map_err(|_| WireError::Truncated)?;
    Ok((Header::parse(head, kind), body))
}
