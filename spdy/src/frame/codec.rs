//! Frame encoder and decoder.
//!
//! [`FrameDecoder`] parses frames from a growing [`BytesMut`] and
//! [`FrameEncoder`] appends frames to one; [`Codec`] bundles one of each, for
//! an endpoint that reads and writes on the same object. All three implement
//! the `tokio_util::codec` traits.
//!
//! The decoder never trusts a length before checking it against [`Limits`]:
//! it reserves buffer space for a frame only after the frame's declared size
//! passed, it allocates header entries only after their count was checked
//! against the (limited) size of the decompressed block, and it stops
//! inflating a header block as soon as it grows past its limit.

use std::fmt;

use bytes::{Buf, BufMut, BytesMut};

use super::headers::Headers;
use super::wire::{self, Cursor, FRAME_HEADER_LEN, ID_MASK};
use super::zlib::{Deflater, Inflater};
use super::{
    Frame, GoAwayStatus, MAX_FRAME_LEN, MAX_STREAM_ID, RstStatus, Setting, StreamId, VERSION,
};
use crate::Error;

/// Largest uncompressed header block the encoder accepts. Its compressed
/// form always fits a frame's 24-bit length.
const MAX_ENCODED_HEADER_BLOCK: usize = 1 << 20;

/// The decoder's scratch buffer for header blocks is dropped after a block
/// larger than this, so one big block does not pin memory for the whole
/// connection.
const KEEP_BLOCK_CAPACITY: usize = 64 * 1024;

/// Size limits the decoder enforces on untrusted input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest DATA payload accepted (default 16 MiB, which admits anything
    /// the 24-bit length field can describe).
    pub max_data_frame_len: usize,
    /// Largest control frame payload accepted (default 1 MiB).
    pub max_control_frame_len: usize,
    /// Largest decompressed header block accepted (default 256 KiB).
    pub max_header_block_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_frame_len: 16 << 20,
            max_control_frame_len: 1 << 20,
            max_header_block_len: 256 << 10,
        }
    }
}

/// Decodes the frames of one direction of a connection.
pub struct FrameDecoder {
    limits: Limits,
    inflater: Inflater,
    block: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            inflater: Inflater::new(),
            block: Vec::new(),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// Returns `Ok(None)` if `buf` does not hold a whole frame yet (and then
    /// leaves it untouched, apart from reserving room for the rest of a frame
    /// whose header passed the limits). Unknown control frame types are
    /// consumed and skipped. After an error the decoder must not be used
    /// again: the header-compression state is then undefined.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            let Some(&[b0, b1, b2, b3, flags, l0, l1, l2]) = buf.first_chunk::<FRAME_HEADER_LEN>()
            else {
                return Ok(None);
            };
            let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let control = b0 & wire::CONTROL_BIT != 0;
            if control {
                let version = u16::from_be_bytes([b0 & !wire::CONTROL_BIT, b1]);
                if version != VERSION {
                    return Err(Error::UnsupportedVersion(version));
                }
            }
            let (kind, max) = if control {
                ("control", self.limits.max_control_frame_len)
            } else {
                ("data", self.limits.max_data_frame_len)
            };
            if len > max {
                return Err(Error::FrameTooLarge { kind, len, max });
            }
            let total = FRAME_HEADER_LEN + len;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            let mut frame = buf.split_to(total);
            frame.advance(FRAME_HEADER_LEN);
            let payload = frame.freeze();

