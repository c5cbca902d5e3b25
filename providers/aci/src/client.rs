//! A typed ARM client for `Microsoft.ContainerInstance` (api-version
//! [`API_VERSION`]): container groups, their logs, exec and attach, and
//! location usages.
//!
//! There is no maintained Rust ACI client (`azure_mgmt_containerinstance` is
//! frozen on an old azure_core), so this is our own, on azure_core's HTTP
//! pipeline (bearer-token policy, user agent, request ids) and
//! azure_identity's credentials. Group bodies are generic: the caller's
//! models (`crate::models`) are sent and parsed as they are.
//!
//! # Transport
//! One reqwest client on rustls with *ring* carries the ARM calls and the
//! credential's token requests; it trusts the system roots plus the PEM
//! certificates of [`ClientConfig::ca_file`]. The same roots are exposed
//! ([`ArmClient::tls`]) for the exec/attach WebSockets. azure_core's bearer
//! policy refuses `http://` endpoints, so ARM must be HTTPS (the emulator is,
//! with its own CA).
//!
//! # Retries
//! azure_core's own retry policy is off; [`ArmClient`] retries 408, 429 and
//! 5xx (not 501/505) up to [`ClientConfig::max_attempts`] attempts in all,
//! waiting what `Retry-After` (seconds or HTTP date) or `retry-after-ms`
//! says, clamped to 60 s, else exponential backoff with jitter
//! ([`retry::backoff`], the workspace's [`skylet_provider::Backoff`]). Connection
//! failures (the request never left) are retried for every call; other I/O
//! failures only for idempotent calls, which here includes PUT (group names
//! are deterministic, a repeated PUT of the same body is a no-op) and the
//! stop POST, but not exec/attach (each creates a session). Credential
//! failures are not retried. What is still failing after that is an
//! [`ArmError`]; `impl From<ArmError> for ProviderError` classifies it.
//!
//! # Metrics
//! Through the core's [`ApiMetrics`] ([`ClientConfig::metrics`]), service
//! [`SERVICE`] (`arm`), the operation names of the spec
//! (`ContainerGroups_Get`, ...): `call` once per request skylet makes (each
//! page of a list, each poll of a long-running operation), `request` per
//! attempt with its outcome (a 429 is `throttled`; `network` when no answer
//! came), and `error` with the ARM error code for a call that failed after
//! its retries ([`ArmError::metric_code`]).
//!
//! # RBAC
//! The identity needs, on the resource group:
//! `Microsoft.ContainerInstance/containerGroups/{read,write,delete}`,
//! `.../containerGroups/stop/action`, `.../containerGroups/containers/logs/read`,
//! `.../containerGroups/containers/exec/action`,
//! `.../containerGroups/containers/attach/action`; on the subscription,
//! `Microsoft.ContainerInstance/locations/usages/read` and
//! `Microsoft.ContainerInstance/locations/operations/read`. The built-in
//! role "Azure Container Instances Contributor Role" has them all. A 401/403
//! becomes a transient error naming the action that was refused.
//!
//! # Secrets
//! Tokens never leave azure_core; exec/attach passwords ([`Session`]) and
//! client secrets ([`Auth`]) are hidden from `Debug` and never logged.

mod auth;
pub mod retry;

use std::{
    collections::HashSet,
    fmt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use azure_core::{
    error::ErrorKind,
    http::{
        ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, RetryOptions,
        Transport, Url, UserAgentOptions,
        headers::{
            ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, Headers, RETRY_AFTER, RETRY_AFTER_MS,
            X_MS_RETRY_AFTER_MS,
        },
        policies::{Policy, auth::BearerTokenAuthorizationPolicy},
    },
};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use skylet_provider::{ApiMetrics, ProviderError, metrics::Outcome};

/// The api-version of every call.
pub const API_VERSION: &str = "2026-05-01";
/// The public cloud's ARM endpoint.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// The public cloud's Entra ID authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The token scope for ARM in the public cloud.
pub const DEFAULT_TOKEN_SCOPE: &str = "https://management.azure.com/.default";
/// Default number of attempts per call.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// How often [`ArmClient::wait`] polls when the server gives no `Retry-After`.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// The `service` label of ARM calls in [`ApiMetrics`].
pub const SERVICE: &str = "arm";

const RESOURCE_PROVIDER: &str = "Microsoft.ContainerInstance";
const AZURE_ASYNCOPERATION: HeaderName = HeaderName::from_static("azure-asyncoperation");
const LOCATION: HeaderName = HeaderName::from_static("location");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");

/// How the client authenticates to Entra ID.
#[derive(Clone, Default)]
pub enum Auth {
    /// A chain: workload identity (from the webhook's environment), then
    /// managed identity, then the Azure CLI; the first that yields a token
    /// is kept.
    #[default]
    Default,
    /// A service principal with a client secret.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The secret (never logged).
        client_secret: String,
    },
    /// Entra Workload ID (a federated Kubernetes service account token).
    /// Unset fields default to what the Azure workload identity webhook
    /// injects: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE` (and `AZURE_AUTHORITY_HOST` for the
    /// authority when [`ClientConfig::authority_host`] is unset).
    WorkloadIdentity {
        /// Directory (tenant) id.
        tenant_id: Option<String>,
        /// Application (client) id.
        client_id: Option<String>,
        /// The projected service account token.
        token_file: Option<PathBuf>,
    },
    /// The managed identity of the VM or service; `client_id` picks a
    /// user-assigned one.
    ManagedIdentity {
        /// Client id of a user-assigned identity; `None` for system-assigned.
        client_id: Option<String>,
    },
    /// Tokens from `az account get-access-token` (development).
    AzureCli,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("Default"),
            Self::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .finish(),
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => f
                .debug_struct("WorkloadIdentity")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Self::AzureCli => f.write_str("AzureCli"),
        }
    }
}

