//! Counts apiserver requests from a JSON-lines audit log (policy level
//! Metadata, see `hack/bench.d/audit-policy.yaml`): per user, user agent,
//! verb and resource, within named time windows of a run.
//!
//! Only `ResponseComplete` (and `Panic`) events are counted, by the time the
//! request was received, so every finished request counts once; a watch that
//! is still open when the log is read is not counted. Lease requests
//! (`coordination.k8s.io/leases`) are reported apart from the rest, since the
//! targets are about what a node costs beyond its heartbeat.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A named time window, Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Name (`run`, `hold`, ...).
    pub name: String,
    /// Start.
    pub from: f64,
    /// End.
    pub to: f64,
}

/// The fields of an audit event this module reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    stage: String,
    request_received_timestamp: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    user_agent: String,
    verb: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    request_u_r_i: String,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    api_group: String,
}

/// One row: how many requests of a kind in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Authenticated user name.
    pub user: String,
    /// User-Agent header (empty if the client sent none).
    pub user_agent: String,
    /// Verb (get, list, watch, create, update, patch, delete, ...).
    pub verb: String,
    /// `[group/]resource[/subresource]`, or the path for non-resource requests.
    pub resource: String,
    /// HTTP status code of the response.
    pub code: u16,
    /// Requests.
    pub count: u64,
    /// Requests per second over the window.
    pub per_s: f64,
}

/// Totals of one user in a window.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct UserTotals {
    /// All requests.
    pub total: u64,
    /// Requests on leases.
    pub leases: u64,
    /// Requests on anything but leases.
    pub other: u64,
    /// All requests per second.
    pub per_s: f64,
    /// Non-lease requests per second.
    pub other_per_s: f64,
}

/// The counts of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowCounts {
    /// The window.
    pub window: Window,
    /// Its length, seconds.
    pub seconds: f64,
    /// Rows, most requests first.
    pub rows: Vec<Row>,
    /// Per user.
    pub by_user: BTreeMap<String, UserTotals>,
}

/// Counts the requests of the log at `path` in each of `windows`.
pub fn count(path: &Path, windows: &[Window]) -> anyhow::Result<Vec<WindowCounts>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open audit log {}", path.display()))?;
    count_lines(BufReader::new(file), windows)
}

/// Counts the requests of JSON lines from `reader` in each of `windows`.
pub fn count_lines(reader: impl BufRead, windows: &[Window]) -> anyhow::Result<Vec<WindowCounts>> {
    type Key = (String, String, String, String, u16);
    let mut counts: Vec<BTreeMap<Key, u64>> = vec![BTreeMap::new(); windows.len()];
    for (n, line) in reader.lines().enumerate() {
        let line = line.context("cannot read the audit log")?;
        if line.trim().is_empty() {
            continue;
        }
        // the last line may be cut if the apiserver is still writing
        let Ok(ev) = serde_json::from_str::<Event>(&line) else {
            tracing::debug!(line = n + 1, "skipping an unparsable audit line");
            continue;
        };
        if ev.stage != "ResponseComplete" && ev.stage != "Panic" {
            continue;
        }
        let Ok(ts) = ev.request_received_timestamp.parse::<jiff::Timestamp>() else {
            continue;
        };
        let t = ts.as_microsecond() as f64 / 1e6;
        let resource = match &ev.object_ref {
            Some(o) if !o.resource.is_empty() => {
                let group = if o.api_group.is_empty() {
                    String::new()
                } else {
                    format!("{}/", o.api_group)
                };
                if o.subresource.is_empty() {
                    format!("{group}{}", o.resource)
                } else {
                    format!("{group}{}/{}", o.resource, o.subresource)
                }
            }
            _ => ev
                .request_u_r_i
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        for (i, w) in windows.iter().enumerate() {
            if t >= w.from && t <= w.to {
                let code = ev.response_status.as_ref().map_or(0, |r| r.code);
                let key = (
                    ev.user.username.clone(),
                    ev.user_agent.clone(),
                    ev.verb.clone(),
                    resource.clone(),
                    code,
                );
                *counts[i].entry(key).or_default() += 1;
            }
        }
    }
    Ok(windows
        .iter()
        .zip(counts)
        .map(|(w, c)| {
            let seconds = (w.to - w.from).max(1e-9);
            let mut rows: Vec<Row> = c
                .into_iter()
                .map(|((user, user_agent, verb, resource, code), count)| Row {
                    user,
                    user_agent,
                    verb,
                    resource,
                    code,
                    count,
                    per_s: count as f64 / seconds,
                })
                .collect();
            rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.user.cmp(&b.user)));
            let mut by_user: BTreeMap<String, UserTotals> = BTreeMap::new();
            for r in &rows {
                let u = by_user.entry(r.user.clone()).or_default();
                u.total += r.count;
                if r.resource.ends_with("leases") {
                    u.leases += r.count;
                } else {
                    u.other += r.count;
                }
            }
            for u in by_user.values_mut() {
                u.per_s = u.total as f64 / seconds;
                u.other_per_s = u.other as f64 / seconds;
            }
            WindowCounts {
                window: w.clone(),
                seconds,
                rows,
                by_user,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        stage: &str,
        ts: &str,
        user: &str,
        verb: &str,
        resource: &str,
        sub: &str,
        group: &str,
    ) -> String {
        serde_json::json!({
            "kind": "Event", "level": "Metadata", "stage": stage, "requestReceivedTimestamp": ts,
            "user": {"username": user}, "userAgent": "ua", "verb": verb, "requestURI": "/x?y",
            "objectRef": {"resource": resource, "subresource": sub, "apiGroup": group},
            "responseStatus": {"code": 200}
        })
        .to_string()
    }

    #[test]
    fn counts_complete_requests_per_window_and_separates_leases() {
        let log = [
            line(
                "ResponseComplete",
                "2026-01-01T00:00:01.000000Z",
                "skylet",
                "patch",
                "pods",
                "status",
                "",
            ),
            line(
                "ResponseStarted",
                "2026-01-01T00:00:01.500000Z",
                "skylet",
                "watch",
                "pods",
                "",
                "",
            ),
            line(
                "ResponseComplete",
                "2026-01-01T00:00:02.000000Z",
                "skylet",
                "update",
                "leases",
                "",
                "coordination.k8s.io",
            ),
            line(
                "ResponseComplete",
                "2026-01-01T00:00:12.000000Z",
                "skylet",
                "patch",
                "pods",
                "status",
                "",
            ),
            "{truncated".to_owned(),
        ]
        .join("\n");
        let t0 = "2026-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second() as f64;
        let windows = [
            Window {
                name: "first".into(),
                from: t0,
                to: t0 + 10.0,
            },
            Window {
                name: "all".into(),
                from: t0,
                to: t0 + 20.0,
            },
        ];
        let c = count_lines(log.as_bytes(), &windows).unwrap();
        let first = &c[0].by_user["skylet"];
        assert_eq!((first.total, first.leases, first.other), (2, 1, 1));
        assert!((first.other_per_s - 0.1).abs() < 1e-9);
        assert_eq!(c[1].by_user["skylet"].total, 3);
        assert_eq!(c[1].rows[0].resource, "pods/status");
        assert_eq!((c[1].rows[0].count, c[1].rows[0].code), (2, 200));
    }
}
