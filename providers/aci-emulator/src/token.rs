//! The Entra ID side (contract item 2): the client-credentials token
//! endpoint `POST /{tenant}/oauth2/v2.0/token`, the OpenID discovery document
//! some clients read first, the issued bearer tokens, and random ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::App;

/// How long an issued token is valid (what Entra ID answers).
const LIFETIME: Duration = Duration::from_secs(3599);
/// The scope of ARM tokens.
const SCOPE: &str = "https://management.azure.com/.default";
/// The scope of Azure Monitor metrics tokens (the batch metrics API).
pub(crate) const METRICS_SCOPE: &str = "https://metrics.monitor.azure.com/.default";

/// Random bytes from the system CSPRNG.
fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // SystemRandom only fails when the OS has no entropy source at all; the
    // bytes then stay zero, which is still a unique-enough id for a test
    // double (tokens also carry a counter).
    let _ = SystemRandom::new().fill(&mut buf);
    buf
}

/// A random version-4 UUID string.
pub(crate) fn uuid() -> String {
    let mut b = random::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random URL-safe secret (tokens, exec passwords).
pub(crate) fn secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>())
}

/// Compares secrets without an early exit.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The issued bearer tokens and their expiry.
#[derive(Default)]
pub(crate) struct Tokens {
    /// Token -> expiry and the scope it was issued for.
    issued: std::sync::Mutex<HashMap<String, (Instant, &'static str)>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

impl Tokens {
    fn issue(&self, scope: &'static str) -> String {
        let token = format!("eyJ0eXAiOiJKV1QifQ.{}.emulator", secret());
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        issued.retain(|_, (exp, _)| *exp > now);
        issued.insert(token.clone(), (now + LIFETIME, scope));
        token
    }

    /// Whether `Authorization` carries a live bearer token issued for ARM.
    pub(crate) fn check(&self, headers: &HeaderMap) -> bool {
        self.check_audience(headers, SCOPE)
    }

    /// Whether `Authorization` carries a live bearer token issued for `scope`.
    pub(crate) fn check_audience(&self, headers: &HeaderMap, scope: &str) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        issued
            .get(token.trim())
            .is_some_and(|(exp, s)| *exp > Instant::now() && *s == scope)
    }
}

fn aad_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": [],
        "timestamp": jiff::Timestamp::now().to_string(),
        "trace_id": uuid(),
        "correlation_id": uuid(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token` (client credentials).
pub(crate) async fn token(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    app.count("Token");
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let response = if tenant != app.config.tenant_id
        && !tenant.eq_ignore_ascii_case("organizations")
    {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!(
                "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."
            ),
        )
    } else if field("grant_type") != "client_credentials" {
        aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type. Only client_credentials is supported here.",
        )
    } else if field("client_id") != app.config.client_id
        || !same_secret(field("client_secret"), &app.config.client_secret)
    {
        aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!(
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                field("client_id")
            ),
        )
    } else if field("scope") != SCOPE && field("scope") != METRICS_SCOPE {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!(
                "AADSTS70011: The provided request must include a 'scope' input parameter of '{SCOPE}'."
            ),
        )
    } else {
        let body: Value = json!({
            "token_type": "Bearer",
            "expires_in": LIFETIME.as_secs(),
            "ext_expires_in": LIFETIME.as_secs(),
            "access_token": app.tokens.issue(if field("scope") == METRICS_SCOPE { METRICS_SCOPE } else { SCOPE }),
        });
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body.to_string(),
        )
            .into_response()
    };
    if response.status().is_client_error() {
        app.count_rejected();
    }
    tracing::debug!(status = response.status().as_u16(), "token request");
    response
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub(crate) async fn openid(State(app): State<Arc<App>>, Path(tenant): Path<String>) -> Response {
    let base = &app.base_url;
    let body = json!({
        "issuer": format!("{base}/{tenant}/v2.0"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "response_types_supported": ["token"],
        "tenant_region_scope": "EU",
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
