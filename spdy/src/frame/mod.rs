//! SPDY/3.1 frames, their header blocks, and the codec that turns them into
//! bytes and back.
//!
//! # Wire format
//!
//! Every frame starts with an 8-byte header; all integers are big-endian.
//!
//! ```text
//! control: |1| version (15) = 3 | type (16) | flags (8) | length (24) | payload
//! data:    |0| stream id (31)               | flags (8) | length (24) | payload
//! ```
//!
//! | type | frame | payload |
//! |---|---|---|
//! | 1 | SYN_STREAM | stream id, associated stream id, priority (3 high bits), slot, compressed header block |
//! | 2 | SYN_REPLY | stream id, compressed header block |
//! | 3 | RST_STREAM | stream id, status |
//! | 4 | SETTINGS | count, then per entry flags (8) + id (24) and value (32) |
//! | 6 | PING | id |
//! | 7 | GOAWAY | last good stream id, status |
//! | 8 | HEADERS | stream id, compressed header block |
//! | 9 | WINDOW_UPDATE | stream id, delta window size |
//!
//! Flags: `FIN` (0x01) on SYN_STREAM, SYN_REPLY, HEADERS and DATA;
//! `UNIDIRECTIONAL` (0x02) on SYN_STREAM; `CLEAR_SETTINGS` (0x01) on SETTINGS.
//! Stream ids are 31 bits; the reserved top bit is ignored when decoding.
//!
//! Header blocks are described in [`Headers`] and compressed as described in
//! the `zlib` module: one zlib stream per direction, seeded with the SPDY/3
//! dictionary. Because of that shared state a [`FrameDecoder`] and a
//! [`FrameEncoder`] each serve exactly one direction of one connection, and
//! an error leaves them unusable.
//!
//! Unknown control frame types are skipped, as SPDY/3 section 2.2.1 requires.
//! The CREDENTIAL frame (type 10) is not implemented and is skipped too.

mod codec;
#[cfg(test)]
pub(crate) mod go_vectors;
mod headers;
#[cfg(test)]
mod tests;
mod zlib;

use std::fmt;

use bytes::Bytes;

pub use codec::{Codec, FrameDecoder, FrameEncoder, Limits};
pub use headers::Headers;

/// A 31-bit stream identifier. Client-initiated streams are odd,
/// server-initiated streams even; 0 is never a valid stream.
pub type StreamId = u32;

/// The SPDY protocol version this crate speaks.
pub const VERSION: u16 = 3;

/// The largest valid stream id.
pub const MAX_STREAM_ID: StreamId = 0x7fff_ffff;

/// The largest payload a frame's 24-bit length field can describe.
pub const MAX_FRAME_LEN: usize = 0xff_ffff;

/// Status code of a RST_STREAM frame (SPDY/3 section 2.6.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    /// Generic error, used when nothing more specific applies.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// A frame arrived for a stream that is not active.
    pub const INVALID_STREAM: Self = Self(2);
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: Self = Self(3);
    /// The recipient does not support the SPDY version.
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    /// The stream is no longer needed.
    pub const CANCEL: Self = Self(5);
    /// An internal error unrelated to the protocol.
    pub const INTERNAL_ERROR: Self = Self(6);
    /// The peer violated flow control.
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    /// A SYN_REPLY arrived for a stream that was already open.
    pub const STREAM_IN_USE: Self = Self(8);
    /// Data or SYN_REPLY arrived for a half-closed stream.
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    /// The credential slot is invalid.
    pub const INVALID_CREDENTIALS: Self = Self(10);
    /// A frame was too large to process.
    pub const FRAME_TOO_LARGE: Self = Self(11);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            10 => "INVALID_CREDENTIALS",
            11 => "FRAME_TOO_LARGE",
            _ => return None,
        })
    }
}

impl fmt::Debug for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "RstStatus({})", self.0),
        }
    }
}

/// Status code of a GOAWAY frame (SPDY/3 section 2.6.6).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    /// Normal session teardown.
    pub const OK: Self = Self(0);
    /// The session is torn down because of a protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// The session is torn down because of an internal error.
    pub const INTERNAL_ERROR: Self = Self(2);
}

impl fmt::Debug for GoAwayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("OK"),
            1 => f.write_str("PROTOCOL_ERROR"),
            2 => f.write_str("INTERNAL_ERROR"),
            n => write!(f, "GoAwayStatus({n})"),
        }
    }
}

/// One entry of a SETTINGS frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Setting {
    /// `FLAG_SETTINGS_PERSIST_VALUE` (0x1) and/or `FLAG_SETTINGS_PERSISTED` (0x2).
    pub flags: u8,
    /// The setting id (24 bits), e.g. [`Setting::INITIAL_WINDOW_SIZE`].
    pub id: u32,
    /// The setting's value.
    pub value: u32,
}

