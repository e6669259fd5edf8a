//! Whole frames: header, body, tag and CRC, COBS-encoded. The checks run in
//! the order the spec in [`crate::wire`] lists.

use crc::{CRC_32_ISO_HDLC, Crc, Table};

use super::auth::{Key, TAG_LEN};
use super::error::{EncodeError, WireError};
use super::header::{CRC_LEN, HEADER_LEN, Header, Kind, VERSION, le32};
use super::message::Message;
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
    let raw: &'a [u8] = &frame[..len];
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
    let cluster_in_frame = ClusterId(le32(raw, 4));
    if cluster_in_frame != cluster {
        return Err(WireError::WrongCluster(cluster_in_frame));
    }
    let kind = Kind::from_u8(raw[1]).ok_or(WireError::UnknownKind(raw[1]))?;
    let tag_at = crc_at - TAG_LEN;
    if !key.verify(&raw[..tag_at], &raw[tag_at..crc_at]) {
        return Err(WireError::BadTag);
    }
    let (head, body) = raw[..tag_at].split_at(HEADER_LEN);
    let head: &[u8; HEADER_LEN] = head.try_into().map_err(|_| WireError::Truncated)?;
    let header = Header::parse(head, kind);
    let message = Message::decode_body(kind, body)?;
    Ok((header, message))
}
