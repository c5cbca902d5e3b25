//! Azure Monitor's batch metrics API for container groups, as the
//! regional endpoint serves it: `POST /subscriptions/{sub}/metrics:getBatch`
//! (operation `Batch`), answering each group's `CpuUsage` (millicores) and
//! `MemoryUsage` (bytes), split by `containerName`, one point a minute,
//! from what the simulated containers use (`load` in their program).
//!
//! There is no spec of this API next to the ARM one, so the request and
//! the answer are typed here by hand from the published OpenAPI document
//! (azure-rest-api-specs,
//! `specification/monitor/data-plane/Microsoft.Insights/stable/2024-02-01/metricBatch.json`):
//! the query ([`Query`]) and the body ([`ResourceIdList`]) are parsed
//! strictly (unknown body fields, a missing required parameter, a value
//! outside the documented forms: 400 `BadRequest`, counted as rejected),
//! every resource id is checked (a container group of this subscription,
//! at most [`MAX_RESOURCES`]), the token must be one issued for the
//! metrics audience (401), and the answer is built from the typed
//! [`MetricResultsResponse`], whose required fields cannot be left out.
//! skylet's client has its own typing of the same document, so the two
//! check each other.
//!
//! Unlike the real service, the current minute is answered at once (no
//! publishing delay), so tests need not wait for Azure Monitor's lag.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::state::{Ctr, Load};

/// The operation's name in [`crate::Stats`] and [`crate::Emulator::requests`].
pub const OPERATION: &str = "Batch";
/// The api-versions of the batch API.
pub const API_VERSIONS: &[&str] = &["2023-10-01", "2024-02-01"];
/// The most resource ids one call takes.
pub const MAX_RESOURCES: usize = 50;
const NAMESPACE: &str = "Microsoft.ContainerInstance/containerGroups";
/// ACI's metrics and their units.
const METRICS: &[(&str, &str, &str)] = &[
    (
        "CpuUsage",
        "MilliCores",
        "CPU usage on all cores in millicores.",
    ),
    ("MemoryUsage", "Bytes", "Total memory usage in byte."),
    (
        "NetworkBytesReceivedPerSecond",
        "Bytes",
        "The network bytes received per second.",
    ),
    (
        "NetworkBytesTransmittedPerSecond",
        "Bytes",
        "The network bytes transmitted per second.",
    ),
];
const AGGREGATIONS: &[&str] = &["average", "minimum", "maximum", "total", "count"];
const DIMENSION: &str = "containerName";

/// `ResourceIdList`, the body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceIdList {
    /// The resources (ARM ids).
    pub resourceids: Option<Vec<String>>,
}

/// The query parameters of `Batch`.
#[derive(Debug, Default)]
pub struct Query {
    api_version: String,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    interval: Option<SignedDuration>,
    namespace: String,
    names: Vec<String>,
    aggregations: Vec<String>,
    top: Option<u32>,
    filter: Option<String>,
}

/// `MetricResultsResponse`.
#[derive(Debug, Serialize)]
pub struct MetricResultsResponse {
    values: Vec<ValuesItem>,
}

