//! The AWS clients (ECS, CloudWatch Logs, CloudWatch, Secrets Manager, Cloud
//! Map) on one shared configuration, an interceptor that counts every
//! operation and attempt in the core's backend API metrics, and the mapping
//! of SDK errors to [`ProviderError`] classes.
//!
//! # Transport and retries
//! HTTPS through `aws-smithy-http-client` on rustls with *ring* (the
//! workspace's only crypto backend; no aws-lc). The SDK's standard retry
//! mode retries throttling errors, 5xx and timeouts with exponential
//! backoff and jitter, up to `max_attempts` attempts per operation; an
//! operation still throttled after that becomes
//! [`ProviderError::Throttled`], and the core backs off.
//!
//! # Rate limits
//! The ECS client's requests first take their tokens of ECS's and
//! Fargate's published rate limits (`crate::limits`), each attempt anew.
//!
//! # Metrics
//! Through [`ApiMetrics`] (`skylet_backend_api_*`), with service `ecs`,
//! `logs` or `secretsmanager` and the operation's name (`RunTask`): every
//! operation once (`calls`), every attempt with its outcome (`requests`; a
//! throttling error code is `throttled` although AWS answers it with HTTP
//! 400), and operations that failed after their retries by error code
//! (`errors`). The sweep records its ListTasks and DescribeTasks calls.
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
            context::{BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef},
        },
        orchestrator::{HttpResponse, Metadata},
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::ConfigBag;
use skylet_provider::{ApiMetrics, ProviderError, metrics::Outcome, ratelimit::Buckets};

use crate::config::Config;

/// The `service` label of ECS calls.
pub const ECS: &str = "ecs";
/// The `service` label of CloudWatch Logs calls.
pub const LOGS: &str = "logs";
/// The `service` label of Secrets Manager calls.
pub const SECRETS: &str = "secretsmanager";
/// The `service` label of CloudWatch (metrics) calls.
pub const CLOUDWATCH: &str = "cloudwatch";
/// The `service` label of Cloud Map calls (`crate::cloudmap`).
pub const SERVICEDISCOVERY: &str = "servicediscovery";

/// Counts the operations and attempts of one service's client.
#[derive(Debug)]
struct Counting {
    metrics: ApiMetrics,
    service: &'static str,
}

fn operation(cfg: &ConfigBag) -> Cow<'static, str> {
    cfg.load::<Metadata>()
        .map_or(Cow::Borrowed("unknown"), |m| {
            Cow::Owned(m.name().to_owned())
        })
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
        self.metrics.call(self.service, &operation(cfg));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.metrics
            .request(self.service, &operation(cfg), outcome(ctx.response()));
        Ok(())
    }
}

/// How an attempt ended: by its HTTP status, except that a throttling
/// error code is [`Outcome::throttled`] whatever the status (AWS's JSON
/// services answer `ThrottlingException` with 400).
fn outcome(response: Option<&HttpResponse>) -> Outcome {
    let Some(r) = response else {
        return Outcome::network;
    };
    let status = r.status().as_u16();
    if status >= 400 && error_code(r).is_some_and(|c| THROTTLING.contains(&c.as_str())) {
        return Outcome::throttled;
    }
    Outcome::of_status(Some(status))
}

/// The error code of an AWS JSON error answer: the `x-amzn-errortype`
/// header, else the body's `__type` (or `code`), without a namespace
/// (`com.amazonaws.ecs#`) or a URL suffix (`:http://...`), as the SDK reads
/// it.
fn error_code(r: &HttpResponse) -> Option<String> {
    let raw = match r.headers().get("x-amzn-errortype") {
        Some(h) => h.to_owned(),
        None => {
            let body: serde_json::Value = serde_json::from_slice(r.body().bytes()?).ok()?;
            body.get("__type")
                .or_else(|| body.get("code"))?
                .as_str()?
                .to_owned()
        }
    };
    let code = raw.split(':').next().unwrap_or(&raw);
    Some(code.rsplit('#').next().unwrap_or(code).to_owned())
}

