//! The binary messages of the Session Manager data channel ("agent
//! messages"), as the open-source session-manager-plugin
//! (`src/message/clientmessage.go`, `messageparser.go`) lays them out.
//! Every field is big-endian:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | header length: 116, the offset of the payload length |
//! | 4 | 32 | message type, UTF-8, padded with spaces (`input_stream_data`, `output_stream_data`, `acknowledge`, `channel_closed`, `start_publication`, `pause_publication`) |
//! | 36 | 4 | schema version (1) |
//! | 40 | 8 | created date, milliseconds since the epoch |
//! | 48 | 8 | sequence number (signed) |
//! | 56 | 8 | flags (bit 0 SYN, bit 1 FIN; acknowledgements carry 3) |
//! | 64 | 16 | message id, a UUID: its low 8 bytes first, then its high 8 |
//! | 80 | 32 | SHA-256 of the payload |
//! | 112 | 4 | payload type ([`PayloadType`]) |
//! | 116 | 4 | payload length |
//! | 120 | n | payload |
//!
//! Hand-written: no crate speaks this protocol.

use ring::digest;
use uuid::Uuid;

/// The offset of the payload length, which the header length field holds.
pub const HEADER_LENGTH: u32 = 116;
const TYPE_LEN: usize = 32;
const PAYLOAD_OFFSET: usize = 120;

/// Message types.
pub mod kind {
    /// Data from the client (stdin, terminal size, handshake answers).
    pub const INPUT: &str = "input_stream_data";
    /// Data from the agent (output, handshake requests).
    pub const OUTPUT: &str = "output_stream_data";
    /// The receipt of a stream message.
    pub const ACK: &str = "acknowledge";
    /// The session ended.
    pub const CHANNEL_CLOSED: &str = "channel_closed";
    /// The agent is ready for input again.
    pub const START_PUBLICATION: &str = "start_publication";
    /// The agent asks the client to hold its input.
    pub const PAUSE_PUBLICATION: &str = "pause_publication";
}

/// What a stream message's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PayloadType {
    /// None (acknowledgements, channel_closed: JSON without a type).
    None = 0,
    /// Terminal output, or the client's input.
    Output = 1,
    /// An error text.
    Error = 2,
    /// The terminal size, JSON `{"cols":80,"rows":24}`.
    Size = 3,
    /// Parameters.
    Parameter = 4,
    /// The agent's handshake request (JSON).
    HandshakeRequest = 5,
    /// The client's handshake response (JSON).
    HandshakeResponse = 6,
    /// The agent's end of the handshake (JSON).
    HandshakeComplete = 7,
    /// KMS encryption challenge (not supported by skylet).
    EncChallengeRequest = 8,
    /// Its answer.
    EncChallengeResponse = 9,
    /// A control flag (disconnect, terminate).
    Flag = 10,
    /// Standard error, in sessions that keep it apart.
    StdErr = 11,
    /// `EXIT_CODE: N`, in sessions that report one.
    ExitCode = 12,
}

impl PayloadType {
    /// The type of a wire value (`None` for unknown values).
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::Output,
            2 => Self::Error,
            3 => Self::Size,
            4 => Self::Parameter,
            5 => Self::HandshakeRequest,
            6 => Self::HandshakeResponse,
            7 => Self::HandshakeComplete,
            8 => Self::EncChallengeRequest,
            9 => Self::EncChallengeResponse,
            10 => Self::Flag,
            11 => Self::StdErr,
            12 => Self::ExitCode,
            _ => return None,
        })
    }
}

/// One agent message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentMessage {
    /// [`kind`].
    pub message_type: String,
    /// Schema version (1).
    pub schema_version: u32,
    /// Milliseconds since the epoch.
    pub created_date: u64,
    /// Position in its stream.
    pub sequence_number: i64,
    /// SYN/FIN bits.
    pub flags: u64,
    /// Unique id.
    pub message_id: Uuid,
    /// [`PayloadType`] as sent (unknown values kept).
    pub payload_type: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why bytes are not a valid agent message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header.
    #[error("agent message too short: {0} bytes")]
    Short(usize),
    /// The header length is not the one the protocol defines.
    #[error("agent message header length {0}, expected {HEADER_LENGTH}")]
    HeaderLength(u32),
    /// The payload length does not match the bytes that follow.
    #[error("agent message payload length {declared}, but {actual} bytes follow")]
    PayloadLength {
        /// What the header says.
        declared: u32,
        /// What came.
        actual: usize,
    },
    /// The digest does not match the payload.
    #[error("agent message payload digest does not match")]
    Digest,
}

fn now_millis() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

