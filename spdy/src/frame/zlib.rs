//! Header-block compression: one zlib stream per direction, seeded with the
//! SPDY/3 dictionary.
//!
//! SPDY/3 (draft 3, section 2.6.10.1) compresses every name/value header
//! block with zlib. Each direction of a connection has exactly one zlib
//! stream that lives as long as the connection: every header block is
//! compressed into it and ends with a sync flush, and the receiver never
//! resets its inflater between frames. The zlib header of that stream sets
//! `FDICT` and names the [`DICTIONARY`] below by its Adler-32 checksum, so the
//! inflater asks for the dictionary once, right after the first two header
//! bytes. Go's `compress/zlib` (used by `moby/spdystream`) writes exactly such
//! a stream.
//!
//! The pure-Rust `miniz_oxide` backend of `flate2` cannot use preset
//! dictionaries, so this crate enables flate2's `zlib-rs` backend (also pure
//! Rust), which can.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::Error;

/// Size of the scratch buffer the inflater decompresses into.
const INFLATE_CHUNK: usize = 8 * 1024;

/// Adler-32 checksum of [`DICTIONARY`]; it is the dictionary id in the zlib
/// header of every SPDY/3 header stream.
pub(crate) const DICTIONARY_ADLER32: u32 = 0xe3c6_a7c2;

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1):
/// length-prefixed common header names and values, followed by common
/// status lines, dates and media types.
#[rustfmt::skip]
pub(crate) const DICTIONARY: &[u8; 1423] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\
    \x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\
    \x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\
    \x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\
    \x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\
    \x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\
    \x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\
    \x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\
    \x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\
    \x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\
    \x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\
    \x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\
    \x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\
    \x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\
    \x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\
    \x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
    \x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\
    \x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\
    \x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\
    \x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\
    \x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\
    \x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\
    \x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\
    \x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin\
    100101201202205206300302303304305306307402405406407408409410\
    411412413414415416417502504505203 Non-Authoritative Informat\
    ion204 No Content301 Moved Permanently400 Bad Request401 Una\
    uthorized403 Forbidden404 Not Found500 Internal Server Error\
    501 Not Implemented503 Service UnavailableJan Feb Mar Apr Ma\
    y Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, \
    Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,imag\
    e/gif,application/xml,application/xhtml+xml,text/plain,text/\
    javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf\
    -8charset=iso-8859-1,utf-,*,enq=0.";

/// Decompresses the header blocks of one direction of a connection.
pub(crate) struct Inflater {
    zlib: Decompress,
    dictionary_set: bool,
    chunk: Box<[u8]>,
}

impl Inflater {
    pub(crate) fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
            dictionary_set: false,
            chunk: vec![0; INFLATE_CHUNK].into_boxed_slice(),
        }
    }

    /// Decompresses the header block carried by one frame (`input`, all of
    /// it) and appends the result to `out`, failing once `out` would grow
    /// beyond `max` bytes.
    pub(crate) fn inflate_block(
        &mut self,
        input: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let (in_before, out_before) = (self.zlib.total_in(), self.zlib.total_out());
            let result = self
                .zlib
                .decompress(rest, &mut self.chunk, FlushDecompress::Sync);
            let consumed = progress(in_before, self.zlib.total_in(), rest.len())?;
            let produced = progress(out_before, self.zlib.total_out(), self.chunk.len())?;
            pos += consumed;

            if out.len().saturating_add(produced) > max {
                return Err(Error::HeaderBlockTooLarge { max });
            }
            out.extend_from_slice(self.chunk.get(..produced).unwrap_or_default());

            match result {
                Ok(Status::Ok | Status::BufError) => {}
                Ok(Status::StreamEnd) => {
                    // Go never finishes the stream; data after its end
                    // cannot be decompressed.
                    if pos < input.len() {
                        return Err(Error::Compression("data after end of zlib stream".into()));
                    }
                    return Ok(());
                }
                Err(e) => match e.needs_dictionary() {
                    Some(id) if !self.dictionary_set => {
                        if id != DICTIONARY_ADLER32 {
                            return Err(Error::Compression(format!(
                                "peer uses unknown preset dictionary {id:#010x}"
                            )));
                        }
                        self.zlib
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| Error::Compression(e.to_string()))?;
                        self.dictionary_set = true;
                        continue;
                    }
                    _ => return Err(Error::Compression(e.to_string())),
                },
            }

            let input_done = pos >= input.len();
            // The output was not cut short by the chunk size, so everything
            // the inflater could produce from the input so far is out.
            if input_done && produced < self.chunk.len() {
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                return Err(Error::Compression("zlib stream made no progress".into()));
            }
        }
    }
}

/// Compresses the header blocks of one direction of a connection.
pub(crate) struct Deflater {
    zlib: Compress,
    dictionary_set: bool,
}

impl Deflater {
    pub(crate) fn new() -> Self {
        Self {
            zlib: Compress::new(Compression::default(), true),
            dictionary_set: false,
        }
    }

    /// Compresses one header block and ends it with a sync flush, appending
    /// the compressed bytes to `out`.
    pub(crate) fn deflate_block(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if !self.dictionary_set {
            // Before the first byte: this makes the zlib header carry FDICT
            // and the dictionary id, as SPDY/3 requires.
            self.zlib
                .set_dictionary(DICTIONARY)
                .map_err(|e| Error::Compression(e.to_string()))?;
            self.dictionary_set = true;
        }
        let mut pos = 0;
        loop {
            // A sync flush is complete once deflate returns with output
            // space to spare.
            out.reserve(input.len().saturating_sub(pos).saturating_add(64));
            let rest = input.get(pos..).unwrap_or_default();
            let in_before = self.zlib.total_in();
            self.zlib
                .compress_vec(rest, out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            pos += progress(in_before, self.zlib.total_in(), rest.len())?;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// How far a zlib counter moved during one call, checked against the size of
/// the buffer it refers to.
fn progress(before: u64, after: u64, bound: usize) -> Result<usize, Error> {
    after
        .checked_sub(before)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= bound)
        .ok_or_else(|| Error::Compression("zlib counters out of range".into()))
}