/// The clients skylet uses.
#[derive(Clone, Debug)]
pub struct Clients {
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// CloudWatch (Container Insights metrics).
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// Cloud Map (used only with `--ecs-cloud-map-namespace-id`).
    pub servicediscovery: aws_sdk_servicediscovery::Client,
    /// The region in use (for the awslogs driver).
    pub region: String,
    /// The backend's API metrics.
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
    /// Builds the clients from `config` and the environment, counting
    /// their calls in `metrics`.
    ///
    /// # Errors
    /// [`Error::NoRegion`] when no region can be found.
    pub async fn new(config: &Config, metrics: ApiMetrics) -> Result<Self, Error> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        // ECS's calls wait for their tokens of the rate limits (crate::limits)
        let ecs_http = crate::limits::limited(
            http.clone(),
            config.buckets().unwrap_or_else(|_| Buckets::none()),
        );
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
        let counting = |service| Counting {
            metrics: metrics.clone(),
            service,
        };
        let ecs = aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(&shared)
                .http_client(ecs_http)
                .interceptor(counting(ECS))
                .build(),
        );
        let logs = aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&shared)
                .interceptor(counting(LOGS))
                .build(),
        );
        let secrets = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&shared)
                .interceptor(counting(SECRETS))
                .build(),
        );
        let mut cloudwatch = aws_sdk_cloudwatch::config::Builder::from(&shared);
        if let Some(e) = &config.cloudwatch_endpoint_url {
            cloudwatch = cloudwatch.endpoint_url(e);
        }
        let cloudwatch = aws_sdk_cloudwatch::Client::from_conf(
            cloudwatch.interceptor(counting(CLOUDWATCH)).build(),
        );
        let servicediscovery = aws_sdk_servicediscovery::Client::from_conf(
            aws_sdk_servicediscovery::config::Builder::from(&shared)
                .interceptor(counting(SERVICEDISCOVERY))
                .build(),
        );
        Ok(Self {
            ecs,
            logs,
            cloudwatch,
            secrets,
            servicediscovery,
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
    /// Wraps an SDK error of `operation` of `service` ([`ECS`], [`LOGS`],
    /// [`SECRETS`]), counting it in `metrics`.
    pub fn new<E>(
        service: &'static str,
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
            service,
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

/// `.map_err(aws(ECS, "RunTask", &metrics))`, to wrap SDK errors.
pub fn aws<'a, E>(
    service: &'static str,
    operation: &'static str,
    metrics: &'a ApiMetrics,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> AwsError + 'a
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| AwsError::new(service, operation, metrics, e)
}

/// Every item of a paginated listing: `page` makes the call for one
/// continuation token (none for the first) and returns its items and the
/// next token; the listing ends at a page without one.
pub(crate) async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, AwsError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), AwsError>>,
{
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let (items, next) = page(token).await?;
        out.extend(items);
        token = next;
        if token.is_none() {
            return Ok(out);
        }
    }
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

    fn response(status: u16, header: Option<&str>, body: &str) -> HttpResponse {
        let mut r = HttpResponse::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).expect("a status"),
            aws_smithy_types::body::SdkBody::from(body),
        );
        if let Some(h) = header {
            r.headers_mut().insert("x-amzn-errortype", h.to_owned());
        }
        r
    }

    #[test]
    fn attempts_are_classified_by_status_and_throttling_code() {
        assert_eq!(outcome(None), Outcome::network);
        assert_eq!(outcome(Some(&response(200, None, "{}"))), Outcome::ok);
        assert_eq!(
            outcome(Some(&response(
                400,
                None,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
            ))),
            Outcome::throttled
        );
        assert_eq!(
            outcome(Some(&response(
                400,
                Some("ThrottlingException:http://internal.amazon.com/coral/"),
                ""
            ))),
            Outcome::throttled
        );
        assert_eq!(
            outcome(Some(&response(
                400,
                None,
                r#"{"__type":"com.amazonaws.ecs#ClientException"}"#
            ))),
            Outcome::client_error
        );
        assert_eq!(outcome(Some(&response(429, None, ""))), Outcome::throttled);
        assert_eq!(
            outcome(Some(&response(503, None, "not json"))),
            Outcome::server_error
        );
    }

    /// Answers each HTTP/1.1 request on `listener` with the next of
    /// `answers` (status, body).
    async fn serve(listener: tokio::net::TcpListener, answers: Vec<(u16, &'static str)>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let mut answers = answers.into_iter();
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let mut conn = BufReader::new(conn);
            loop {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if conn.read_exact(&mut body).await.is_err() {
                    break;
                }
                let Some((status, text)) = answers.next() else {
                    return;
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                if conn.get_mut().write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    }

    #[tokio::test]
    async fn the_interceptor_counts_operations_and_attempts_by_outcome() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(serve(
            listener,
            vec![
                (
                    400,
                    r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                ),
                (200, r#"{"clusters":[],"failures":[]}"#),
            ],
        ));
        let metrics = ApiMetrics::detached("aws-ecs");
        let shared = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                aws_sdk_ecs::config::Credentials::new("test", "test", None, None, "test"),
            ))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(std::time::Duration::from_millis(1)),
            )
            .build();
        let ecs = aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(&shared)
                .interceptor(Counting {
                    metrics: metrics.clone(),
                    service: ECS,
                })
                .build(),
        );
        ecs.describe_clusters()
            .clusters("c")
            .send()
            .await
            .expect("the retry succeeds");
        assert_eq!(metrics.calls(ECS, "DescribeClusters"), 1);
        assert_eq!(
            metrics.requests(ECS, "DescribeClusters", Outcome::throttled),
            1,
            "ThrottlingException is throttled although it is HTTP 400"
        );
        assert_eq!(metrics.requests(ECS, "DescribeClusters", Outcome::ok), 1);
        assert_eq!(
            metrics.requests(ECS, "DescribeClusters", Outcome::client_error),
            0
        );
    }

    #[tokio::test]
    async fn all_pages_follows_the_tokens_to_the_last_page() {
        let mut asked = Vec::new();
        let items = all_pages(|token: Option<String>| {
            asked.push(token.clone());
            let n: u32 = token.map_or(0, |t| t.parse().unwrap());
            async move { Ok((vec![n, n], (n < 2).then(|| (n + 1).to_string()))) }
        })
        .await
        .unwrap();
        assert_eq!(items, [0, 0, 1, 1, 2, 2]);
        assert_eq!(asked, [None, Some("1".into()), Some("2".into())]);
        let e = all_pages::<u32, _, _>(|_| async { Err(err(Some("Boom"), Some(500))) }).await;
        assert_eq!(e.unwrap_err().code.as_deref(), Some("Boom"));
    }
}