impl AgentMessage {
    /// A message of `message_type` with `payload`, created now, with a
    /// random id.
    pub fn new(
        message_type: &str,
        sequence_number: i64,
        flags: u64,
        payload_type: PayloadType,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            message_type: message_type.to_owned(),
            schema_version: 1,
            created_date: now_millis(),
            sequence_number,
            flags,
            message_id: random_uuid(),
            payload_type: payload_type as u32,
            payload,
        }
    }

    /// The payload type, if known.
    pub fn payload_kind(&self) -> Option<PayloadType> {
        PayloadType::from_u32(self.payload_type)
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYLOAD_OFFSET + self.payload.len());
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        let mut kind = [b' '; TYPE_LEN];
        let n = self.message_type.len().min(TYPE_LEN);
        kind[..n].copy_from_slice(&self.message_type.as_bytes()[..n]);
        out.extend_from_slice(&kind);
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        let (high, low) = self.message_id.as_u64_pair();
        out.extend_from_slice(&low.to_be_bytes());
        out.extend_from_slice(&high.to_be_bytes());
        out.extend_from_slice(digest::digest(&digest::SHA256, &self.payload).as_ref());
        out.extend_from_slice(&self.payload_type.to_be_bytes());
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses the wire bytes, checking lengths and the payload digest.
    ///
    /// # Errors
    /// See [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < PAYLOAD_OFFSET {
            return Err(DecodeError::Short(bytes.len()));
        }
        let u32_at = |o: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[o..o + 4]);
            u32::from_be_bytes(b)
        };
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_be_bytes(b)
        };
        let header = u32_at(0);
        if header != HEADER_LENGTH {
            return Err(DecodeError::HeaderLength(header));
        }
        let message_type = String::from_utf8_lossy(&bytes[4..4 + TYPE_LEN])
            .trim_matches(|c: char| c == ' ' || c == '\0')
            .to_owned();
        let declared = u32_at(116);
        let payload = &bytes[PAYLOAD_OFFSET..];
        if usize::try_from(declared).ok() != Some(payload.len()) {
            return Err(DecodeError::PayloadLength {
                declared,
                actual: payload.len(),
            });
        }
        if !payload.is_empty()
            && digest::digest(&digest::SHA256, payload).as_ref() != &bytes[80..112]
        {
            return Err(DecodeError::Digest);
        }
        let low = u64_at(64);
        let high = u64_at(72);
        Ok(Self {
            message_type,
            schema_version: u32_at(36),
            created_date: u64_at(40),
            sequence_number: i64::from_be_bytes(u64_at(48).to_be_bytes()),
            flags: u64_at(56),
            message_id: Uuid::from_u64_pair(high, low),
            payload_type: u32_at(112),
            payload: payload.to_vec(),
        })
    }
}

/// A random (version 4) UUID from the system's randomness.
pub fn random_uuid() -> Uuid {
    let mut bytes = [0u8; 16];
    // the system's randomness does not fail on the platforms skylet runs
    // on; an all-zero id would still be a valid (if not unique) one
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_plugins() {
        let id = Uuid::from_u64_pair(0x0102_0304_0506_0708, 0x090a_0b0c_0d0e_0f10);
        let m = AgentMessage {
            message_type: kind::INPUT.to_owned(),
            schema_version: 1,
            created_date: 0x0000_0190_0000_0001,
            sequence_number: 7,
            flags: 0,
            message_id: id,
            payload_type: PayloadType::Output as u32,
            payload: b"ls\r".to_vec(),
        };
        let b = m.encode();
        assert_eq!(b.len(), 123);
        assert_eq!(&b[0..4], &[0, 0, 0, 116]);
        assert_eq!(&b[4..21], b"input_stream_data");
        assert!(b[21..36].iter().all(|c| *c == b' '));
        assert_eq!(&b[36..40], &[0, 0, 0, 1]);
        assert_eq!(&b[48..56], &[0, 0, 0, 0, 0, 0, 0, 7]);
        // low half of the UUID first
        assert_eq!(&b[64..72], &[9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(&b[72..80], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[112..116], &[0, 0, 0, 1]);
        assert_eq!(&b[116..120], &[0, 0, 0, 3]);
        assert_eq!(&b[120..], b"ls\r");
        assert_eq!(AgentMessage::decode(&b).unwrap(), m);
        assert_eq!(
            id.hyphenated().to_string(),
            "01020304-0506-0708-090a-0b0c0d0e0f10"
        );
    }

    #[test]
    fn damaged_messages_are_refused() {
        let b = AgentMessage::new(kind::OUTPUT, 0, 0, PayloadType::Output, b"hi".to_vec()).encode();
        assert_eq!(AgentMessage::decode(&b[..50]), Err(DecodeError::Short(50)));
        let mut bad = b.clone();
        bad[121] ^= 1;
        assert_eq!(AgentMessage::decode(&bad), Err(DecodeError::Digest));
        let mut long = b;
        long.push(0);
        assert!(matches!(
            AgentMessage::decode(&long),
            Err(DecodeError::PayloadLength {
                declared: 2,
                actual: 3
            })
        ));
    }
}
