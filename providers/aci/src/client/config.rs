//! What an [`ArmClient`] is built from: the credential to use ([`Auth`]),
//! the endpoints, CA file, attempts and user agent ([`ClientConfig`]), the
//! checks of those values, and why building can fail ([`ClientError`]).

use std::{fmt, path::PathBuf};

use azure_core::http::Url;
use skylet_provider::ApiMetrics;

#[cfg(doc)]
use super::ArmClient;

/// The public cloud's ARM endpoint.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// The public cloud's Entra ID authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The token scope for ARM in the public cloud.
pub const DEFAULT_TOKEN_SCOPE: &str = "https://management.azure.com/.default";
/// The token scope of Azure Monitor's metrics data plane (the batch
/// metrics API).
pub const DEFAULT_METRICS_TOKEN_SCOPE: &str = "https://metrics.monitor.azure.com/.default";
/// Default number of attempts per call.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

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
    /// Azure Monitor's regional metrics endpoint (HTTPS),
    /// `https://{location}.metrics.monitor.azure.com`; [`ClientConfig::new`]
    /// sets the public cloud's for `westeurope`, the backend its location's.
    pub metrics_endpoint: String,
    /// The metrics token scope; `None` = [`DEFAULT_METRICS_TOKEN_SCOPE`].
    pub metrics_token_scope: Option<String>,
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
    /// The API rate limits kept on this side (none by default; the backend
    /// uses [`super::limits::PUBLISHED`] with the user's changes).
    pub rate_limits: skylet_provider::ratelimit::Buckets,
}

impl ClientConfig {
    /// A configuration for the public cloud with defaults.
    pub fn new(subscription_id: impl Into<String>, auth: Auth) -> Self {
        Self {
            subscription_id: subscription_id.into(),
            arm_endpoint: DEFAULT_ARM_ENDPOINT.to_owned(),
            authority_host: None,
            token_scope: None,
            metrics_endpoint: metrics_endpoint("westeurope"),
            metrics_token_scope: None,
            ca_file: None,
            auth,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            user_agent: None,
            metrics: ApiMetrics::detached("azure-aci"),
            rate_limits: skylet_provider::ratelimit::Buckets::none(),
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

/// The public cloud's metrics endpoint of `location`.
pub fn metrics_endpoint(location: &str) -> String {
    format!("https://{location}.metrics.monitor.azure.com")
}

pub(super) fn https_url(what: &'static str, url: &str) -> Result<Url, ClientError> {
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

pub(super) fn valid_user_agent(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 24
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_rules() {
        assert!(valid_user_agent("skylet"));
        assert!(valid_user_agent("skylet-node-1.2"));
        assert!(!valid_user_agent(""));
        assert!(!valid_user_agent("has space"));
        assert!(!valid_user_agent("a-very-long-application-identifier"));
    }
}
