//! Message ids as guard/engine/fingerprints.py hashes them.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use xxhash_rust::xxh3::xxh3_64;

/// The ring's entry for a per-event without a message id (windows.py: _NO_ID).
pub(crate) const NO_ID: i32 = 0;

/// `message_key(id)`: xxh3-64 of the id's UTF-8 bytes, lone surrogates passed through as the
/// Python engine encodes them ("surrogatepass").
fn message_key(message_id: &Bound<'_, PyString>) -> PyResult<u64> {
    if let Ok(text) = message_id.to_str() {
        return Ok(xxh3_64(text.as_bytes()));
    }
    let encoded = message_id.call_method1("encode", ("utf-8", "surrogatepass"))?;
    Ok(xxh3_64(encoded.cast::<PyBytes>()?.as_bytes()))
}

/// windows.py `_id_hash`: a message id as a signed 32-bit int, the same in every process.
pub(crate) fn id_hash(message_id: Option<&Bound<'_, PyString>>) -> PyResult<i32> {
    match message_id {
        None => Ok(NO_ID),
        Some(id) => Ok(((message_key(id)? & 0xFFFF_FFFF) as i64 - 0x8000_0000) as i32),
    }
}

/// fingerprints.py `event_key`: xxh3-64 of the parts joined with the unit separator, as UTF-8
/// ("surrogatepass": a lone surrogate still gets a key).
pub(crate) fn key_of(parts: &[&Bound<'_, PyString>]) -> PyResult<u64> {
    let mut joined = Vec::with_capacity(96);
    for (number, part) in parts.iter().enumerate() {
        if number > 0 {
            joined.push(0x1f);
        }
        match part.to_str() {
            Ok(text) => joined.extend_from_slice(text.as_bytes()),
            Err(_) => {
                let encoded = part.call_method1("encode", ("utf-8", "surrogatepass"))?;
                joined.extend_from_slice(encoded.cast::<PyBytes>()?.as_bytes());
            }
        }
    }
    Ok(xxh3_64(&joined))
}