            if !control {
                let stream_id = u32::from_be_bytes([b0, b1, b2, b3]);
                return Ok(Some(Frame::Data {
                    stream_id: nonzero("DATA", stream_id)?,
                    fin: flags & wire::FLAG_FIN != 0,
                    data: payload,
                }));
            }
            let frame_type = u16::from_be_bytes([b2, b3]);
            match self.decode_control(frame_type, flags, &payload)? {
                Some(frame) => return Ok(Some(frame)),
                None => tracing::trace!(frame_type, len, "skipping unknown SPDY control frame"),
            }
        }
    }

    fn decode_control(
        &mut self,
        frame_type: u16,
        flags: u8,
        payload: &[u8],
    ) -> Result<Option<Frame>, Error> {
        let name = wire::name(frame_type);
        let short = || Error::InvalidFrame {
            frame: name,
            reason: "payload too short",
        };
        let exact = |n: usize| {
            if payload.len() == n {
                Ok(())
            } else {
                Err(Error::InvalidFrame {
                    frame: name,
                    reason: "wrong payload length",
                })
            }
        };
        let fin = flags & wire::FLAG_FIN != 0;
        let mut cur = Cursor::new(payload);
        let frame = match frame_type {
            wire::SYN_STREAM => {
                let (Some(stream_id), Some(associated), Some(priority), Some(slot)) =
                    (cur.u32(), cur.u32(), cur.u8(), cur.u8())
                else {
                    return Err(short());
                };
                // Inflate before validating anything else, so the zlib
                // stream stays in step with the peer's.
                let headers = self.headers(cur.rest())?;
                Frame::SynStream {
                    stream_id: nonzero(name, stream_id & ID_MASK)?,
                    associated_stream_id: associated & ID_MASK,
                    priority: priority >> 5,
                    slot,
                    fin,
                    unidirectional: flags & wire::FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            wire::SYN_REPLY | wire::HEADERS => {
                let stream_id = cur.u32().ok_or_else(short)?;
                let headers = self.headers(cur.rest())?;
                let stream_id = nonzero(name, stream_id & ID_MASK)?;
                if frame_type == wire::SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            wire::RST_STREAM => {
                exact(8)?;
                let (Some(stream_id), Some(status)) = (cur.u32(), cur.u32()) else {
                    return Err(short());
                };
                if status == 0 {
                    return Err(Error::InvalidFrame {
                        frame: name,
                        reason: "status 0",
                    });
                }
                Frame::RstStream {
                    stream_id: nonzero(name, stream_id & ID_MASK)?,
                    status: RstStatus(status),
                }
            }
            wire::SETTINGS => {
                let count = cur.u32().ok_or_else(short)?;
                // Checking the count against the payload length first bounds
                // the allocation by the (limited) frame size.
                let count = usize::try_from(count)
                    .ok()
                    .filter(|&n| n.checked_mul(8) == Some(cur.remaining()))
                    .ok_or(Error::InvalidFrame {
                        frame: name,
                        reason: "entry count does not match length",
                    })?;
                let mut settings = Vec::with_capacity(count);
                for _ in 0..count {
                    let (Some(flags_id), Some(value)) = (cur.u32(), cur.u32()) else {
                        return Err(short());
                    };
                    let [flags, ..] = flags_id.to_be_bytes();
                    settings.push(Setting {
                        flags,
                        id: flags_id & 0x00ff_ffff,
                        value,
                    });
                }
                Frame::Settings {
                    clear_settings: flags & wire::FLAG_CLEAR_SETTINGS != 0,
                    settings,
                }
            }
            wire::PING => {
                exact(4)?;
                Frame::Ping {
                    id: cur.u32().ok_or_else(short)?,
                }
            }
            wire::GOAWAY => {
                exact(8)?;
                let (Some(last), Some(status)) = (cur.u32(), cur.u32()) else {
                    return Err(short());
                };
                Frame::GoAway {
                    last_good_stream_id: last & ID_MASK,
                    status: GoAwayStatus(status),
                }
            }
            wire::WINDOW_UPDATE => {
                exact(8)?;
                let (Some(stream_id), Some(delta)) = (cur.u32(), cur.u32()) else {
                    return Err(short());
                };
                Frame::WindowUpdate {
                    stream_id: stream_id & ID_MASK,
                    delta_window_size: delta & ID_MASK,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, Error> {
        self.block.clear();
        self.inflater.inflate_block(
            compressed,
            self.limits.max_header_block_len,
            &mut self.block,
        )?;
        let headers = Headers::decode_block(&self.block);
        if self.block.capacity() > KEEP_BLOCK_CAPACITY {
            self.block = Vec::new();
        }
        headers
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        FrameDecoder::decode(self, src)
    }
}

/// Encodes the frames of one direction of a connection.
pub struct FrameEncoder {
    deflater: Deflater,
    block: Vec<u8>,
    compressed: Vec<u8>,
}

impl FrameEncoder {
    /// A fresh encoder (its zlib stream starts with the next header block).
    pub fn new() -> Self {
        Self {
            deflater: Deflater::new(),
            block: Vec::new(),
            compressed: Vec::new(),
        }
    }

    /// Appends the wire form of `frame` to `dst`.
    ///
    /// Fails, without touching `dst` or the compression state, on a stream
    /// id of 0 or above 31 bits where one is required, a priority above 7,
    /// a header that cannot be encoded (empty name, NUL in a name or value,
    /// block over 1 MiB), or a DATA payload over 16 MiB - 1.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let fin = |fin: bool| if fin { wire::FLAG_FIN } else { 0 };
        match frame {
            Frame::SynStream {
                stream_id,
                associated_stream_id,
                priority,
                slot,
                fin: is_fin,
                unidirectional,
                headers,
            } => {
                const NAME: &str = "SYN_STREAM";
                let stream_id = valid_id(NAME, *stream_id)?;
                if *associated_stream_id > MAX_STREAM_ID {
                    return Err(invalid(NAME, "associated stream id above 31 bits"));
                }
                if *priority > 7 {
                    return Err(invalid(NAME, "priority above 7"));
                }
                let flags = fin(*is_fin)
                    | if *unidirectional {
                        wire::FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                self.compress(headers)?;
                put_control_header(dst, wire::SYN_STREAM, flags, 10 + self.compressed.len())?;
                dst.put_u32(stream_id);
                dst.put_u32(*associated_stream_id);
                dst.put_u8(priority << 5);
                dst.put_u8(*slot);
                dst.put_slice(&self.compressed);
            }
            Frame::SynReply {
                stream_id,
                fin: is_fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin: is_fin,
                headers,
            } => {
                let frame_type = if matches!(frame, Frame::SynReply { .. }) {
                    wire::SYN_REPLY
                } else {
                    wire::HEADERS
                };
                let stream_id = valid_id(wire::name(frame_type), *stream_id)?;
                self.compress(headers)?;
                put_control_header(dst, frame_type, fin(*is_fin), 4 + self.compressed.len())?;
                dst.put_u32(stream_id);
                dst.put_slice(&self.compressed);
            }
            Frame::RstStream { stream_id, status } => {
                let stream_id = valid_id("RST_STREAM", *stream_id)?;
                if status.0 == 0 {
                    return Err(invalid("RST_STREAM", "status 0"));
                }
                put_control_header(dst, wire::RST_STREAM, 0, 8)?;
                dst.put_u32(stream_id);
                dst.put_u32(status.0);
            }
            Frame::Settings {
                clear_settings,
                settings,
            } => {
                if settings.iter().any(|s| s.id > 0x00ff_ffff) {
                    return Err(invalid("SETTINGS", "setting id above 24 bits"));
                }
                let len = settings
                    .len()
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(4))
                    .unwrap_or(usize::MAX);
                let count = u32::try_from(settings.len()).unwrap_or(u32::MAX);
                let flags = if *clear_settings {
                    wire::FLAG_CLEAR_SETTINGS
                } else {
                    0
                };
                put_control_header(dst, wire::SETTINGS, flags, len)?;
                dst.put_u32(count);
                for s in settings {
                    dst.put_u32(u32::from(s.flags) << 24 | s.id);
                    dst.put_u32(s.value);
                }
            }
            Frame::Ping { id } => {
                put_control_header(dst, wire::PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                if *last_good_stream_id > MAX_STREAM_ID {
                    return Err(invalid("GOAWAY", "stream id above 31 bits"));
                }
                put_control_header(dst, wire::GOAWAY, 0, 8)?;
                dst.put_u32(*last_good_stream_id);
                dst.put_u32(status.0);
            }
            Frame::WindowUpdate {
                stream_id,
                delta_window_size,
            } => {
                if *stream_id > MAX_STREAM_ID || *delta_window_size > ID_MASK {
                    return Err(invalid("WINDOW_UPDATE", "field above 31 bits"));
                }
                put_control_header(dst, wire::WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(*stream_id);
                dst.put_u32(*delta_window_size);
            }
            Frame::Data {
                stream_id,
                fin: is_fin,
                data,
            } => {
                let stream_id = valid_id("DATA", *stream_id)?;
                let flags_len = flags_and_len("data", fin(*is_fin), data.len())?;
                dst.reserve(FRAME_HEADER_LEN + data.len());
                dst.put_u32(stream_id);
                dst.put_u32(flags_len);
                dst.put_slice(data);
            }
        }
        Ok(())
    }

    /// Serializes and compresses `headers` into `self.compressed`.
    fn compress(&mut self, headers: &Headers) -> Result<(), Error> {
        self.block.clear();
        self.compressed.clear();
        headers.encode_block(&mut self.block)?;
        if self.block.len() > MAX_ENCODED_HEADER_BLOCK {
            return Err(Error::HeaderBlockTooLarge {
                max: MAX_ENCODED_HEADER_BLOCK,
            });
        }
        let result = self
            .deflater
            .deflate_block(&self.block, &mut self.compressed);
        if self.block.capacity() > KEEP_BLOCK_CAPACITY {
            self.block = Vec::new();
        }
        result
    }
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameEncoder").finish_non_exhaustive()
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameEncoder {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        FrameEncoder::encode(self, &frame, dst)
    }
}

impl tokio_util::codec::Encoder<&Frame> for FrameEncoder {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        FrameEncoder::encode(self, frame, dst)
    }
}

/// A [`FrameDecoder`] for the incoming and a [`FrameEncoder`] for the
/// outgoing direction of one connection.
#[derive(Debug, Default)]
pub struct Codec {
    decoder: FrameDecoder,
    encoder: FrameEncoder,
}

impl Codec {
    /// A codec with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec whose decoder enforces `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            decoder: FrameDecoder::with_limits(limits),
            encoder: FrameEncoder::new(),
        }
    }

    /// See [`FrameDecoder::decode`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.decoder.decode(buf)
    }

    /// See [`FrameEncoder::encode`].
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encoder.encode(frame, dst)
    }

    /// Splits the codec into its two directions.
    pub fn into_parts(self) -> (FrameDecoder, FrameEncoder) {
        (self.decoder, self.encoder)
    }
}

impl tokio_util::codec::Decoder for Codec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.decoder.decode(src)
    }
}

