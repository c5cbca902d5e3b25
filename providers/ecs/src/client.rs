//! The AWS clients (ECS, CloudWatch Logs, Secrets Manager) on one shared
//! configuration, an interceptor that counts every operation for Prometheus,
//! and the mapping of SDK errors to [`ProviderError`] classes.
//!
//! # Transport and retries
//! HTTPS through `aws-smithy-http-client` on rustls with *ring* (the
//! workspace's only crypto backend; no aws-lc). The SDK's standard retry
//! mode retries throttling errors, 5xx and timeouts with exponential
//! backoff and jitter, up to `max_attempts` attempts per operation; an
//! operation still throttled after that becomes
//! [`ProviderError::Throttled`], and the core backs off.
//!
//! # Metrics
//! `skylet_aws_api_calls_total{operation}` (operations, not attempts),
//! `skylet_aws_api_attempts_total{operation}` (with retries) and
//! `skylet_aws_api_errors_total{operation,code}` (final failures);
//! `skylet_aws_sweep_tasks` and `skylet_aws_sweep_describe_calls` (what
//! the last sweep listed and how many DescribeTasks calls it made).
//!
//! # Credentials
//! The SDK's default chain: environment, profile, web identity (IRSA / EKS
//! Pod Identity), container and instance metadata. SSO profiles are not
//! compiled in (use `credential_process` or exported credentials).

use std::{borrow::Cow, fmt};

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            Intercept,
            context::{
                BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
            },
        },
        orchestrator::{HttpResponse, Metadata},
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::ConfigBag;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use skylet_provider::ProviderError;

use crate::config::Config;

/// Labels of API call counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `RunTask`, `DescribeTasks`, ...
    pub operation: String,
}

/// Labels of API error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The operation.
    pub operation: String,
    /// AWS error code (`ThrottlingException`, ...) or `network`.
    pub code: String,
}

/// Counters of AWS API use. Cheap to clone; clones share counts.
#[derive(Clone, Debug, Default)]
pub struct ApiMetrics {
    calls: Family<OperationLabels, Counter>,
    attempts: Family<OperationLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    sweep_tasks: Gauge,
    sweep_describe_calls: Gauge,
}

impl ApiMetrics {
    /// Registers the counters (`skylet_aws_api_*` under the core's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "aws_api_calls",
            "AWS API operations called, by operation",
            self.calls.clone(),
        );
        registry.register(
            "aws_api_attempts",
            "AWS API attempts (retries included), by operation",
            self.attempts.clone(),
        );
        registry.register(
            "aws_api_errors",
            "AWS API operations that failed after retries, by operation and code",
            self.errors.clone(),
        );
        registry.register(
            "aws_sweep_tasks",
            "Tasks the last sweep listed",
            self.sweep_tasks.clone(),
        );
        registry.register(
            "aws_sweep_describe_calls",
            "DescribeTasks calls the last sweep made",
            self.sweep_describe_calls.clone(),
        );
    }

    /// Records what the last sweep cost.
    pub fn sweep(&self, tasks: usize, describe_calls: usize) {
        self.sweep_tasks
            .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        self.sweep_describe_calls
            .set(i64::try_from(describe_calls).unwrap_or(i64::MAX));
    }

    /// Operations of this name called so far.
    pub fn calls(&self, operation: &str) -> u64 {
        self.calls
            .get_or_create(&OperationLabels {
                operation: operation.into(),
            })
            .get()
    }

    fn error(&self, operation: &str, code: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                operation: operation.into(),
                code: code.into(),
            })
            .inc();
    }
}

/// Counts operations and attempts.
#[derive(Debug)]
struct Counting(ApiMetrics);

fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map_or_else(|| "unknown".to_owned(), |m| m.name().to_owned())
}

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "skylet-api-counter"
    }

    // not read_before_execution: the operation's metadata is not in the
    // config bag yet when client-level interceptors see it
    fn read_before_serialization(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0
            .calls
            .get_or_create(&OperationLabels {
                operation: operation(cfg),
            })
            .inc();
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0
            .attempts
            .get_or_create(&OperationLabels {
                operation: operation(cfg),
            })
            .inc();
        Ok(())
    }
}

/// The three clients skylet uses.
#[derive(Clone, Debug)]
pub struct Clients {
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The region in use (for the awslogs driver).
    pub region: String,
    /// API counters.
    pub metrics: ApiMetrics,
}