/// Configuration of an [`ArmClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The subscription holding the resource group.
    pub subscription_id: String,
    /// ARM's base URL (HTTPS), [`DEFAULT_ARM_ENDPOINT`] by default.
    pub arm_endpoint: String,
    /// Entra ID authority (HTTPS); `None` = `AZURE_AUTHORITY_HOST` or the
    /// public cloud.
    pub authority_host: Option<String>,
    /// The token scope; `None` = [`DEFAULT_TOKEN_SCOPE`] (set it for a
    /// sovereign cloud, e.g. `https://management.usgovcloudapi.net/.default`).
    pub token_scope: Option<String>,
    /// PEM certificates trusted in addition to the system roots (ARM, the
    /// token endpoint and the exec/attach WebSockets).
    pub ca_file: Option<PathBuf>,
    /// How to authenticate.
    pub auth: Auth,
    /// Attempts per call, retries included (at least 1).
    pub max_attempts: u32,
    /// Application id at the front of the `User-Agent` header: at most 24
    /// RFC 9110 token characters (`skylet` by default).
    pub user_agent: Option<String>,
    /// Where calls are counted (detached counters by default).
    pub metrics: ApiMetrics,
}

impl ClientConfig {
    /// A configuration for the public cloud with defaults.
    pub fn new(subscription_id: impl Into<String>, auth: Auth) -> Self {
        Self {
            subscription_id: subscription_id.into(),
            arm_endpoint: DEFAULT_ARM_ENDPOINT.to_owned(),
            authority_host: None,
            token_scope: None,
            ca_file: None,
            auth,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            user_agent: None,
            metrics: ApiMetrics::detached("azure-aci"),
        }
    }
}

/// Why an [`ArmClient`] could not be built (configuration errors: fail at
/// start-up).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `subscription_id` is empty.
    #[error("no Azure subscription id configured")]
    NoSubscription,
    /// An endpoint is not an absolute HTTPS URL.
    #[error("{what} {url:?} is not an https:// URL")]
    Endpoint {
        /// Which option.
        what: &'static str,
        /// Its value.
        url: String,
    },
    /// The user agent application id is not acceptable to azure_core.
    #[error("user agent {0:?} must be 1-24 characters of letters, digits and !#$%&'*+-.^_`|~")]
    UserAgent(String),
    /// The CA file cannot be read or parsed.
    #[error("could not read CA certificates from {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The CA file holds no certificate.
    #[error("no PEM certificate in {0}")]
    EmptyCaFile(PathBuf),
    /// A certificate of the CA file is not a valid trust anchor.
    #[error("invalid CA certificate in {path}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// No system roots and no CA file.
    #[error("no trusted root certificates: install the system CA bundle or set a CA file")]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Tls(#[source] rustls::Error),
    /// reqwest could not build its client.
    #[error("could not build the HTTP client")]
    Http(#[source] reqwest::Error),
    /// A credential could not be created (missing ids or token file).
    #[error("could not set up the {kind} credential")]
    Credential {
        /// Which credential.
        kind: &'static str,
        /// Why.
        source: azure_core::Error,
    },
    /// No source of the default chain is available.
    #[error(
        "no Azure credential available (set a client secret, workload or managed identity): {0}"
    )]
    NoCredential(String),
}

/// One ARM operation: its name (metrics, errors), the RBAC action it needs
/// and whether repeating it is harmless.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    pub(crate) name: &'static str,
    action: &'static str,
    idempotent: bool,
}

const PUT_GROUP: Op = Op {
    name: "ContainerGroups_CreateOrUpdate",
    action: "Microsoft.ContainerInstance/containerGroups/write",
    idempotent: true,
};
const GET_GROUP: Op = Op {
    name: "ContainerGroups_Get",
    action: "Microsoft.ContainerInstance/containerGroups/read",
    idempotent: true,
};
pub(crate) const LIST_GROUPS: Op = Op {
    name: "ContainerGroups_ListByResourceGroup",
    action: "Microsoft.ContainerInstance/containerGroups/read",
    idempotent: true,
};
const STOP_GROUP: Op = Op {
    name: "ContainerGroups_Stop",
    action: "Microsoft.ContainerInstance/containerGroups/stop/action",
    idempotent: true,
};
const DELETE_GROUP: Op = Op {
    name: "ContainerGroups_Delete",
    action: "Microsoft.ContainerInstance/containerGroups/delete",
    idempotent: true,
};
const GET_OPERATION: Op = Op {
    name: "Operations_GetStatus",
    action: "Microsoft.ContainerInstance/locations/operations/read",
    idempotent: true,
};
const LIST_LOGS: Op = Op {
    name: "Containers_ListLogs",
    action: "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
    idempotent: true,
};
const EXEC: Op = Op {
    name: "Containers_ExecuteCommand",
    action: "Microsoft.ContainerInstance/containerGroups/containers/exec/action",
    idempotent: false,
};
const ATTACH: Op = Op {
    name: "Containers_Attach",
    action: "Microsoft.ContainerInstance/containerGroups/containers/attach/action",
    idempotent: false,
};
const USAGES: Op = Op {
    name: "Location_ListUsage",
    action: "Microsoft.ContainerInstance/locations/usages/read",
    idempotent: true,
};

// ---- wire types (shaped by the spec) ----

/// `CloudError`: the body of every ARM error answer.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CloudError {
    /// The error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CloudErrorBody>,
}

/// `CloudErrorBody` (also the shape of the ARM common `ErrorDetail` in
/// operation status results).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CloudErrorBody {
    /// Machine-readable code (`ResourceNotFound`, `InvalidRequestContent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the error is about (a property path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Nested errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<CloudErrorBody>,
}

