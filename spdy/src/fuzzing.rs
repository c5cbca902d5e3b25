//! Entry points of the fuzz targets in the workspace's `fuzz/` directory,
//! here so that the seed corpus is replayed by ordinary tests too. Not an
//! API: each function panics when it finds a bug.

use bytes::BytesMut;

use crate::frame::{Frame, FrameDecoder, Limits};

/// Limits small enough that lengths the fuzzer invents are reachable.
const LIMITS: Limits = Limits {
    max_data_frame_len: 64 << 10,
    max_control_frame_len: 64 << 10,
    max_header_block_len: 64 << 10,
};

/// Feeds `input` through the frame decoder until it reports an error or
/// needs more data.
///
/// The first byte sets a chunk size: the rest is decoded once whole and
/// once delivered in chunks of that size, and both runs must yield the same
/// frames and the same outcome, so the incremental path is checked against
/// the one-shot path besides never panicking.
///
/// # Panics
/// When the two runs disagree (or the decoder panics).
pub fn decode(input: &[u8]) {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let whole = decode_in(data, data.len().max(1));
    let chunked = decode_in(data, usize::from(chunk).max(1));
    assert_eq!(whole, chunked, "chunked decoding differs");
}

/// The frames decoded from `data` delivered in pieces of `chunk` bytes, and
/// whether decoding stopped with an error.
fn decode_in(data: &[u8], chunk: usize) -> (Vec<Frame>, bool) {
    let mut decoder = FrameDecoder::with_limits(LIMITS);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}