impl Setting {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    /// `SETTINGS_INITIAL_WINDOW_SIZE`.
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

/// A decoded SPDY/3.1 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM: opens a stream.
    SynStream {
        /// The new stream.
        stream_id: StreamId,
        /// The stream this one is associated with, or 0.
        associated_stream_id: StreamId,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// Credential slot, 0 if none.
        slot: u8,
        /// The sender will send nothing more on the stream.
        fin: bool,
        /// The recipient may not send on the stream.
        unidirectional: bool,
        /// The request headers.
        headers: Headers,
    },
    /// SYN_REPLY: accepts a stream opened by the other side.
    SynReply {
        /// The accepted stream.
        stream_id: StreamId,
        /// The sender will send nothing more on the stream.
        fin: bool,
        /// The reply headers.
        headers: Headers,
    },
    /// RST_STREAM: aborts a stream.
    RstStream {
        /// The aborted stream.
        stream_id: StreamId,
        /// Why it was aborted.
        status: RstStatus,
    },
    /// SETTINGS: connection parameters.
    Settings {
        /// `FLAG_SETTINGS_CLEAR_SETTINGS`.
        clear_settings: bool,
        /// The settings, in wire order.
        settings: Vec<Setting>,
    },
    /// PING: to be echoed by the peer if the id has the peer's parity.
    Ping {
        /// Odd when sent by a client, even when sent by a server.
        id: u32,
    },
    /// GOAWAY: the sender will accept no new streams.
    GoAway {
        /// The last stream id the sender accepted.
        last_good_stream_id: StreamId,
        /// Why the session ends.
        status: GoAwayStatus,
    },
    /// HEADERS: further headers for a stream.
    Headers {
        /// The stream the headers belong to.
        stream_id: StreamId,
        /// The sender will send nothing more on the stream.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// WINDOW_UPDATE: flow-control credit.
    WindowUpdate {
        /// The stream the credit is for.
        stream_id: StreamId,
        /// The credit in bytes (31 bits).
        delta_window_size: u32,
    },
    /// DATA: stream payload.
    Data {
        /// The stream the data belongs to.
        stream_id: StreamId,
        /// Last frame the sender sends on the stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
}

impl Frame {
    /// SYN_STREAM opening `stream_id` with `headers`, as a client opens
    /// one: not associated, priority 0, no credential slot, neither
    /// half-closed nor unidirectional.
    pub fn open(stream_id: StreamId, headers: Headers) -> Self {
        Frame::SynStream {
            stream_id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        }
    }

    /// The stream the frame belongs to, for stream-level frames.
    pub fn stream_id(&self) -> Option<StreamId> {
        match *self {
            Frame::SynStream { stream_id, .. }
            | Frame::SynReply { stream_id, .. }
            | Frame::RstStream { stream_id, .. }
            | Frame::Headers { stream_id, .. }
            | Frame::WindowUpdate { stream_id, .. }
            | Frame::Data { stream_id, .. } => Some(stream_id),
            Frame::Settings { .. } | Frame::Ping { .. } | Frame::GoAway { .. } => None,
        }
    }

    /// The frame's name as the specification spells it, e.g. `"SYN_STREAM"`.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::SynStream { .. } => wire::name(wire::SYN_STREAM),
            Frame::SynReply { .. } => wire::name(wire::SYN_REPLY),
            Frame::RstStream { .. } => wire::name(wire::RST_STREAM),
            Frame::Settings { .. } => wire::name(wire::SETTINGS),
            Frame::Ping { .. } => wire::name(wire::PING),
            Frame::GoAway { .. } => wire::name(wire::GOAWAY),
            Frame::Headers { .. } => wire::name(wire::HEADERS),
            Frame::WindowUpdate { .. } => wire::name(wire::WINDOW_UPDATE),
            Frame::Data { .. } => "DATA",
        }
    }
}

/// Wire constants and a bounds-checked reader.
mod wire {
    pub(super) const SYN_STREAM: u16 = 1;
    pub(super) const SYN_REPLY: u16 = 2;
    pub(super) const RST_STREAM: u16 = 3;
    pub(super) const SETTINGS: u16 = 4;
    pub(super) const PING: u16 = 6;
    pub(super) const GOAWAY: u16 = 7;
    pub(super) const HEADERS: u16 = 8;
    pub(super) const WINDOW_UPDATE: u16 = 9;

    /// `FLAG_FIN` of SYN_STREAM, SYN_REPLY, HEADERS and DATA.
    pub(super) const FLAG_FIN: u8 = 0x01;
    /// `FLAG_UNIDIRECTIONAL` of SYN_STREAM.
    pub(super) const FLAG_UNIDIRECTIONAL: u8 = 0x02;
    /// `FLAG_SETTINGS_CLEAR_SETTINGS` of SETTINGS.
    pub(super) const FLAG_CLEAR_SETTINGS: u8 = 0x01;

    /// The control bit of the first header word.
    pub(super) const CONTROL_BIT: u8 = 0x80;
    /// Mask of 31-bit fields.
    pub(super) const ID_MASK: u32 = 0x7fff_ffff;
    /// Length of the common frame header.
    pub(super) const FRAME_HEADER_LEN: usize = 8;

    pub(super) fn name(frame_type: u16) -> &'static str {
        match frame_type {
            SYN_STREAM => "SYN_STREAM",
            SYN_REPLY => "SYN_REPLY",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PING => "PING",
            GOAWAY => "GOAWAY",
            HEADERS => "HEADERS",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            _ => "unknown",
        }
    }

    /// Reads big-endian integers and byte runs from a slice without ever
    /// reading past its end.
    pub(super) struct Cursor<'a> {
        rest: &'a [u8],
    }

    impl<'a> Cursor<'a> {
        pub(super) fn new(bytes: &'a [u8]) -> Self {
            Self { rest: bytes }
        }

        pub(super) fn remaining(&self) -> usize {
            self.rest.len()
        }

        pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, tail) = self.rest.split_at_checked(n)?;
            self.rest = tail;
            Some(head)
        }

        pub(super) fn rest(&mut self) -> &'a [u8] {
            std::mem::take(&mut self.rest)
        }

        pub(super) fn u8(&mut self) -> Option<u8> {
            let (&b, tail) = self.rest.split_first()?;
            self.rest = tail;
            Some(b)
        }

        pub(super) fn u32(&mut self) -> Option<u32> {
            let (head, tail) = self.rest.split_first_chunk::<4>()?;
            self.rest = tail;
            Some(u32::from_be_bytes(*head))
        }
    }
}