/// The status of a long-running operation (ARM common
/// `OperationStatusResult`, as an `Azure-AsyncOperation` URL answers).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// Resource id of the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Operation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `InProgress`, `Succeeded`, `Failed` or `Canceled`.
    pub status: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Progress, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CloudErrorBody>,
}

/// `Logs`: the answer of Containers_ListLogs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Logs {
    /// The log text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `ContainerExecRequestTerminalSize`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct TerminalSize {
    /// Rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i32>,
    /// Columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<i32>,
}

/// `ContainerExecRequest`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerExecRequest {
    /// The command (ACI splits it on whitespace; no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The terminal size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_size: Option<TerminalSize>,
}

/// `ContainerExecResponse` and `ContainerAttachResponse`: the spec defines
/// both as a WebSocket URI and its password (sent first on exec, as the
/// `Authorization` header on attach); secret, so `Debug` hides it.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SocketResponse {
    /// The WebSocket to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_socket_uri: Option<String>,
    /// Its password (secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for SocketResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketResponse")
            .field("web_socket_uri", &self.web_socket_uri)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `ContainerExecResponse`.
pub type ContainerExecResponse = SocketResponse;
/// `ContainerAttachResponse`.
pub type ContainerAttachResponse = SocketResponse;

/// `UsageName`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageName {
    /// The name (`ContainerGroups`, `StandardCores`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Its display form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localized_value: Option<String>,
}

/// `Usage`: one quota of a location.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Id of the usage result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unit (`Count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Current use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_value: Option<i32>,
    /// The limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i32>,
    /// What is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<UsageName>,
}

/// A page of a list answer (`ContainerGroupListResult`, `UsageListResult`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(default)]
    next_link: Option<String>,
}

// ---- results ----

/// How a long-running operation is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// An `Azure-AsyncOperation` URL: GET answers an [`OperationStatus`].
    AsyncOperation,
    /// A `Location` URL: GET answers 202 while in progress, 200/204 when done.
    Location,
}

/// A long-running operation to follow with [`ArmClient::wait`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The URL to poll.
    pub url: String,
    /// What the URL answers.
    pub kind: OperationKind,
    /// The `Retry-After` of the answer that started it.
    pub retry_after: Option<Duration>,
}

impl Operation {
    /// The operation an answer's headers announce: `Azure-AsyncOperation`
    /// preferred, else `Location`.
    fn from_headers(headers: &Headers) -> Option<Self> {
        let retry_after = retry_after(headers);
        let header = |name: &HeaderName| {
            headers
                .get_optional_str(name)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        if let Some(url) = header(&AZURE_ASYNCOPERATION) {
            return Some(Self {
                url: url.to_owned(),
                kind: OperationKind::AsyncOperation,
                retry_after,
            });
        }
        header(&LOCATION).map(|url| Self {
            url: url.to_owned(),
            kind: OperationKind::Location,
            retry_after,
        })
    }
}

/// The outcome of [`ArmClient::put_group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// 201: the group is new; 200: it existed (updated or unchanged).
    pub created: bool,
    /// The provisioning operation, when ARM announced one.
    pub operation: Option<Operation>,
}

/// An exec or attach WebSocket and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The `wss://` URI.
    pub uri: String,
    /// Exec: the first message to send. Attach: the `Authorization` header.
    pub password: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("uri", &self.uri)
            .field("password", &"<redacted>")
            .finish()
    }
}

// ---- errors ----

/// A failed ARM call, after retries.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// ARM answered with an error status.
    #[error("{operation}: HTTP {status} {code}: {message}")]
    Status {
        /// The operation.
        operation: &'static str,
        /// The RBAC action it needs.
        action: &'static str,
        /// HTTP status.
        status: u16,
        /// ARM error code (or the status's reason phrase).
        code: String,
        /// ARM's message.
        message: String,
        /// What `Retry-After` said.
        retry_after: Option<Duration>,
        /// `x-ms-request-id`, for support cases.
        request_id: Option<String>,
    },
    /// No access token (wrong secret, no identity, ...).
    #[error("{operation}: could not get an Azure access token")]
    Credential {
        /// The operation.
        operation: &'static str,
        /// Why.
        source: azure_core::Error,
    },
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("{operation}: request to ARM failed")]
    Transport {
        /// The operation.
        operation: &'static str,
        /// Why.
        source: azure_core::Error,
    },
    /// A body that is not what the spec says.
    #[error("{operation}: unexpected JSON")]
    Json {
        /// The operation.
        operation: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// An answer that breaks the protocol (a link to another host, a loop).
    #[error("{operation}: {message}")]
    Protocol {
        /// The operation.
        operation: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A long-running operation ended other than `Succeeded`.
    #[error("long-running operation {status}: {code}: {message}")]
    OperationFailed {
        /// `Failed`, `Canceled`.
        status: String,
        /// ARM error code.
        code: String,
        /// ARM's message.
        message: String,
    },
    /// [`ArmClient::wait`] gave up.
    #[error("long-running operation still running after {0:?}")]
    Timeout(Duration),
}

impl ArmError {
    /// The HTTP status, for [`ArmError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The ARM error code, for [`ArmError::Status`] and
    /// [`ArmError::OperationFailed`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } | Self::OperationFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether ARM said 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The `code` label of the error in [`ApiMetrics::error`]: ARM's error
    /// code (`ResourceNotFound`, `TooManyRequests`), else what kind of
    /// failure it was (`credential`, `network`, `invalid_json`,
    /// `protocol`). `None` for [`ArmError::Timeout`]: skylet's own deadline
    /// passed, no call failed.
    pub fn metric_code(&self) -> Option<&str> {
        Some(match self {
            Self::Status { code, .. } => code,
            Self::OperationFailed { code, status, .. } => {
                if code.is_empty() {
                    status
                } else {
                    code
                }
            }
            Self::Credential { .. } => "credential",
            Self::Transport { .. } => "network",
            Self::Json { .. } => "invalid_json",
            Self::Protocol { .. } => "protocol",
            Self::Timeout(_) => return None,
        })
    }
}

/// 400 codes that are about the call or the configuration, not about the
/// pod: retried by the core (after the operator fixes things), not a pod
/// failure.
const NOT_CONTENT_CODES: &[&str] = &[
    "MissingApiVersionParameter",
    "InvalidApiVersionParameter",
    "NoRegisteredProviderFound",
    "InvalidSubscriptionId",
    "SubscriptionNotFound",
    "MissingSubscriptionRegistration",
    "InvalidResourceNamespace",
    "InvalidResourceType",
    "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenAudience",
    "AuthenticationFailed",
    "ResourceGroupNotFound",
];

/// Whether a 400 with this ARM code means the pod's content was rejected
/// (a bad image name, resources out of range, an invalid name): everything
/// except protocol/configuration codes and quota codes.
pub fn is_content_error(code: &str) -> bool {
    !(NOT_CONTENT_CODES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(code))
        || code.to_ascii_lowercase().contains("quota"))
}