impl tokio_util::codec::Encoder<Frame> for Codec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encoder.encode(&frame, dst)
    }
}

impl tokio_util::codec::Encoder<&Frame> for Codec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encoder.encode(frame, dst)
    }
}

fn invalid(frame: &'static str, reason: &'static str) -> Error {
    Error::InvalidFrame { frame, reason }
}

fn nonzero(frame: &'static str, stream_id: StreamId) -> Result<StreamId, Error> {
    if stream_id == 0 {
        Err(invalid(frame, "stream id 0"))
    } else {
        Ok(stream_id)
    }
}

fn valid_id(frame: &'static str, stream_id: StreamId) -> Result<StreamId, Error> {
    if stream_id > MAX_STREAM_ID {
        return Err(invalid(frame, "stream id above 31 bits"));
    }
    nonzero(frame, stream_id)
}

/// The second header word: 8 bits of flags and a 24-bit length.
fn flags_and_len(kind: &'static str, flags: u8, len: usize) -> Result<u32, Error> {
    match u32::try_from(len) {
        Ok(n) if len <= MAX_FRAME_LEN => Ok(u32::from(flags) << 24 | n),
        _ => Err(Error::FrameTooLarge {
            kind,
            len,
            max: MAX_FRAME_LEN,
        }),
    }
}

fn put_control_header(
    dst: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    len: usize,
) -> Result<(), Error> {
    let flags_len = flags_and_len("control", flags, len)?;
    dst.reserve(FRAME_HEADER_LEN + len);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    dst.put_u32(flags_len);
    Ok(())
}
