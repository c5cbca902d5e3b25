//! Logging and tracing: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`, without kube-runtime's span per reconcile), as text or
//! JSON; with `--otlp-endpoint`, the same spans exported over OTLP/HTTP
//! (protobuf) as well.
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
use tracing::{Metadata, span, subscriber::Interest};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::LevelFilter,
    fmt,
    layer::{Context, Filter, SubscriberExt},
    util::SubscriberInitExt,
};

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
    let filter = || match EnvFilter::try_from_default_env() {
        Ok(inner) => LogFilter {
            // the variable parsed, so it is there
            by_span: std::env::var(EnvFilter::DEFAULT_ENV).is_ok_and(|s| s.contains('[')),
            inner,
        },
        Err(_) => LogFilter {
            by_span: false,
            inner: EnvFilter::new(DEFAULT_FILTER),
        },
    };
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
    let logs = tracing_subscriber::registry().with(logs.with_filter(filter()));
    // not `.with(otel)` with `otel` = None: an absent layer says it wants
    // every callsite, so every span and event at every level (hyper's,
    // kube-client's, kube-runtime's) was built, entered and left for the
    // log filter to drop each time (a third of skylet's CPU in a burst)
    let _ = match otel {
        Some(otel) => logs.with(otel).try_init(),
        None => logs.try_init(),
    };
    Ok(guard)
}

/// The filter without `RUST_LOG`: `info`, but not kube-runtime's span of
/// each reconcile (`reconciling object`, at info). kube-runtime's
/// controller keeps every reconcile in flight in a map that it polls whole
/// each time it is woken (kube-runtime 5.0, `controller/future_hash_map.rs`),
/// and each of those polls entered and left that span: with thousands of
/// pods waiting for a lane, 40% of skylet's CPU in a burst of 10,000 pods
/// (BENCHMARKS.md). skylet's own `reconcile` span names the pod in logs and
/// traces; `RUST_LOG=info` brings kube-runtime's span back.
const DEFAULT_FILTER: &str = "info,kube_runtime::controller=warn";

/// An [`EnvFilter`] that skips its own bookkeeping of entered spans when
/// no directive filters by span (`target[span{field}]=level`): without
/// such directives it tracks no span, yet takes a lock to find that out
/// each time any span is entered or left, which is each poll of each
/// instrumented future.
struct LogFilter {
    inner: EnvFilter,
    /// Whether a directive filters by span, so that the inner filter must
    /// see spans entered and left.
    by_span: bool,
}

impl<S> Filter<S> for LogFilter
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&self.inner, meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        Filter::<S>::callsite_enabled(&self.inner, meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.inner)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_new_span(&self.inner, attrs, id, cx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        Filter::<S>::on_record(&self.inner, id, values, cx);
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        if self.by_span {
            Filter::<S>::on_enter(&self.inner, id, cx);
        }
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        if self.by_span {
            Filter::<S>::on_exit(&self.inner, id, cx);
        }
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_close(&self.inner, id, cx);
    }
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