/// A 401/403: names the RBAC action to grant.
#[derive(Debug, thiserror::Error)]
#[error("Azure denied {operation}: the identity needs RBAC action {action} on the resource group")]
pub struct AccessDenied {
    /// The operation.
    pub operation: &'static str,
    /// The action to grant.
    pub action: &'static str,
    /// ARM's answer.
    pub source: ArmError,
}

impl From<ArmError> for ProviderError {
    fn from(e: ArmError) -> Self {
        match e {
            ArmError::Status {
                status: 404,
                message,
                code,
                ..
            } => ProviderError::NotFound(if message.is_empty() { code } else { message }),
            ArmError::Status {
                status: 429,
                retry_after,
                ..
            } => ProviderError::Throttled { retry_after },
            ArmError::Status {
                status: 400,
                ref code,
                ref message,
                ..
            } if is_content_error(code) => ProviderError::invalid("AciRejected", message.clone()),
            ArmError::Status {
                status: 401 | 403,
                operation,
                action,
                ..
            } => ProviderError::transient(AccessDenied {
                operation,
                action,
                source: e,
            }),
            other => ProviderError::transient(other),
        }
    }
}

/// What a header says about waiting: `retry-after-ms`,
/// `x-ms-retry-after-ms`, then `Retry-After`.
fn retry_after(headers: &Headers) -> Option<Duration> {
    [RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS]
        .iter()
        .find_map(|h| {
            headers
                .get_optional_str(h)
                .and_then(retry::parse_retry_after_ms)
        })
        .or_else(|| {
            headers
                .get_optional_str(&RETRY_AFTER)
                .and_then(|v| retry::parse_retry_after(v, jiff::Timestamp::now()))
        })
}

// ---- the client ----

/// An answer, body read.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Headers,
    body: Bytes,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, op: Op) -> Result<T, ArmError> {
        serde_json::from_slice(&self.body).map_err(|source| ArmError::Json {
            operation: op.name,
            source,
        })
    }

    /// The [`ArmError::Status`] this answer is.
    fn error(&self, op: Op) -> ArmError {
        let body = serde_json::from_slice::<CloudError>(&self.body)
            .ok()
            .and_then(|e| e.error)
            .or_else(|| serde_json::from_slice::<CloudErrorBody>(&self.body).ok())
            .unwrap_or_default();
        let code = body.code.filter(|c| !c.is_empty()).unwrap_or_else(|| {
            azure_core::http::StatusCode::from(self.status)
                .canonical_reason()
                .into_owned()
        });
        let message = body.message.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&self.body);
            text.chars().take(300).collect()
        });
        ArmError::Status {
            operation: op.name,
            action: op.action,
            status: self.status,
            code,
            message,
            retry_after: retry_after(&self.headers),
            request_id: self.headers.get_optional_string(&REQUEST_ID),
        }
    }
}

/// The ARM client. Cheap to share (`Arc`); every method takes `&self`.
pub struct ArmClient {
    pipeline: Pipeline,
    endpoint: Url,
    subscription_id: String,
    tls: Arc<rustls::ClientConfig>,
    max_attempts: u32,
    metrics: ApiMetrics,
}

impl fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("subscription_id", &self.subscription_id)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

fn https_url(what: &'static str, url: &str) -> Result<Url, ClientError> {
    let err = || ClientError::Endpoint {
        what,
        url: url.to_owned(),
    };
    let parsed = Url::parse(url).map_err(|_| err())?;
    if parsed.scheme() != "https" || parsed.cannot_be_a_base() || parsed.host_str().is_none() {
        return Err(err());
    }
    Ok(parsed)
}