/// Why the clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No region configured and none found in the environment or profile.
    #[error("no AWS region: set --ecs-region (or AWS_REGION)")]
    NoRegion,
}

impl Clients {
    /// Builds the clients from `config` and the environment.
    ///
    /// # Errors
    /// [`Error::NoRegion`] when no region can be found.
    pub async fn new(config: &Config) -> Result<Self, Error> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
        if let Some(r) = &config.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        let region = shared
            .region()
            .map(ToString::to_string)
            .ok_or(Error::NoRegion)?;
        let metrics = ApiMetrics::default();
        let ecs = aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(&shared)
                .interceptor(Counting(metrics.clone()))
                .build(),
        );
        let logs = aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&shared)
                .interceptor(Counting(metrics.clone()))
                .build(),
        );
        let secrets = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&shared)
                .interceptor(Counting(metrics.clone()))
                .build(),
        );
        Ok(Self {
            ecs,
            logs,
            secrets,
            region,
            metrics,
        })
    }
}

/// A failed AWS operation, with what is needed to decide what it means.
#[derive(Debug, thiserror::Error)]
pub struct AwsError {
    /// The operation (`RunTask`).
    pub operation: &'static str,
    /// The AWS error code, when the service answered.
    pub code: Option<String>,
    /// The service's message.
    pub message: Option<String>,
    /// HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The SDK error.
    #[source]
    pub source: BoxError,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.operation)?;
        if let Some(c) = &self.code {
            write!(f, ": {c}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        if self.code.is_none() && self.message.is_none() {
            write!(
                f,
                ": {}",
                aws_smithy_types::error::display::DisplayErrorContext(&*self.source)
            )?;
        }
        Ok(())
    }
}

/// Error codes that mean "slow down".
const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

impl AwsError {
    /// Wraps an SDK error of `operation`, counting it in `metrics`.
    pub fn new<E>(
        operation: &'static str,
        metrics: &ApiMetrics,
        err: SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (code, message, status) = match &err {
            SdkError::ServiceError(se) => (
                se.err().code().map(str::to_owned),
                se.err().message().map(str::to_owned),
                Some(se.raw().status().as_u16()),
            ),
            SdkError::ResponseError(re) => (None, None, Some(re.raw().status().as_u16())),
            _ => (None, None, None),
        };
        metrics.error(
            operation,
            code.as_deref()
                .unwrap_or(if status.is_some() { "http" } else { "network" }),
        );
        Self {
            operation,
            code,
            message,
            status,
            source: Box::new(err),
        }
    }

    /// Whether the service answered with this code.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Whether this asks the caller to slow down.
    pub fn is_throttling(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| THROTTLING.contains(&c))
            || self.status == Some(429)
    }

    /// The service's message, or the error's text.
    pub fn message(&self) -> Cow<'_, str> {
        match &self.message {
            Some(m) => Cow::Borrowed(m),
            None => Cow::Owned(self.to_string()),
        }
    }
}

impl From<AwsError> for ProviderError {
    fn from(e: AwsError) -> Self {
        if e.is_throttling() {
            ProviderError::Throttled { retry_after: None }
        } else {
            ProviderError::transient(e)
        }
    }
}

/// `.map_err(aws(op, &metrics))`, to wrap SDK errors.
pub fn aws<'a, E>(
    operation: &'static str,
    metrics: &'a ApiMetrics,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> AwsError + 'a
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| AwsError::new(operation, metrics, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: Option<&str>, status: Option<u16>) -> AwsError {
        AwsError {
            operation: "RunTask",
            code: code.map(str::to_owned),
            message: Some("m".into()),
            status,
            source: "x".into(),
        }
    }

    #[test]
    fn throttling_maps_to_throttled_and_the_rest_to_transient() {
        assert!(matches!(
            ProviderError::from(err(Some("ThrottlingException"), Some(400))),
            ProviderError::Throttled { .. }
        ));
        assert!(matches!(
            ProviderError::from(err(None, Some(429))),
            ProviderError::Throttled { .. }
        ));
        assert!(matches!(
            ProviderError::from(err(Some("ServerException"), Some(500))),
            ProviderError::Transient(_)
        ));
        assert_eq!(
            err(Some("ClientException"), Some(400)).to_string(),
            "RunTask failed: ClientException: m"
        );
    }
}
