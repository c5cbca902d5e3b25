//! Pod JSON kept compressed: the slim records of the store ([`super::record`])
//! and the statuses the backend reported ([`super::table`]).
//!
//! zstd (level 3) with a raw-content dictionary: the JSON of a typical
//! Running pod and the parts that Pending and ended pods add. A record's
//! JSON shares most of its bytes with it (keys, condition types, the date
//! of its timestamps), so it compresses to about a fifth where on its own
//! it would barely shrink. The dictionary is prepared once per process; the
//! (de)compression contexts, a few KB with so small a dictionary, once per
//! thread.

use std::{cell::RefCell, sync::LazyLock};

use zstd::{
    bulk::{Compressor, Decompressor},
    dict::{DecoderDictionary, EncoderDictionary},
};

/// What pod statuses have in common; the most common last (zstd
/// matches recent bytes most cheaply).
static DICTIONARY: &[u8] = include_bytes!("record_dict.json");
const LEVEL: i32 = 3;

static ENCODER: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARY, LEVEL));
static DECODER: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY));

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `json` compressed; `None` if zstd failed (it does not, in memory).
fn pack(json: &[u8]) -> Option<Box<[u8]>> {
    COMPRESSOR.with_borrow_mut(|c| {
        if c.is_none() {
            *c = Some(Compressor::with_prepared_dictionary(&ENCODER).ok()?);
        }
        let out = c.as_mut()?.compress(json).ok()?;
        Some(out.into_boxed_slice())
    })
}

/// The JSON `packed` was made from.
fn unpack(packed: &[u8]) -> Option<Vec<u8>> {
    let size = zstd::zstd_safe::get_frame_content_size(packed).ok()??;
    DECOMPRESSOR.with_borrow_mut(|d| {
        if d.is_none() {
            *d = Some(Decompressor::with_prepared_dictionary(&DECODER).ok()?);
        }
        d.as_mut()?
            .decompress(packed, usize::try_from(size).ok()?)
            .ok()
    })
}

/// `value` as packed JSON; `None` if serializing or compressing failed
/// (neither does for k8s-openapi structs in memory).
pub(crate) fn to_packed(value: &impl serde::Serialize) -> Option<Box<[u8]>> {
    pack(&serde_json::to_vec(value).ok()?)
}

/// The value `packed` was made from by [`to_packed`].
pub(crate) fn from_packed<T: serde::de::DeserializeOwned>(packed: &[u8]) -> Option<T> {
    serde_json::from_slice(&unpack(packed)?).ok()
}
