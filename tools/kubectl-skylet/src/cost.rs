//! `kubectl skylet cost`: dollars per namespace, backend or pod over a
//! window.
//!
//! With `--prometheus URL` the numbers are skylet's own cost series,
//! `increase(skylet_pod_cost_dollars_total[WINDOW])` (exact billed sizes,
//! minimum durations, pods already gone). Without it they are computed from
//! what the apiserver shows now: each pod on a priced skylet node, its
//! requests at its node's price (annotations `skylet.io/price-*`), for the
//! part of its run inside the window. That misses pods already deleted and
//! backends that bill a larger size than the requests (Fargate's sizes).

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::Pod;
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::{
    Format,
    nodes::{self, LABEL_BACKEND, label},
    output,
};

/// What to group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum By {
    /// Per namespace.
    Namespace,
    /// Per backend.
    Backend,
    /// Per pod.
    Pod,
}

/// `cost` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The window, as Prometheus writes it: 30m, 1h, 24h, 7d.
    #[arg(long, default_value = "24h")]
    window: String,
    /// Group by namespace, backend or pod.
    #[arg(long, value_enum, default_value_t = By::Namespace)]
    by: By,
    /// Only this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Prometheus' base URL (http://host:9090): read skylet's cost series.
    #[arg(long)]
    prometheus: Option<String>,
}

/// One line of the result.
#[derive(Debug, Serialize)]
struct Line {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    dollars: f64,
}

/// The result, with where it came from.
#[derive(Debug, Serialize)]
struct Report {
    window: String,
    /// `prometheus` or `pods`.
    source: &'static str,
    lines: Vec<Line>,
    total: f64,
}

pub(crate) async fn run(client: &Client, args: &Args, out: Format) -> anyhow::Result<ExitCode> {
    let window = parse_window(&args.window)?;
    let (source, mut lines) = match &args.prometheus {
        Some(url) => ("prometheus", from_prometheus(url, args).await?),
        None => ("pods", from_pods(client, args, window).await?),
    };
    lines.sort_by(|a, b| b.dollars.total_cmp(&a.dollars));
    let total = lines.iter().map(|l| l.dollars).sum();
    let report = Report {
        window: args.window.clone(),
        source,
        lines,
        total,
    };
    let headers: &[&str] = match args.by {
        By::Namespace => &["NAMESPACE", "DOLLARS"],
        By::Backend => &["BACKEND", "DOLLARS"],
        By::Pod => &["NAMESPACE", "POD", "BACKEND", "DOLLARS"],
    };
    let mut rows: Vec<Vec<String>> = report
        .lines
        .iter()
        .map(|l| {
            let mut r: Vec<String> = match args.by {
                By::Namespace => vec![l.namespace.clone().unwrap_or_default()],
                By::Backend => vec![l.backend.clone().unwrap_or_default()],
                By::Pod => vec![
                    l.namespace.clone().unwrap_or_default(),
                    l.pod.clone().unwrap_or_default(),
                    l.backend.clone().unwrap_or_default(),
                ],
            };
            r.push(format!("{:.6}", l.dollars));
            r
        })
        .collect();
    let mut total_row = vec![format!("total ({}, from {source})", args.window)];
    total_row.extend(std::iter::repeat_n(String::new(), headers.len() - 2));
    total_row.push(format!("{total:.6}"));
    rows.push(total_row);
    output::print(out, &report, headers, rows)?;
    Ok(ExitCode::SUCCESS)
}

