//! Framed messages: a small JSON header followed by big numbers as raw bytes.
//!
//! Products are megabytes near the top of a large factorial. As base64 inside JSON they grow
//! by a third and must be parsed character by character; here they are copied. Layout:
//! `FRAME_MAGIC`, the header's length (u32, big-endian) and its JSON, the count of numbers
//! (u32), then per number its length (u64) and its little-endian bytes. Decoding checks every
//! length against what is left, so a truncated or hostile frame is an error, never a panic.

use crate::bignum::Big;
use serde::{de::DeserializeOwned, Serialize};

/// The first bytes of every frame (format version 1).
const FRAME_MAGIC: &[u8; 8] = b"facto\x00f1";
/// The media type frames travel as.
pub const FRAME_CONTENT_TYPE: &str = "application/octet-stream";

/// Encodes `header` and `numbers`.
pub fn encode<H: Serialize>(header: &H, numbers: &[&Big]) -> Result<Vec<u8>, String> {
    let head = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    let numbers_len: usize = numbers.iter().map(|n| 8 + n.byte_len()).sum();
    let mut out = Vec::with_capacity(FRAME_MAGIC.len() + 8 + head.len() + numbers_len);
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&u32::try_from(head.len()).map_err(|_| "header too large")?.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&u32::try_from(numbers.len()).map_err(|_| "too many numbers")?.to_be_bytes());
    for n in numbers {
        let bytes = n.to_bytes();
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// Decodes a frame made by [`encode`].
pub fn decode<H: DeserializeOwned>(frame: &[u8]) -> Result<(H, Vec<Big>), String> {
    let mut rest = frame.strip_prefix(FRAME_MAGIC.as_slice()).ok_or("not a facto frame (bad magic)")?;
    let head_len = take_u32(&mut rest)? as usize;
    let head = take(&mut rest, head_len)?;
    let header = serde_json::from_slice(head).map_err(|e| format!("malformed frame header: {e}"))?;
    let count = take_u32(&mut rest)? as usize;
    // Each number needs at least its 8-byte length: a count beyond that is a lie.
    if count > rest.len() / 8 {
        return Err(format!("frame claims {count} numbers in {} bytes", rest.len()));
    }
    let mut numbers = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u64::from_be_bytes(take(&mut rest, 8)?.try_into().map_err(|_| "short length")?);
        let len = usize::try_from(len).map_err(|_| "number too large")?;
        numbers.push(Big::from_bytes(take(&mut rest, len)?));
    }
    if !rest.is_empty() {
        return Err(format!("{} stray bytes after the frame", rest.len()));
    }
    Ok((header, numbers))
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if rest.len() < len {
        return Err(format!("frame truncated: {len} bytes wanted, {} left", rest.len()));
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_be_bytes(take(rest, 4)?.try_into().map_err(|_| "short length")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_header_and_numbers() {
        let big = Big::factorial(300);
        let numbers = [Big::from(0), Big::from(7), big];
        let frame = encode(&("hello", 3u32), &numbers.iter().collect::<Vec<_>>()).unwrap();
        let (header, back): ((String, u32), Vec<Big>) = decode(&frame).unwrap();
        assert_eq!(header, ("hello".to_string(), 3));
        assert_eq!(back, numbers);
    }

    /// Every prefix and every single-byte change of a frame decodes to an error or to some
    /// value, never a panic.
    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let frame = encode(&vec![1u64, 2], &[&Big::from(1 << 20), &Big::factorial(40)]).unwrap();
        for len in 0..frame.len() {
            assert!(decode::<Vec<u64>>(&frame[..len]).is_err(), "prefix of {len} bytes");
        }
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0xff;
            let _ = decode::<Vec<u64>>(&bad);
        }
        let mut huge_count = encode(&(), &[]).unwrap();
        let at = huge_count.len() - 4;
        huge_count[at..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode::<()>(&huge_count).unwrap_err().contains("claims"));
    }
}
