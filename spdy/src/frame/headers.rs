//! The name/value header block carried by SYN_STREAM, SYN_REPLY and HEADERS.
//!
//! Uncompressed wire layout (SPDY/3 section 2.6.10): a 32-bit pair count,
//! then per pair a 32-bit name length, the name (lowercase), a 32-bit value
//! length and the value. Several values of one name are joined with NUL
//! bytes. All integers are big-endian.

use std::collections::HashSet;
use std::fmt;

use super::wire::Cursor;
use crate::Error;

/// Separator of multiple values of one header name on the wire.
const VALUE_SEPARATOR: char = '\0';

/// An ordered multimap of header names to values.
///
/// Names are stored lowercase (SPDY/3 requires it on the wire) and looked up
/// ASCII-case-insensitively; insertion order is kept and used when encoding.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<String>)>,
}

impl Headers {
    /// An empty header set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct header names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    /// All values of `name`, in order; empty if absent.
    pub fn get_all(&self, name: &str) -> &[String] {
        self.position(name)
            .and_then(|i| self.entries.get(i))
            .map_or(&[], |(_, values)| values.as_slice())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Sets `name` to the single value `value`, replacing earlier values.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = lowercase(name.into());
        let value = value.into();
        match self.position(&name).and_then(|i| self.entries.get_mut(i)) {
            Some((_, values)) => *values = vec![value],
            None => self.entries.push((name, vec![value])),
        }
    }

    /// Adds `value` to the values of `name`.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = lowercase(name.into());
        let value = value.into();
        match self.position(&name).and_then(|i| self.entries.get_mut(i)) {
            Some((_, values)) => values.push(value),
            None => self.entries.push((name, vec![value])),
        }
    }

    /// Removes `name`, returning its values.
    pub fn remove(&mut self, name: &str) -> Option<Vec<String>> {
        let i = self.position(name)?;
        Some(self.entries.remove(i).1)
    }

    /// The headers in order, each name with all its values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries
            .iter()
            .map(|(name, values)| (name.as_str(), values.as_slice()))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Appends the uncompressed wire form of these headers to `out`.
    pub(crate) fn encode_block(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_len(out, self.entries.len())?;
        for (name, values) in &self.entries {
            if name.is_empty() {
                return Err(Error::InvalidHeaderBlock("empty header name"));
            }
            if name.contains(VALUE_SEPARATOR) {
                return Err(Error::InvalidHeaderBlock("NUL in header name"));
            }
            if values.iter().any(|v| v.contains(VALUE_SEPARATOR)) {
                return Err(Error::InvalidHeaderBlock("NUL in header value"));
            }
            put_len(out, name.len())?;
            out.extend_from_slice(name.as_bytes());
            let value_len = values
                .iter()
                .map(String::len)
                .try_fold(values.len().saturating_sub(1), usize::checked_add)
                .ok_or(Error::InvalidHeaderBlock("header value too long"))?;
            put_len(out, value_len)?;
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push(0);
                }
                out.extend_from_slice(value.as_bytes());
            }
        }
        Ok(())
    }

    /// Parses an uncompressed header block, which must be consumed exactly.
    pub(crate) fn decode_block(block: &[u8]) -> Result<Self, Error> {
        let mut cur = Cursor::new(block);
        let count = cur
            .u32()
            .ok_or(Error::InvalidHeaderBlock("truncated pair count"))?;
        // Every pair takes at least 8 bytes: this bounds the allocation
        // below by the (already limited) size of the block.
        let count = usize::try_from(count)
            .ok()
            .filter(|&n| n <= cur.remaining() / 8)
            .ok_or(Error::InvalidHeaderBlock("pair count exceeds block size"))?;
        let mut entries = Vec::with_capacity(count);
        let mut seen = HashSet::with_capacity(count);
        for _ in 0..count {
            let name = read_string(&mut cur)?;
            if name.is_empty() {
                return Err(Error::InvalidHeaderBlock("empty header name"));
            }
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(Error::InvalidHeaderBlock("header name not lowercase"));
            }
            if name.contains(VALUE_SEPARATOR) {
                return Err(Error::InvalidHeaderBlock("NUL in header name"));
            }
            if !seen.insert(name) {
                return Err(Error::InvalidHeaderBlock("duplicate header name"));
            }
            let value = read_string(&mut cur)?;
            let values = value.split(VALUE_SEPARATOR).map(str::to_owned).collect();
            entries.push((name.to_owned(), values));
        }
        if cur.remaining() != 0 {
            return Err(Error::InvalidHeaderBlock(
                "trailing bytes after header block",
            ));
        }
        Ok(Self { entries })
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Self::new();
        headers.extend(iter);
        headers
    }
}

impl<N: Into<String>, V: Into<String>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (name, value) in iter {
            self.append(name, value);
        }
    }
}

fn lowercase(mut name: String) -> String {
    name.make_ascii_lowercase();
    name
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), Error> {
    let len = u32::try_from(len).map_err(|_| Error::InvalidHeaderBlock("header too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn read_string<'a>(cur: &mut Cursor<'a>) -> Result<&'a str, Error> {
    let len = cur
        .u32()
        .ok_or(Error::InvalidHeaderBlock("truncated length"))?;
    let bytes = usize::try_from(len)
        .ok()
        .and_then(|len| cur.take(len))
        .ok_or(Error::InvalidHeaderBlock("length exceeds block"))?;
    std::str::from_utf8(bytes).map_err(|_| Error::InvalidHeaderBlock("header not UTF-8"))
}
