//! The crate's error type.
//!
//! Every failure of the framing layer or of a [`Connection`](crate::Connection)
//! is an [`Error`]. Decoding errors are fatal for the connection they occur
//! on: the peer's header-compression context can no longer be trusted, so the
//! only sound reaction is to stop reading (SPDY/3 section 2.4.1 calls this a
//! session error).

use std::io;

/// Errors produced while encoding or decoding SPDY frames, or by a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A control frame carried a version other than 3.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),

    /// A frame's declared length is over the configured limit (when decoding)
    /// or over what the 24-bit length field can carry (when encoding).
    #[error("{kind} frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// `"data"` or `"control"`.
        kind: &'static str,
        /// The declared or required length.
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },

    /// A frame is malformed: wrong length for its type, stream id zero, and
    /// the like.
    #[error("invalid {frame} frame: {reason}")]
    InvalidFrame {
        /// The frame type, e.g. `"SYN_STREAM"`.
        frame: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A name/value header block is malformed, or a header cannot be encoded.
    #[error("invalid header block: {0}")]
    InvalidHeaderBlock(&'static str),

    /// A decompressed header block is larger than the configured limit.
    #[error("decompressed header block exceeds {max} bytes")]
    HeaderBlockTooLarge {
        /// The limit that was exceeded.
        max: usize,
    },

    /// The zlib stream that carries header blocks is corrupt (or our own
    /// compressor failed).
    #[error("header compression: {0}")]
    Compression(String),

    /// The connection is closed (locally, by the peer, or after an error).
    #[error("connection closed")]
    ConnectionClosed,

    /// An I/O error on the underlying transport.
    #[error(transparent)]
    Io(#[from] io::Error),
}