fn valid_user_agent(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 24
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

impl ArmClient {
    /// Builds the client: TLS roots, HTTP transport, credential, pipeline.
    /// No network call is made (the first token is fetched by the first
    /// request).
    ///
    /// # Errors
    /// [`ClientError`]: a configuration error.
    pub async fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        if cfg.subscription_id.trim().is_empty() {
            return Err(ClientError::NoSubscription);
        }
        let endpoint = https_url("ARM endpoint", &cfg.arm_endpoint)?;
        if let Some(host) = &cfg.authority_host {
            https_url("authority host", host)?;
        }
        let application_id = cfg
            .user_agent
            .clone()
            .unwrap_or_else(|| "skylet".to_owned());
        if !valid_user_agent(&application_id) {
            return Err(ClientError::UserAgent(application_id));
        }
        let roots = auth::root_store(cfg.ca_file.as_deref())?;
        let tls = auth::tls_config(roots)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientError::Http)?;
        let transport = Transport::new(Arc::new(http));
        let credential = auth::credential(&cfg.auth, &transport, cfg.authority_host.as_deref())?;
        let scope = cfg
            .token_scope
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN_SCOPE.to_owned());
        let bearer: Arc<dyn Policy> =
            Arc::new(BearerTokenAuthorizationPolicy::new(credential, [scope]));
        let options = ClientOptions {
            transport: Some(transport),
            retry: RetryOptions::none(),
            user_agent: UserAgentOptions {
                application_id: Some(application_id),
            },
            ..ClientOptions::default()
        };
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            vec![bearer],
            None,
        );
        tracing::debug!(endpoint = %endpoint, auth = ?cfg.auth, "ARM client ready");
        Ok(Self {
            pipeline,
            endpoint,
            subscription_id: cfg.subscription_id,
            tls: Arc::new(tls),
            max_attempts: cfg.max_attempts.max(1),
            metrics: cfg.metrics,
        })
    }

    /// The subscription in use.
    pub fn subscription_id(&self) -> &str {
        &self.subscription_id
    }

    /// The TLS configuration (roots: system plus `ca_file`) for the
    /// exec/attach WebSockets.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// Where the client counts its calls.
    pub fn metrics(&self) -> &ApiMetrics {
        &self.metrics
    }

    /// `result`, counted in [`ApiMetrics::error`] when it is an error: what
    /// every public operation returns goes through here once.
    fn counted<T>(&self, op: Op, result: Result<T, ArmError>) -> Result<T, ArmError> {
        if let Err(e) = &result
            && let Some(code) = e.metric_code()
        {
            self.metrics.error(SERVICE, op.name, code);
        }
        result
    }

    /// A URL under the endpoint, `api-version` added.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", API_VERSION);
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn group_url(&self, rg: &str, name: &str, tail: &[&str], query: &[(&str, String)]) -> Url {
        let mut segments = vec![
            "subscriptions",
            &self.subscription_id,
            "resourceGroups",
            rg,
            "providers",
            RESOURCE_PROVIDER,
            "containerGroups",
            name,
        ];
        segments.extend_from_slice(tail);
        self.url(&segments, query)
    }

    /// A URL ARM handed us (nextLink, operation): only on ARM's own origin,
    /// so the bearer token never goes elsewhere; `api-version` added if
    /// missing.
    fn follow(&self, op: Op, link: &str) -> Result<Url, ArmError> {
        let url = self.endpoint.join(link).map_err(|e| ArmError::Protocol {
            operation: op.name,
            message: format!("invalid link {link:?}: {e}"),
        })?;
        if url.origin() != self.endpoint.origin() {
            return Err(ArmError::Protocol {
                operation: op.name,
                message: format!(
                    "refusing to follow a link to another origin: {}",
                    url.origin().ascii_serialization()
                ),
            });
        }
        let mut url = url;
        if !url.query_pairs().any(|(k, _)| k == "api-version") {
            url.query_pairs_mut()
                .append_pair("api-version", API_VERSION);
        }
        Ok(url)
    }

    /// Sends a request, retrying as the module docs say, and returns the
    /// last answer whatever its status.
    async fn send(
        &self,
        op: Op,
        method: Method,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<Answer, ArmError> {
        self.metrics.call(SERVICE, op.name);
        let mut attempt = 1u32;
        loop {
            let mut req = Request::new(url.clone(), method);
            req.insert_header(ACCEPT, HeaderValue::from_static("application/json"));
            if let Some(b) = &body {
                req.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                req.set_body(b.clone());
            }
            let ctx = Context::new();
            let options = PipelineSendOptions {
                skip_checks: true,
                ..PipelineSendOptions::default()
            };
            let outcome = self.pipeline.send(&ctx, &mut req, Some(options)).await;
            let retry_in = match outcome {
                Ok(rsp) => {
                    let (status, headers, body) = rsp.deconstruct();
                    let status = u16::from(status);
                    self.metrics
                        .request(SERVICE, op.name, Outcome::of_status(Some(status)));
                    tracing::debug!(operation = op.name, %method, status, attempt, "ARM answered");
                    let answer = Answer {
                        status,
                        headers,
                        body: body.into(),
                    };
                    if !retry::retryable_status(status) || attempt >= self.max_attempts {
                        return Ok(answer);
                    }
                    let wait = retry::delay(retry_after(&answer.headers), attempt);
                    tracing::warn!(operation = op.name, status, attempt, wait = ?wait, "ARM call failed, retrying");
                    wait
                }
                Err(e) => {
                    let retryable = match e.kind() {
                        ErrorKind::Credential | ErrorKind::HttpResponse { .. } => {
                            return Err(ArmError::Credential {
                                operation: op.name,
                                source: e,
                            });
                        }
                        ErrorKind::Connection => true,
                        ErrorKind::Io => op.idempotent,
                        _ => false,
                    };
                    self.metrics.request(SERVICE, op.name, Outcome::network);
                    if !retryable || attempt >= self.max_attempts {
                        return Err(ArmError::Transport {
                            operation: op.name,
                            source: e,
                        });
                    }
                    let wait = retry::delay(None, attempt);
                    tracing::warn!(operation = op.name, attempt, wait = ?wait, error = %e, "ARM request failed, retrying");
                    wait
                }
            };
            tokio::time::sleep(retry_in).await;
            attempt += 1;
        }
    }

    /// Every item of a paged list, following each `nextLink`.
    async fn list_all<T: DeserializeOwned>(&self, op: Op, first: Url) -> Result<Vec<T>, ArmError> {
        let mut url = first;
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let answer = self.send(op, Method::Get, &url, None).await?;
            if answer.status != 200 {
                return Err(answer.error(op));
            }
            let page: Page<T> = answer.json(op)?;
            items.extend(page.value);
            match page.next_link.filter(|l| !l.trim().is_empty()) {
                None => return Ok(items),
                Some(link) => {
                    if !seen.insert(link.clone()) {
                        return Err(ArmError::Protocol {
                            operation: op.name,
                            message: "nextLink loops".to_owned(),
                        });
                    }
                    url = self.follow(op, &link)?;
                }
            }
        }
    }

    /// ContainerGroups_CreateOrUpdate. Retried like every call (the name is
    /// deterministic, a repeat of the same body is a no-op).
    ///
    /// # Errors
    /// [`ArmError`]; a 400 about the body maps to `InvalidPod`.
    pub async fn put_group<T: Serialize + Sync>(
        &self,
        rg: &str,
        name: &str,
        body: &T,
    ) -> Result<Put, ArmError> {
        let op = PUT_GROUP;
        let result = async {
            let json = serde_json::to_vec(body).map_err(|source| ArmError::Json {
                operation: op.name,
                source,
            })?;
            let answer = self
                .send(
                    op,
                    Method::Put,
                    &self.group_url(rg, name, &[], &[]),
                    Some(json.into()),
                )
                .await?;
            match answer.status {
                200 | 201 => Ok(Put {
                    created: answer.status == 201,
                    operation: Operation::from_headers(&answer.headers),
                }),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// ContainerGroups_Get; `None` on any 404 (the group, or its resource
    /// group, does not exist).
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn get_group<T: DeserializeOwned>(
        &self,
        rg: &str,
        name: &str,
    ) -> Result<Option<T>, ArmError> {
        let op = GET_GROUP;
        let result = async {
            let answer = self
                .send(op, Method::Get, &self.group_url(rg, name, &[], &[]), None)
                .await?;
            match answer.status {
                200 => answer.json(op).map(Some),
                404 => Ok(None),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// ContainerGroups_ListByResourceGroup, every page (each page is one
    /// call in [`ApiMetrics`]).
    ///
    /// # Errors
    /// [`ArmError`] (a missing resource group is a 404 `ResourceGroupNotFound`).
    pub async fn list_groups<T: DeserializeOwned>(&self, rg: &str) -> Result<Vec<T>, ArmError> {
        let url = self.url(
            &[
                "subscriptions",
                &self.subscription_id,
                "resourceGroups",
                rg,
                "providers",
                RESOURCE_PROVIDER,
                "containerGroups",
            ],
            &[],
        );
        self.counted(LIST_GROUPS, self.list_all(LIST_GROUPS, url).await)
    }

    /// ContainerGroups_Stop; a group that does not exist is stopped.
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn stop_group(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        let op = STOP_GROUP;
        let result = async {
            let answer = self
                .send(
                    op,
                    Method::Post,
                    &self.group_url(rg, name, &["stop"], &[]),
                    None,
                )
                .await?;
            match answer.status {
                200 | 202 | 204 | 404 => Ok(()),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// ContainerGroups_Delete: the operation to wait for (202), or `None`
    /// when the group is already gone (200, 204, 404).
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn delete_group(&self, rg: &str, name: &str) -> Result<Option<Operation>, ArmError> {
        let op = DELETE_GROUP;
        let result = async {
            let answer = self
                .send(
                    op,
                    Method::Delete,
                    &self.group_url(rg, name, &[], &[]),
                    None,
                )
                .await?;
            match answer.status {
                202 => Ok(Operation::from_headers(&answer.headers)),
                200 | 204 | 404 => Ok(None),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// Follows a long-running operation until it ends or `timeout` passes,
    /// waiting what each answer's `Retry-After` says (else [`DEFAULT_POLL`]).
    ///
    /// # Errors
    /// [`ArmError::OperationFailed`], [`ArmError::Timeout`], or a failed poll.
    pub async fn wait(&self, operation: &Operation, timeout: Duration) -> Result<(), ArmError> {
        let op = GET_OPERATION;
        let result = async {
            let url = self.follow(op, &operation.url)?;
            let deadline = Instant::now() + timeout;
            let mut next = operation.retry_after.unwrap_or(DEFAULT_POLL);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ArmError::Timeout(timeout));
                }
                tokio::time::sleep(next.min(left)).await;
                let answer = self.send(op, Method::Get, &url, None).await?;
                next = retry_after(&answer.headers).unwrap_or(DEFAULT_POLL);
                match (operation.kind, answer.status) {
                    (OperationKind::AsyncOperation, 200) => {
                        let status: OperationStatus = answer.json(op)?;
                        match status.status.to_ascii_lowercase().as_str() {
                            "succeeded" => return Ok(()),
                            "failed" | "canceled" | "cancelled" => {
                                let error = status.error.unwrap_or_default();
                                return Err(ArmError::OperationFailed {
                                    status: status.status,
                                    code: error.code.unwrap_or_default(),
                                    message: error.message.unwrap_or_default(),
                                });
                            }
                            other => tracing::trace!(status = other, "operation in progress"),
                        }
                    }
                    (OperationKind::AsyncOperation, 202) | (OperationKind::Location, 202) => {}
                    (OperationKind::Location, 200 | 201 | 204) => return Ok(()),
                    _ => return Err(answer.error(op)),
                }
            }
        }
        .await;
        self.counted(op, result)
    }

    /// Containers_ListLogs: the container's log (ACI keeps up to 4 MB),
    /// the last `tail` lines if set, each prefixed with its RFC 3339
    /// timestamp if `timestamps`.
    ///
    /// # Errors
    /// [`ArmError`] (404: no such group or container).
    pub async fn logs(
        &self,
        rg: &str,
        group: &str,
        container: &str,
        tail: Option<u64>,
        timestamps: bool,
    ) -> Result<String, ArmError> {
        let op = LIST_LOGS;
        let result = async {
            let mut query = Vec::new();
            if let Some(n) = tail {
                // the spec's `tail` is an int32
                query.push(("tail", n.min(i32::MAX as u64).to_string()));
            }
            query.push(("timestamps", timestamps.to_string()));
            let url = self.group_url(rg, group, &["containers", container, "logs"], &query);
            let answer = self.send(op, Method::Get, &url, None).await?;
            match answer.status {
                200 => Ok(answer.json::<Logs>(op)?.content.unwrap_or_default()),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// Containers_ExecuteCommand: a WebSocket running `command` (split on
    /// whitespace by ACI, no shell), with a terminal of `size` (rows, cols).
    ///
    /// # Errors
    /// [`ArmError`] (404: no such group or container).
    pub async fn exec(
        &self,
        rg: &str,
        group: &str,
        container: &str,
        command: &str,
        size: Option<(u16, u16)>,
    ) -> Result<Session, ArmError> {
        let op = EXEC;
        let result = async {
            let request = ContainerExecRequest {
                command: Some(command.to_owned()),
                terminal_size: size.map(|(rows, cols)| TerminalSize {
                    rows: Some(rows.into()),
                    cols: Some(cols.into()),
                }),
            };
            let json = serde_json::to_vec(&request).map_err(|source| ArmError::Json {
                operation: op.name,
                source,
            })?;
            let url = self.group_url(rg, group, &["containers", container, "exec"], &[]);
            let answer = self.send(op, Method::Post, &url, Some(json.into())).await?;
            if answer.status != 200 {
                return Err(answer.error(op));
            }
            let rsp: ContainerExecResponse = answer.json(op)?;
            session(op, rsp.web_socket_uri, rsp.password)
        }
        .await;
        self.counted(op, result)
    }

    /// Containers_Attach: a WebSocket with the container's output from now on.
    ///
    /// # Errors
    /// [`ArmError`] (404: no such group or container).
    pub async fn attach(
        &self,
        rg: &str,
        group: &str,
        container: &str,
    ) -> Result<Session, ArmError> {
        let op = ATTACH;
        let result = async {
            let url = self.group_url(rg, group, &["containers", container, "attach"], &[]);
            let answer = self.send(op, Method::Post, &url, None).await?;
            if answer.status != 200 {
                return Err(answer.error(op));
            }
            let rsp: ContainerAttachResponse = answer.json(op)?;
            session(op, rsp.web_socket_uri, rsp.password)
        }
        .await;
        self.counted(op, result)
    }

    /// Location_ListUsage: the quotas of `location` and their use.
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn usages(&self, location: &str) -> Result<Vec<Usage>, ArmError> {
        let url = self.url(
            &[
                "subscriptions",
                &self.subscription_id,
                "providers",
                RESOURCE_PROVIDER,
                "locations",
                location,
                "usages",
            ],
            &[],
        );
        self.counted(USAGES, self.list_all(USAGES, url).await)
    }
}

fn session(op: Op, uri: Option<String>, password: Option<String>) -> Result<Session, ArmError> {
    match uri.filter(|u| u.starts_with("wss://") || u.starts_with("ws://")) {
        Some(uri) => Ok(Session {
            uri,
            password: password.unwrap_or_default(),
        }),
        None => Err(ArmError::Protocol {
            operation: op.name,
            message: "no webSocketUri in the answer".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &str) -> ArmError {
        ArmError::Status {
            operation: "ContainerGroups_CreateOrUpdate",
            action: "Microsoft.ContainerInstance/containerGroups/write",
            status,
            code: code.to_owned(),
            message: format!("message of {code}"),
            retry_after: Some(Duration::from_secs(4)),
            request_id: None,
        }
    }

    #[test]
    fn not_found_maps_to_not_found() {
        let e: ProviderError = status(404, "ResourceNotFound").into();
        assert!(
            matches!(&e, ProviderError::NotFound(m) if m.contains("ResourceNotFound")),
            "{e:?}"
        );
    }

    #[test]
    fn throttling_keeps_retry_after() {
        let e: ProviderError = status(429, "TooManyRequests").into();
        assert!(
            matches!(e, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(4))
        );
    }

    #[test]
    fn content_errors_fail_the_pod_with_arms_message() {
        for code in [
            "InvalidRequestContent",
            "InvalidContainerName",
            "InaccessibleImage",
            "SomethingNew",
        ] {
            let e: ProviderError = status(400, code).into();
            match e {
                ProviderError::InvalidPod { reason, message } => {
                    assert_eq!(reason, "AciRejected");
                    assert_eq!(message, format!("message of {code}"));
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn protocol_and_quota_400s_are_transient() {
        for code in [
            "MissingApiVersionParameter",
            "InvalidApiVersionParameter",
            "ContainerGroupQuotaReached",
        ] {
            let e: ProviderError = status(400, code).into();
            assert!(matches!(e, ProviderError::Transient(_)), "{code}: {e:?}");
        }
    }

    #[test]
    fn denied_names_the_rbac_action() {
        for s in [401, 403] {
            let e: ProviderError = status(s, "AuthorizationFailed").into();
            let ProviderError::Transient(inner) = &e else {
                panic!("{e:?}")
            };
            let text = inner.to_string();
            assert!(
                text.contains("Microsoft.ContainerInstance/containerGroups/write"),
                "{text}"
            );
            assert!(text.contains("ContainerGroups_CreateOrUpdate"), "{text}");
        }
    }

    #[test]
    fn server_errors_and_the_rest_are_transient() {
        for e in [
            status(500, "InternalServerError"),
            status(503, "ServiceUnavailable"),
            status(409, "Conflict"),
            ArmError::Timeout(Duration::from_secs(1)),
            ArmError::OperationFailed {
                status: "Failed".into(),
                code: "X".into(),
                message: "y".into(),
            },
        ] {
            let e: ProviderError = e.into();
            assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
        }
    }

    #[test]
    fn error_bodies_are_parsed() {
        let mut headers = Headers::new();
        headers.insert(RETRY_AFTER, "3");
        headers.insert(REQUEST_ID, "req-1");
        let answer = Answer {
            status: 429,
            headers,
            body: Bytes::from_static(
                br#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
            ),
        };
        match answer.error(GET_GROUP) {
            ArmError::Status {
                code,
                message,
                retry_after,
                request_id,
                status,
                ..
            } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (429, "TooManyRequests", "slow down")
                );
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert_eq!(request_id.as_deref(), Some("req-1"));
            }
            other => panic!("{other:?}"),
        }
        // not JSON: the reason phrase and the text
        let answer = Answer {
            status: 502,
            headers: Headers::new(),
            body: Bytes::from_static(b"bad gateway"),
        };
        let e = answer.error(GET_GROUP);
        assert_eq!(e.code(), Some("Bad Gateway"));
        assert!(e.to_string().contains("bad gateway"));
    }

    #[test]
    fn retry_after_ms_headers_win() {
        let mut headers = Headers::new();
        headers.insert(RETRY_AFTER, "9");
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(9)));
        headers.insert(RETRY_AFTER_MS, "250");
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
    }

    #[test]
    fn operations_prefer_azure_async_operation() {
        let mut headers = Headers::new();
        headers.insert(LOCATION, "https://arm/loc");
        let op = Operation::from_headers(&headers).unwrap();
        assert_eq!(
            (op.kind, op.url.as_str()),
            (OperationKind::Location, "https://arm/loc")
        );
        headers.insert(AZURE_ASYNCOPERATION, "https://arm/async");
        headers.insert(RETRY_AFTER, "1");
        let op = Operation::from_headers(&headers).unwrap();
        assert_eq!(
            (op.kind, op.url.as_str()),
            (OperationKind::AsyncOperation, "https://arm/async")
        );
        assert_eq!(op.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(Operation::from_headers(&Headers::new()), None);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = Session {
            uri: "wss://x/exec/1".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        let a = Auth::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        let r = SocketResponse {
            web_socket_uri: None,
            password: Some("hunter2".into()),
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn exec_request_shape() {
        let r = ContainerExecRequest {
            command: Some("ls -l".into()),
            terminal_size: Some(TerminalSize {
                rows: Some(24),
                cols: Some(80),
            }),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"command":"ls -l","terminalSize":{"rows":24,"cols":80}})
        );
    }

    #[test]
    fn user_agent_rules() {
        assert!(valid_user_agent("skylet"));
        assert!(valid_user_agent("skylet-node-1.2"));
        assert!(!valid_user_agent(""));
        assert!(!valid_user_agent("has space"));
        assert!(!valid_user_agent("a-very-long-application-identifier"));
    }

    fn client_config() -> ClientConfig {
        ClientConfig::new(
            "00000000-0000-0000-0000-000000000000",
            Auth::ClientSecret {
                tenant_id: "tenant".into(),
                client_id: "client".into(),
                client_secret: "s".into(),
            },
        )
    }

    #[tokio::test]
    async fn urls_are_built_and_links_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let mut cfg = client_config();
        cfg.arm_endpoint = "https://arm.example:8443/".into();
        cfg.ca_file = Some(ca_file);
        let client = ArmClient::new(cfg).await.unwrap();
        let url = client.group_url(
            "rg(1)",
            "g",
            &["containers", "c", "logs"],
            &[("tail", "5".into())],
        );
        assert_eq!(
            url.as_str(),
            "https://arm.example:8443/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg(1)/providers/Microsoft.ContainerInstance/containerGroups/g/containers/c/logs?api-version=2026-05-01&tail=5"
        );
        let next = client
            .follow(
                LIST_GROUPS,
                "https://arm.example:8443/x?$skipToken=a&api-version=2026-05-01",
            )
            .unwrap();
        assert_eq!(
            next.query_pairs()
                .filter(|(k, _)| k == "api-version")
                .count(),
            1
        );
        let rel = client.follow(LIST_GROUPS, "/x?$skipToken=a").unwrap();
        assert!(rel.as_str().starts_with("https://arm.example:8443/x?"));
        assert!(rel.as_str().contains("api-version=2026-05-01"));
        assert!(
            client
                .follow(LIST_GROUPS, "https://evil.example/x")
                .is_err()
        );
        assert!(
            client
                .follow(LIST_GROUPS, "http://arm.example:8443/x")
                .is_err()
        );
    }

    #[tokio::test]
    async fn config_errors() {
        let mut cfg = client_config();
        cfg.subscription_id = " ".into();
        assert!(matches!(
            ArmClient::new(cfg).await,
            Err(ClientError::NoSubscription)
        ));
        let mut cfg = client_config();
        cfg.arm_endpoint = "http://127.0.0.1:1".into();
        assert!(matches!(
            ArmClient::new(cfg).await,
            Err(ClientError::Endpoint { .. })
        ));
        let mut cfg = client_config();
        cfg.authority_host = Some("login".into());
        assert!(matches!(
            ArmClient::new(cfg).await,
            Err(ClientError::Endpoint { .. })
        ));
        let mut cfg = client_config();
        cfg.user_agent = Some("no spaces allowed".into());
        assert!(matches!(
            ArmClient::new(cfg).await,
            Err(ClientError::UserAgent(_))
        ));
    }

    #[test]
    fn metric_codes() {
        assert_eq!(
            status(429, "TooManyRequests").metric_code(),
            Some("TooManyRequests")
        );
        assert_eq!(ArmError::Timeout(Duration::ZERO).metric_code(), None);
        let failed = |code: &str| ArmError::OperationFailed {
            status: "Canceled".into(),
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(failed("Conflict").metric_code(), Some("Conflict"));
        assert_eq!(failed("").metric_code(), Some("Canceled"));
    }
}
