//! How job values become bytes in the database, in one place.
//!
//! bincode is compact and fast but unmaintained, so it stays behind this
//! module: every stored payload starts with a format-version byte, and a
//! future codec gets a new byte while old rows keep decoding (or go dead with
//! a clear reason, never a crash loop).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first byte of every payload written by this version: bincode 2,
/// standard configuration, serde.
pub(crate) const FORMAT_BINCODE2: u8 = 1;

/// Serialises a value, prefixed with the format byte.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_BINCODE2);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Deserialises a payload written by [`encode`]. Trailing bytes are an error:
/// they mean the bytes were not written for this type.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        None => Err("payload is empty".to_string()),
        Some((&FORMAT_BINCODE2, body)) => {
            let (value, read) =
                bincode::serde::decode_from_slice(body, bincode::config::standard())
                    .map_err(|e| e.to_string())?;
            if read != body.len() {
                return Err(format!(
                    "{} trailing bytes after the value",
                    body.len() - read
                ));
            }
            Ok(value)
        }
        Some((other, _)) => Err(format!("unknown payload format byte {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let bytes = encode(&("hello", 42u32)).unwrap();
        assert_eq!(bytes[0], FORMAT_BINCODE2);
        let back: (String, u32) = decode(&bytes).unwrap();
        assert_eq!(back, ("hello".to_string(), 42));
        assert!(decode::<u32>(&[]).is_err());
        assert!(decode::<u32>(&[9, 1])
            .unwrap_err()
            .contains("format byte 9"));
        assert!(decode::<(String, u32)>(&bytes[..3]).is_err());
    }
}
