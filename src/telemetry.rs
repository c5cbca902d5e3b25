//! Logging and tracing: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`), as text or JSON; with `--otlp-endpoint`, the same
//! spans exported over OTLP/HTTP (protobuf) as well.
//!
//! # Traces
//! Each reconcile is a span (`reconcile`: `pod.namespace`, `pod.name`,
//! `pod.uid`, `provider`, `backend`, `outcome`) and each backend call
//! within it a child span (`provider_call`: `op`, `backend`, `provider`,
//! `outcome`: `ok` or the error class), from [`crate::metrics::timed`].
//! Every reconcile of one pod has the same trace ID, the pod's UID (a UUID
//! is 128 bits, as a trace ID), under a root span ID derived from it
//! ([`pod_trace`]): a pod's whole life is one trace, found by its UID.
//!
//! # Caveats
//! - The root span of a pod's trace is never exported (it has no start or
//!   end of its own): trace viewers show the reconciles as children of a
//!   missing parent.
//! - Spans are batched and sent every 5 s (`OTEL_BSP_SCHEDULE_DELAY`, in
//!   ms); [`Guard`] flushes the rest when skylet stops.

use opentelemetry::{
    KeyValue,
    trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    },
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Flushes and stops the trace export when dropped.
#[derive(Debug, Default)]
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("skylet: traces not all exported: {e}");
        }
    }
}

/// Why the trace export could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}")]
pub struct Error {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Installs the global subscriber; with `otlp_endpoint` (a collector's
/// base URL, `http://host:4318`) spans are exported there too. Safe to
/// call more than once (tests): only the first installs.
///
/// # Errors
/// The exporter cannot be built from `otlp_endpoint`.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Guard, Error> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let (otel, guard) = match otlp_endpoint {
        Some(endpoint) => {
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            let exporter = SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .build()
                .map_err(|source| Error {
                    endpoint: endpoint.to_owned(),
                    source,
                })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name("skylet")
                        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                        .build(),
                )
                .build();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("skylet"))
                .with_filter(filter());
            (Some(layer), Guard(Some(provider)))
        }
        None => (None, Guard(None)),
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter()))
        .with(otel)
        .try_init();
    Ok(guard)
}

/// Puts `span` in the trace of pod `uid`: trace ID the UID's 128 bits,
/// parent a root span ID from its last 64. A UID that is not a UUID leaves
/// the span where it is.
pub fn pod_trace(span: &tracing::Span, uid: &str) {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).collect();
    let Ok(id) = u128::from_str_radix(&hex, 16) else {
        return;
    };
    if hex.len() != 32 || id == 0 {
        return;
    }
    // the low 64 bits of a UUID v4 are random: never zero in practice
    let root = SpanId::from_bytes((id as u64).max(1).to_be_bytes());
    let parent = SpanContext::new(
        TraceId::from_bytes(id.to_be_bytes()),
        root,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
}