#[derive(Debug, Serialize)]
struct ValuesItem {
    starttime: String,
    endtime: String,
    interval: String,
    namespace: String,
    resourceregion: String,
    resourceid: String,
    value: Vec<Metric>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metric {
    id: String,
    #[serde(rename = "type")]
    type_: &'static str,
    name: LocalizableString,
    display_description: &'static str,
    error_code: &'static str,
    unit: &'static str,
    timeseries: Vec<TimeSeriesElement>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalizableString {
    value: String,
    localized_value: String,
}

#[derive(Debug, Serialize)]
struct TimeSeriesElement {
    metadatavalues: Vec<MetadataValue>,
    data: Vec<MetricValue>,
}

#[derive(Debug, Serialize)]
struct MetadataValue {
    name: LocalizableString,
    value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricValue {
    time_stamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    average: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minimum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maximum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<f64>,
}

fn bad(message: impl Into<String>) -> (StatusCode, &'static str, String) {
    (StatusCode::BAD_REQUEST, "BadRequest", message.into())
}

/// A time as the API writes it, `yyyy-MM-ddTHH:mm:ss.fffZ` (seconds and
/// fractions optional on input).
fn time(name: &str, v: &str) -> Result<Timestamp, (StatusCode, &'static str, String)> {
    v.parse::<Timestamp>().map_err(|_| {
        bad(format!(
            "{name} '{v}' is not a date-time of the form yyyy-MM-ddTHH:mm:ss.fffZ"
        ))
    })
}

/// An ISO 8601 duration of minutes, hours or days (`PT1M`, `PT1H`, `P1D`),
/// or `FULL` (`None`).
fn interval(v: &str) -> Result<Option<SignedDuration>, (StatusCode, &'static str, String)> {
    if v.eq_ignore_ascii_case("FULL") {
        return Ok(None);
    }
    let not_iso = || {
        bad(format!(
            "interval '{v}' is not an ISO 8601 duration or FULL"
        ))
    };
    if !v.starts_with(['P', 'p']) {
        return Err(not_iso());
    }
    let span: jiff::Span = v.parse().map_err(|_| not_iso())?;
    let d = SignedDuration::try_from(span)
        .ok()
        .filter(|d| d.as_secs() >= 60 && d.as_secs() % 60 == 0)
        .ok_or_else(|| bad(format!("interval '{v}' is not a whole number of minutes")))?;
    Ok(Some(d))
}

/// `$filter` of the form `containerName eq 'x' [or containerName eq 'y' ...]`
/// (the documented grammar, with the one dimension ACI's metrics have).
fn filter(v: &str) -> Result<(), (StatusCode, &'static str, String)> {
    for clause in v.split(" or ").flat_map(|c| c.split(" and ")) {
        let words: Vec<&str> = clause.trim().splitn(3, ' ').collect();
        match words.as_slice() {
            [dim, "eq", value]
                if dim.eq_ignore_ascii_case(DIMENSION)
                    && value.len() >= 2
                    && value.starts_with('\'')
                    && value.ends_with('\'') => {}
            _ => {
                return Err(bad(format!(
                    "filter '{v}' is invalid: expected {DIMENSION} eq '<value>' clauses"
                )));
            }
        }
    }
    Ok(())
}

impl Query {
    /// Parses the query string as the spec types it.
    fn parse(raw: Option<&str>) -> Result<Self, (StatusCode, &'static str, String)> {
        let mut q = Self::default();
        let pairs: Vec<(String, String)> = raw
            .map(|r| form_urlencoded::parse(r.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in pairs {
            let key = k.to_ascii_lowercase();
            if !seen.insert(key.clone()) {
                return Err(bad(format!("query parameter '{k}' given twice")));
            }
            match key.as_str() {
                "api-version" => q.api_version = v,
                "starttime" => q.start = Some(time("starttime", &v)?),
                "endtime" => q.end = Some(time("endtime", &v)?),
                "interval" => q.interval = interval(&v)?,
                "metricnamespace" => q.namespace = v,
                "metricnames" => q.names = v.split(',').map(|n| n.trim().to_owned()).collect(),
                "aggregation" => {
                    q.aggregations = v
                        .split(',')
                        .map(|a| a.trim().to_ascii_lowercase())
                        .collect();
                }
                "top" => {
                    q.top = Some(
                        v.parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| bad(format!("top '{v}' is not a positive int32")))?,
                    );
                }
                "orderby" | "rollupby" => {}
                "filter" => {
                    filter(&v)?;
                    q.filter = Some(v);
                }
                _ => return Err(bad(format!("unknown query parameter '{k}'"))),
            }
        }
        if q.api_version.is_empty() {
            return Err((
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests."
                    .into(),
            ));
        }
        if !API_VERSIONS.contains(&q.api_version.as_str()) {
            return Err((
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{}' is invalid. The supported versions are '{}'.",
                    q.api_version,
                    API_VERSIONS.join(",")
                ),
            ));
        }
        if q.namespace.is_empty() {
            return Err(bad("metricnamespace is required"));
        }
        if !q.namespace.eq_ignore_ascii_case(NAMESPACE) {
            return Err(bad(format!(
                "metric namespace '{}' is not {NAMESPACE}",
                q.namespace
            )));
        }
        if q.names.is_empty() || q.names.iter().any(String::is_empty) {
            return Err(bad("metricnames is required"));
        }
        for n in &q.names {
            if !METRICS.iter().any(|(m, _, _)| m.eq_ignore_ascii_case(n)) {
                return Err(bad(format!("metric '{n}' does not exist in {NAMESPACE}")));
            }
        }
        for a in &q.aggregations {
            if !AGGREGATIONS.contains(&a.as_str()) {
                return Err(bad(format!(
                    "aggregation '{a}' is not one of {AGGREGATIONS:?}"
                )));
            }
        }
        if q.top.is_some() && q.filter.is_none() {
            return Err(bad("top is valid only with a filter"));
        }
        if let (Some(s), Some(e)) = (q.start, q.end)
            && s >= e
        {
            return Err(bad("starttime must be before endtime"));
        }
        if q.end.is_some() && q.start.is_none() {
            return Err(bad("starttime is required with endtime"));
        }
        Ok(q)
    }
}

/// The group name of resource id `id` if it is a container group of
/// `subscription` (ids are case-insensitive): `(resource group, name)`.
fn group_of(id: &str, subscription: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = id.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [s, sub, r, rg, p, ns, t, name]
            if s.eq_ignore_ascii_case("subscriptions")
                && sub.eq_ignore_ascii_case(subscription)
                && r.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.ContainerInstance")
                && t.eq_ignore_ascii_case("containerGroups")
                && !name.is_empty() =>
        {
            Some(((*rg).to_owned(), (*name).to_owned()))
        }
        _ => None,
    }
}

/// The error answer of the metrics API (`ErrorResponse`).
fn error(app: &App, status: StatusCode, code: &str, message: &str) -> Response {
    if status.is_client_error() {
        app.count_rejected();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

/// One minute's point of a metric of a container, from its load.
fn point(metric: &str, aggregations: &[String], at: Timestamp, l: Load) -> MetricValue {
    let v = if metric.eq_ignore_ascii_case("CpuUsage") {
        l.millicores as f64
    } else if metric.eq_ignore_ascii_case("MemoryUsage") {
        l.memory as f64
    } else {
        0.0
    };
    let has =
        |a: &str| aggregations.is_empty() && a == "average" || aggregations.iter().any(|x| x == a);
    MetricValue {
        time_stamp: at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        average: has("average").then_some(v),
        minimum: has("minimum").then_some(v),
        maximum: has("maximum").then_some(v),
        total: has("total").then_some(v),
        count: has("count").then_some(1.0),
    }
}

/// `POST /subscriptions/{subscriptionId}/metrics:getBatch`.
pub(crate) async fn batch(
    State(app): State<Arc<App>>,
    Path(subscription): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.count(OPERATION);
    app.record_request(
        OPERATION,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    );
    if !app
        .tokens
        .check_audience(&headers, crate::token::METRICS_SCOPE)
    {
        return error(
            &app,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is missing, invalid, or not issued for https://metrics.monitor.azure.com.",
        );
    }
    match answer(&app, &subscription, raw.as_deref(), &headers, &body) {
        Ok(r) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            serde_json::to_string(&r).unwrap_or_default(),
        )
            .into_response(),
        Err((status, code, message)) => error(&app, status, code, &message),
    }
}

fn answer(
    app: &App,
    subscription: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<MetricResultsResponse, (StatusCode, &'static str, String)> {
    let query = Query::parse(raw)?;
    if !headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        return Err(bad("the body must be application/json"));
    }
    let list: ResourceIdList = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not a ResourceIdList: {e}")))?;
    let ids = list.resourceids.unwrap_or_default();
    if ids.is_empty() {
        return Err(bad("resourceids must name at least one resource"));
    }
    if ids.len() > MAX_RESOURCES {
        return Err(bad(format!(
            "at most {MAX_RESOURCES} resource ids per batch, got {}",
            ids.len()
        )));
    }
    if !subscription.eq_ignore_ascii_case(&app.config.subscription_id) {
        return Err((
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        ));
    }
    let groups: Vec<(String, String, String)> = ids
        .iter()
        .map(|id| {
            group_of(id, subscription)
                .map(|(rg, name)| (id.clone(), rg, name))
                .ok_or_else(|| {
                    bad(format!(
                        "'{id}' is not a resource id of a container group in subscription {subscription}"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let end = query.end.unwrap_or_else(Timestamp::now);
    let start = query
        .start
        .unwrap_or_else(|| end - SignedDuration::from_hours(1));
    let step = query.interval.unwrap_or(SignedDuration::from_mins(1));
    // points at the start of each minute of the timespan, the current one included
    let first = Timestamp::from_second(start.as_second() - start.as_second().rem_euclid(60))
        .unwrap_or(start);
    let store = app.lock_store();
    let mut values = Vec::new();
    for (id, rg, name) in groups {
        let group = store.groups.get(&crate::state::key(&rg, &name));
        let mut value = Vec::new();
        for metric in &query.names {
            let Some((mname, unit, description)) = METRICS
                .iter()
                .find(|(m, _, _)| m.eq_ignore_ascii_case(metric))
            else {
                continue;
            };
            let containers: Vec<&Ctr> = group
                .map(|g| g.containers.iter().collect())
                .unwrap_or_default();
            // one point a minute while any of `cs` ran: the sum of their loads
            let series = |cs: &[&Ctr]| {
                let mut data = Vec::new();
                let mut at = first;
                while at < end {
                    let bucket_end = (at + step).min(Timestamp::now());
                    let loads: Vec<Load> =
                        cs.iter().filter_map(|c| c.load_at(bucket_end)).collect();
                    if !loads.is_empty() {
                        let sum = Load {
                            at,
                            millicores: loads.iter().map(|l| l.millicores).sum(),
                            memory: loads.iter().map(|l| l.memory).sum(),
                        };
                        data.push(point(mname, &query.aggregations, at, sum));
                    }
                    at += step;
                }
                data
            };
            let mut timeseries: Vec<TimeSeriesElement> = if query.filter.is_some() {
                containers
                    .iter()
                    .map(|c| TimeSeriesElement {
                        metadatavalues: vec![MetadataValue {
                            name: LocalizableString {
                                value: "containername".into(),
                                localized_value: "containername".into(),
                            },
                            value: c.name.clone(),
                        }],
                        data: series(&[c]),
                    })
                    .collect()
            } else {
                // without a filter: one series over the whole group
                vec![TimeSeriesElement {
                    metadatavalues: Vec::new(),
                    data: series(&containers),
                }]
            };
            if let Some(top) = query.top {
                timeseries.truncate(top as usize);
            }
            value.push(Metric {
                id: format!("{id}/providers/Microsoft.Insights/metrics/{mname}"),
                type_: "Microsoft.Insights/metrics",
                name: LocalizableString {
                    value: (*mname).to_owned(),
                    localized_value: (*mname).to_owned(),
                },
                display_description: description,
                error_code: "Success",
                unit,
                timeseries,
            });
        }
        values.push(ValuesItem {
            starttime: start.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            endtime: end.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            interval: query
                .interval
                .map_or_else(|| "FULL".into(), |d| format!("PT{}M", d.as_secs() / 60)),
            namespace: NAMESPACE.into(),
            resourceregion: app.config.location.to_ascii_lowercase().replace(' ', ""),
            resourceid: id,
            value,
        });
    }
    Ok(MetricResultsResponse { values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_as_the_spec_types_them() {
        let ok = "api-version=2024-02-01&starttime=2026-01-01T00:00:00.000Z&endtime=2026-01-01T00:05:00.000Z&interval=PT1M&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage%2CMemoryUsage&aggregation=average&top=60&filter=containerName+eq+%27%2A%27";
        let q = Query::parse(Some(ok)).unwrap();
        assert_eq!(q.names, ["CpuUsage", "MemoryUsage"]);
        assert_eq!(q.interval, Some(SignedDuration::from_mins(1)));
        for (broken, why) in [
            (
                "metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage",
                "MissingApiVersionParameter",
            ),
            (
                "api-version=2018-01-01&metricnamespace=x&metricnames=CpuUsage",
                "InvalidApiVersionParameter",
            ),
            (
                "api-version=2024-02-01&metricnames=CpuUsage",
                "metricnamespace is required",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups",
                "metricnames is required",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuPercent",
                "does not exist",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage&aggregation=avg",
                "aggregation",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage&interval=1m",
                "interval",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage&top=5",
                "top is valid only",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage&filter=name+eq+%27a%27",
                "filter",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage&starttime=yesterday",
                "starttime",
            ),
            (
                "api-version=2024-02-01&metricnamespace=Microsoft.ContainerInstance%2FcontainerGroups&metricnames=CpuUsage&timespan=PT1H",
                "unknown query parameter",
            ),
        ] {
            let (_, code, message) = Query::parse(Some(broken)).unwrap_err();
            assert!(
                code.contains(why) || message.contains(why),
                "{broken}: {code} {message}"
            );
        }
    }

    #[test]
    fn only_container_groups_of_the_subscription() {
        let sub = "00000000-0000-0000-0000-000000000001";
        assert_eq!(
            group_of(
                &format!(
                    "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g"
                ),
                sub
            ),
            Some(("rg".into(), "g".into()))
        );
        assert_eq!(
            group_of(
                &format!(
                    "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/g"
                ),
                sub
            ),
            None
        );
        assert_eq!(
            group_of(
                "/subscriptions/other/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g",
                sub
            ),
            None
        );
    }
}
