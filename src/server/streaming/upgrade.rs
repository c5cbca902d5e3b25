//! The HTTP side of the streaming endpoints: recognising an upgrade request,
//! negotiating the sub-protocol, and the `101 Switching Protocols` answer.
//!
//! * **SPDY** (`Connection: Upgrade`, `Upgrade: SPDY/3.1`): the client lists
//!   the versions it speaks in `X-Stream-Protocol-Version` (repeated or
//!   comma-separated, most preferred first); the first one the server also
//!   speaks wins (k8s.io/streaming `httpstream.Handshake`). No header: 400.
//!   No common version: 403 with `X-Accepted-Stream-Protocol-Versions`.
//! * **WebSocket** (RFC 6455, `Upgrade: websocket`): the sub-protocol comes
//!   from `Sec-WebSocket-Protocol`, again the client's first acceptable one;
//!   a request without the header gets the unnamed protocol `""` if the
//!   endpoint allows it. The accept key is derived from `Sec-WebSocket-Key`.
//!   No acceptable protocol: 403 naming the supported ones.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::server::error::ApiError;

/// Request header listing the SPDY sub-protocols a client speaks.
pub(super) const PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// Response header listing the SPDY sub-protocols the server speaks.
pub(super) const ACCEPTED_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";

/// Why an upgrade request is refused: an HTTP error, with the SPDY
/// versions the server accepts when none was common.
#[derive(Debug)]
pub(crate) struct Refusal {
    error: ApiError,
    accepted: &'static [&'static str],
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            accepted: &[],
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = self.error.into_response();
        for s in self.accepted {
            resp.headers_mut()
                .append(ACCEPTED_VERSIONS, HeaderValue::from_static(s));
        }
        resp
    }
}

/// Whether a header's comma-separated values contain `token`
/// (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a connection upgrade to a WebSocket.
pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

/// Whether the request asks for a connection upgrade to SPDY/3.1.
pub(super) fn is_spdy(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, skylet_spdy::UPGRADE_PROTOCOL)
}

/// The values of a comma-separated, possibly repeated header, trimmed, empty
/// ones dropped.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Picks the SPDY sub-protocol: the client's most preferred one among
/// `supported`.
///
/// # Errors
/// 400 without a version header, 403 (with the accepted versions) when no
/// version is common.
pub(super) fn spdy_protocol(
    headers: &HeaderMap,
    supported: &'static [&'static str],
) -> Result<&'static str, Refusal> {
    let offered = list(headers, PROTOCOL_VERSION);
    if offered.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: header {PROTOCOL_VERSION} is missing or empty"
        ))
        .into());
    }
    if let Some(p) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()))
    {
        return Ok(p);
    }
    let error = ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
        ),
    );
    Err(Refusal {
        error,
        accepted: supported,
    })
}

/// The `101` answer to a SPDY upgrade.
pub(super) fn spdy_switching(protocol: &'static str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::UPGRADE,
        HeaderValue::from_static(skylet_spdy::UPGRADE_PROTOCOL),
    );
    h.insert(PROTOCOL_VERSION, HeaderValue::from_static(protocol));
    resp
}

/// A negotiated WebSocket handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WebSocket {
    /// The chosen sub-protocol, `""` when the client named none.
    pub(super) protocol: &'static str,
    /// `Sec-WebSocket-Accept`.
    accept: String,
}

/// Checks a WebSocket upgrade request and picks its sub-protocol: the
/// client's most preferred one among `supported` (which may contain `""`
/// for clients that name none).
///
/// # Errors
/// 400 when the request is not a valid version-13 handshake, 403 when no
/// offered sub-protocol is supported.
pub(super) fn websocket(
    headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<WebSocket, ApiError> {
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|k| !k.is_empty());
    let (true, Some(key)) = (version_ok, key) else {
        return Err(ApiError::bad_request(
            "unable to upgrade: not a WebSocket version 13 handshake",
        ));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let offered = list(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str());
    let chosen = if offered.is_empty() {
        supported.iter().find(|s| s.is_empty()).copied()
    } else {
        offered.iter().find_map(|o| {
            supported
                .iter()
                .find(|s| !s.is_empty() && **s == o.as_str())
                .copied()
        })
    };
    match chosen {
        Some(protocol) => Ok(WebSocket { protocol, accept }),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: requested WebSocket protocol(s) {offered:?} are not supported; supports {supported:?}"
            ),
        )),
    }
}

/// The `101` answer to a WebSocket upgrade.
pub(super) fn websocket_switching(ws: &WebSocket) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&ws.accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !ws.protocol.is_empty() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(ws.protocol),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const EXEC: &[&str] = &[
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];

    #[test]
    fn spdy_picks_the_clients_first_supported_version() {
        let h = headers(&[
            (PROTOCOL_VERSION, "v9.channel.k8s.io, v4.channel.k8s.io"),
            (PROTOCOL_VERSION, "v5.channel.k8s.io"),
        ]);
        assert_eq!(spdy_protocol(&h, EXEC).unwrap(), "v4.channel.k8s.io");
        let h = headers(&[
            (PROTOCOL_VERSION, "v5.channel.k8s.io"),
            (PROTOCOL_VERSION, "v4.channel.k8s.io"),
        ]);
        assert_eq!(spdy_protocol(&h, EXEC).unwrap(), "v5.channel.k8s.io");
    }

    #[test]
    fn spdy_without_a_common_version_is_403_listing_ours() {
        let h = headers(&[(PROTOCOL_VERSION, "v9.channel.k8s.io")]);
        let resp = spdy_protocol(&h, EXEC).unwrap_err().into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let accepted: Vec<_> = resp
            .headers()
            .get_all(ACCEPTED_VERSIONS)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(accepted, EXEC);
        let resp = spdy_protocol(&headers(&[]), EXEC)
            .unwrap_err()
            .into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn spdy_switching_names_the_version() {
        let resp = spdy_switching("v4.channel.k8s.io");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()[header::UPGRADE], "SPDY/3.1");
        assert_eq!(resp.headers()[header::CONNECTION], "Upgrade");
        assert_eq!(resp.headers()[PROTOCOL_VERSION], "v4.channel.k8s.io");
    }

    #[test]
    fn upgrade_kinds_are_recognised() {
        assert!(is_spdy(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "spdy/3.1")
        ])));
        assert!(!is_spdy(&headers(&[("upgrade", "SPDY/3.1")])));
        assert!(is_websocket(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_websocket(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1")
        ])));
    }

    #[test]
    fn websocket_negotiation_follows_the_client_and_derives_the_key() {
        const WS: &[&str] = &[
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "channel.k8s.io",
            "",
        ];
        let base = [
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let mut h = headers(&base);
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        let ws = websocket(&h, WS).unwrap();
        assert_eq!(ws.protocol, "v4.channel.k8s.io");
        // the RFC 6455 example
        assert_eq!(ws.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let resp = websocket_switching(&ws);
        assert_eq!(
            resp.headers()[header::SEC_WEBSOCKET_PROTOCOL],
            "v4.channel.k8s.io"
        );
        assert_eq!(
            resp.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // no protocol header: the unnamed protocol, if allowed
        assert_eq!(websocket(&headers(&base), WS).unwrap().protocol, "");
        assert_eq!(
            websocket(&headers(&base), &WS[..3]).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        let mut h = headers(&base);
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v9.channel.k8s.io"),
        );
        assert_eq!(
            websocket(&h, WS).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        // not version 13
        assert_eq!(
            websocket(&headers(&base[1..]), WS).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
