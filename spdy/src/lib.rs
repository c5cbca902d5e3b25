//! SPDY/3.1 for the streaming endpoints of a kubelet.
//!
//! kube-apiserver (and `kubectl` through it) talks to a kubelet's `exec`,
//! `attach` and `portforward` endpoints over an HTTP connection upgraded to
//! `SPDY/3.1`, as implemented in Go by `github.com/moby/spdystream` and
//! `k8s.io/apimachinery/pkg/util/httpstream/spdy`. This crate is the Rust
//! side of that wire protocol. There is no maintained SPDY crate for Rust,
//! so the protocol is implemented here by hand, from the SPDY/3 draft and
//! the behaviour of the Go implementation it must interoperate with.
//!
//! * [`frame`]: the frames, their header blocks with the connection-long
//!   zlib compression contexts, and a [`Codec`] that encodes and decodes
//!   them incrementally with bounded memory.
//! * [`conn`]: a server-side [`Connection`] over any async byte stream (for
//!   instance a hyper upgraded connection) that accepts the streams the
//!   client opens and exposes each as an `AsyncRead + AsyncWrite`
//!   [`Stream`].
//!
//! The HTTP upgrade itself (`Connection: Upgrade`, `Upgrade: SPDY/3.1`,
//! `X-Stream-Protocol-Version` negotiation) belongs to the caller; see
//! [`UPGRADE_PROTOCOL`].
//!
//! Like spdystream, this implementation does not do SPDY/3.1 flow control:
//! spdystream ignores SETTINGS and WINDOW_UPDATE and never sends
//! WINDOW_UPDATE, so a peer that enforced windows would stall. Memory is
//! bounded instead by back-pressure on the underlying connection.

#![warn(missing_docs)]

pub mod conn;
mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;

pub use conn::{Config, Connection, RecvStream, SendStream, Stream, StreamRate};
pub use error::Error;
pub use frame::{Codec, Frame, Headers, StreamId};

/// The protocol token of the HTTP upgrade (`Upgrade: SPDY/3.1`).
pub const UPGRADE_PROTOCOL: &str = "SPDY/3.1";

/// Stream header naming the role of a stream: `error`, `stdin`, `stdout`,
/// `stderr` or `resize` for exec/attach, `data` or `error` for port-forward.
pub const HEADER_STREAM_TYPE: &str = "streamtype";

/// Stream header of port-forward streams: the pod port to connect to.
pub const HEADER_PORT: &str = "port";

/// Stream header of port-forward streams: pairs a `data` stream with its
/// `error` stream.
pub const HEADER_REQUEST_ID: &str = "requestid";