/// `30m`, `1h`, `7d`: a duration.
fn parse_window(w: &str) -> anyhow::Result<Duration> {
    let (n, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len()));
    let n: u64 = n
        .parse()
        .with_context(|| format!("window {w:?}: expected a number and s, m, h or d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("window {w:?}: expected a number and s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

/// The PromQL of `args`.
fn promql(args: &Args) -> String {
    let labels = match args.by {
        By::Namespace => "namespace",
        By::Backend => "backend",
        By::Pod => "namespace, pod, backend",
    };
    let matcher = args
        .namespace
        .as_ref()
        .map(|ns| format!("{{namespace=\"{ns}\"}}"))
        .unwrap_or_default();
    format!(
        "sum by ({labels}) (increase(skylet_pod_cost_dollars_total{matcher}[{}]))",
        args.window
    )
}

async fn from_prometheus(base: &str, args: &Args) -> anyhow::Result<Vec<Line>> {
    let q = promql(args);
    let url = format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        encode(&q)
    );
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
        .await
        .context("Prometheus did not answer within 30 s")?
        .with_context(|| format!("cannot reach Prometheus at {base}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("Prometheus answered {status}, not JSON"))?;
    if v["status"] != "success" {
        bail!("Prometheus: {} {} ({q})", v["errorType"], v["error"]);
    }
    let get = |m: &serde_json::Value, k: &str| m[k].as_str().map(str::to_owned);
    Ok(v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| Line {
            namespace: get(&r["metric"], "namespace"),
            pod: get(&r["metric"], "pod"),
            backend: get(&r["metric"], "backend"),
            dollars: r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0),
        })
        .collect())
}

/// Percent-encoding of a query parameter (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// (namespace, pod, backend), as grouped.
type Key = (Option<String>, Option<String>, Option<String>);

async fn from_pods(client: &Client, args: &Args, window: Duration) -> anyhow::Result<Vec<Line>> {
    let now = jiff::Timestamp::now();
    let since = now - jiff::SignedDuration::try_from(window)?;
    let mut sums: BTreeMap<Key, f64> = BTreeMap::new();
    for n in nodes::skylet_nodes(client).await? {
        let Some((vcpu, gib)) = nodes::price(&n) else {
            continue;
        };
        let backend = label(&n, LABEL_BACKEND).to_owned();
        for p in nodes::pods_on(client, &n.name_any()).await? {
            let ns = p.namespace().unwrap_or_default();
            if args.namespace.as_ref().is_some_and(|want| *want != ns) {
                continue;
            }
            let hours = hours_in(&p, since, now);
            let (cpu, mem) = nodes::pod_size(&p);
            let dollars = (cpu * vcpu + mem * gib) * hours;
            let key = match args.by {
                By::Namespace => (Some(ns), None, None),
                By::Backend => (None, None, Some(backend.clone())),
                By::Pod => (Some(ns), Some(p.name_any()), Some(backend.clone())),
            };
            *sums.entry(key).or_default() += dollars;
        }
    }
    Ok(sums
        .into_iter()
        .map(|((namespace, pod, backend), dollars)| Line {
            namespace,
            pod,
            backend,
            dollars,
        })
        .collect())
}

/// Hours of `p`'s run within [since, now]: from its start to the last of
/// its containers' ends when it has ended, else to now.
fn hours_in(p: &Pod, since: jiff::Timestamp, now: jiff::Timestamp) -> f64 {
    let Some(status) = &p.status else {
        return 0.0;
    };
    let Some(start) = status.start_time.as_ref().map(|t| t.0) else {
        return 0.0;
    };
    let done = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let end = if done {
        status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
            .map(|t| t.0)
            .max()
            .unwrap_or(start)
    } else {
        now
    };
    let (from, to) = (start.max(since), end.min(now));
    if to <= from {
        return 0.0;
    }
    to.duration_since(from).as_secs_f64() / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_prometheus_durations() {
        assert_eq!(parse_window("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_window("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_window("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_window("1w").is_err());
        assert!(parse_window("h").is_err());
    }

    #[test]
    fn the_query_groups_and_filters_as_asked() {
        let args = Args {
            window: "1h".into(),
            by: By::Pod,
            namespace: Some("web".into()),
            prometheus: None,
        };
        assert_eq!(
            promql(&args),
            "sum by (namespace, pod, backend) (increase(skylet_pod_cost_dollars_total{namespace=\"web\"}[1h]))"
        );
        assert_eq!(encode("a b{\"x\"}"), "a%20b%7B%22x%22%7D");
    }
}
