//! Frames written by Go's `github.com/moby/spdystream/spdy` framer, the one
//! kube-apiserver and kubectl use, as test vectors.
//!
//! Generated with spdystream v0.5.1 and Go 1.26 by writing each frame with
//! `Framer.WriteFrame` into a buffer. The first group comes from one
//! client-side framer, in this order, so its compressed header blocks form
//! one zlib stream.

pub(crate) const SYN_STREAM_1: &str = "80030001000000290000000100000000000078f9e3c6a7c2626060\
    6004a7b392a2d4c45c6851c29a0a0a6800000000ffff";
pub(crate) const SYN_STREAM_3: &str =
    "800300010000001700000003000000000000c22e555c92929907000000ffff";
pub(crate) const SYN_STREAM_5_FIN: &str =
    "800300010100001c00000005000000004000824ab114e41781338885818501000000ffff";
pub(crate) const HEADERS_5: &str = "800300080000001300000005828a3182b20873054325000000ffff";
pub(crate) const DATA_1: &str = "000000010000000568656c6c6f";
pub(crate) const DATA_1_FIN: &str = "0000000101000000";
pub(crate) const PING_1: &str = "800300060000000400000001";
pub(crate) const GOAWAY: &str = "80030007000000080000000700000000";
pub(crate) const RST_3_CANCEL: &str = "80030003000000080000000300000005";
pub(crate) const SETTINGS: &str = "800300040000000c000000010100000700010000";
pub(crate) const WINDOW_UPDATE: &str = "80030009000000080000000100000400";
/// From a second (server-side) framer: the empty replies that
/// apimachinery's `newSpdyStream` sends.
pub(crate) const SYN_REPLY_1: &str = "80030002000000140000000178f9e3c6a7c26260606000000000ffff";
pub(crate) const SYN_REPLY_3: &str = "800300020000000c00000003026100000000ffff";

/// Decodes a hex string, ignoring whitespace.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => panic!("bad hex digit {b}"),
        })
        .collect();
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}
