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
//! | what | module |
//! |---|---|
//! | [`ArmClient`]: building it, URLs, links ARM hands back | here |
//! | [`ClientConfig`], [`Auth`], [`ClientError`] | [`config`] |
//! | credentials and TLS roots | [`auth`] |
//! | the operations, their RBAC actions, which are idempotent | [`ops`] |
//! | one request with its retries, the answer | [`send`], [`retry`] |
//! | [`ArmError`] and how the core sees it | [`error`] |
//! | paged lists | [`pages`] |
//! | long-running operations, [`ArmClient::wait`] | [`lro`] |
//! | container groups: put, get, list, stop, delete | [`groups`] |
//! | containers: logs, exec, attach | [`containers`] |
//! | location usages (quotas) | [`usages`] |
//! | ARM's and ACI's API rate limits, kept on skylet's side | [`limits`] |
//! | Azure Monitor metrics of groups (`kubectl top`) | [`monitor`] |
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
//! # Rate limits
//! Every attempt first takes a token of each of [`ClientConfig::rate_limits`]'
//! buckets covering its operation ([`limits`]: ARM's subscription reads,
//! writes and deletes, ACI's creates and deletes), so the client stays
//! under ARM's limits and a burst is spread over time, not throttled.
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
mod config;
mod containers;
mod error;
mod groups;
pub mod limits;
mod lro;
pub mod monitor;
mod ops;
mod pages;
pub mod retry;
mod send;
mod usages;

use std::{fmt, sync::Arc, time::Duration};

use azure_core::http::{
    ClientOptions, Pipeline, RetryOptions, Transport, Url, UserAgentOptions,
    policies::{Policy, auth::BearerTokenAuthorizationPolicy},
};
use skylet_provider::ApiMetrics;

pub use config::{
    Auth, ClientConfig, ClientError, DEFAULT_ARM_ENDPOINT, DEFAULT_AUTHORITY_HOST,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_METRICS_TOKEN_SCOPE, DEFAULT_TOKEN_SCOPE, metrics_endpoint,
};
use config::{https_url, valid_user_agent};
pub use containers::{
    ContainerAttachResponse, ContainerExecRequest, ContainerExecResponse, Logs, Session,
    SocketResponse, TerminalSize,
};
pub use error::{
    AccessDenied, ArmError, CloudError, CloudErrorBody, is_capacity_error, is_content_error,
};
pub use groups::Put;
pub use lro::{DEFAULT_POLL, Operation, OperationKind, OperationStatus};
pub(crate) use ops::{LIST_GROUPS, Op, Plane};
pub use usages::{Usage, UsageName};

/// The api-version of every call: the one the models follow.
pub const API_VERSION: &str = crate::models::API_VERSION;
/// The `service` label of ARM calls in [`ApiMetrics`].
pub const SERVICE: &str = "arm";
/// The `service` label of Azure Monitor metrics calls in [`ApiMetrics`].
pub const MONITOR_SERVICE: &str = "monitor";

const RESOURCE_PROVIDER: &str = "Microsoft.ContainerInstance";

/// The ARM client. Cheap to share (`Arc`); every method takes `&self`.
pub struct ArmClient {
    pipeline: Pipeline,
    endpoint: Url,
    /// The metrics data plane: its own token scope and endpoint.
    monitor_pipeline: Pipeline,
    monitor_endpoint: Url,
    subscription_id: String,
    tls: Arc<rustls::ClientConfig>,
    max_attempts: u32,
    metrics: ApiMetrics,
    rate_limits: skylet_provider::ratelimit::Buckets,
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
        let monitor_endpoint = https_url("metrics endpoint", &cfg.metrics_endpoint)?;
        let monitor_scope = cfg
            .metrics_token_scope
            .clone()
            .unwrap_or_else(|| DEFAULT_METRICS_TOKEN_SCOPE.to_owned());
        let pipeline_for = |scope: String| {
            let bearer: Arc<dyn Policy> = Arc::new(BearerTokenAuthorizationPolicy::new(
                credential.clone(),
                [scope],
            ));
            let options = ClientOptions {
                transport: Some(transport.clone()),
                retry: RetryOptions::none(),
                user_agent: UserAgentOptions {
                    application_id: Some(application_id.clone()),
                },
                ..ClientOptions::default()
            };
            Pipeline::new(
                Some(env!("CARGO_PKG_NAME")),
                Some(env!("CARGO_PKG_VERSION")),
                options,
                Vec::new(),
                vec![bearer],
                None,
            )
        };
        let pipeline = pipeline_for(scope);
        let monitor_pipeline = pipeline_for(monitor_scope);
        tracing::debug!(endpoint = %endpoint, auth = ?cfg.auth, "ARM client ready");
        Ok(Self {
            pipeline,
            endpoint,
            monitor_pipeline,
            monitor_endpoint,
            subscription_id: cfg.subscription_id,
            tls: Arc::new(tls),
            max_attempts: cfg.max_attempts.max(1),
            metrics: cfg.metrics,
            rate_limits: cfg.rate_limits,
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
            self.metrics.error(op.service(), op.name, code);
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

    /// A URL under the container groups of resource group `rg`:
    /// `.../containerGroups/<tail>`.
    fn groups_url(&self, rg: &str, tail: &[&str], query: &[(&str, String)]) -> Url {
        let mut segments = vec![
            "subscriptions",
            &self.subscription_id,
            "resourceGroups",
            rg,
            "providers",
            RESOURCE_PROVIDER,
            "containerGroups",
        ];
        segments.extend_from_slice(tail);
        self.url(&segments, query)
    }

    /// A URL under container group `name`: `.../containerGroups/<name>/<tail>`.
    fn group_url(&self, rg: &str, name: &str, tail: &[&str], query: &[(&str, String)]) -> Url {
        let mut segments = vec![name];
        segments.extend_from_slice(tail);
        self.groups_url(rg, &segments, query)
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
