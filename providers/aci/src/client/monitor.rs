//! Azure Monitor metrics of container groups, for `kubectl top`: the
//! batch API (`POST {endpoint}/subscriptions/{sub}/metrics:getBatch`,
//! api-version [`METRICS_API_VERSION`]), up to [`MAX_RESOURCES`] groups a
//! call, on the regional endpoint `https://{location}.metrics.monitor.azure.com`
//! with a token for `https://metrics.monitor.azure.com/.default`.
//!
//! There is no spec of this data-plane API next to the ARM one, so the
//! request and response types below are typed by hand from the published
//! OpenAPI document (azure-rest-api-specs,
//! `specification/monitor/data-plane/Microsoft.Insights/stable/2024-02-01/metricBatch.json`,
//! operation `Batch`): the body `ResourceIdList`, the answer
//! `MetricResultsResponse` and what it holds. The ACI emulator checks the
//! requests it receives against its own typing of the same document.
//!
//! ACI's metrics (namespace `Microsoft.ContainerInstance/containerGroups`):
//! `CpuUsage` in millicores and `MemoryUsage` in bytes, each split by the
//! dimension `containerName` (`$filter=containerName eq '*'`).

use serde::{Deserialize, Serialize};

use super::{ArmClient, ArmError, ops::METRICS_BATCH};

/// The api-version of the batch metrics API.
pub const METRICS_API_VERSION: &str = "2024-02-01";
/// The most resource ids one batch call takes.
pub const MAX_RESOURCES: usize = 50;
/// The metric namespace of container groups.
pub const NAMESPACE: &str = "Microsoft.ContainerInstance/containerGroups";
/// CPU use of a container, in millicores.
pub const CPU_USAGE: &str = "CpuUsage";
/// Memory use of a container, in bytes.
pub const MEMORY_USAGE: &str = "MemoryUsage";
/// The dimension that splits a group's metrics by container.
pub const CONTAINER_DIMENSION: &str = "containerName";

/// `ResourceIdList`: the body of a batch call.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ResourceIdList {
    /// The resources (ARM ids) to query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resourceids: Option<Vec<String>>,
}

/// `MetricResultsResponse`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MetricResultsResponse {
    /// Per resource, its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<MetricResultsResponseValuesItem>>,
}

/// `MetricResultsResponseValuesItem`: the metrics of one resource.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MetricResultsResponseValuesItem {
    /// Start of the timespan.
    pub starttime: String,
    /// End of the timespan.
    pub endtime: String,
    /// The interval (`PT1M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// The metric namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The resource's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resourceregion: Option<String>,
    /// The resource (ARM id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resourceid: Option<String>,
    /// Its metrics.
    pub value: Vec<Metric>,
}

/// `LocalizableString`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalizableString {
    /// The invariant value.
    pub value: String,
    /// The display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localized_value: Option<String>,
}

/// `Metric`: one metric of a resource.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// The metric id.
    pub id: String,
    /// The resource type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The metric's name.
    pub name: LocalizableString,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_description: Option<String>,
    /// `Success`, or why this metric failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Why this metric failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// `MetricUnit` (`MilliCores`, `Bytes`, ...).
    pub unit: String,
    /// Its time series, one per dimension value.
    pub timeseries: Vec<TimeSeriesElement>,
}

/// `TimeSeriesElement`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TimeSeriesElement {
    /// The dimension values of this series (with a `$filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadatavalues: Option<Vec<MetadataValue>>,
    /// Its data points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<MetricValue>>,
}

/// `MetadataValue`: a dimension and its value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct MetadataValue {
    /// The dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<LocalizableString>,
    /// Its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `MetricValue`: one data point.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// Its time (ISO 8601).
    pub time_stamp: String,
    /// The average over the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    /// The least value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// The greatest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// The sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// The number of samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
}

/// The newest average of each container in `metric`'s series, by the
/// value of [`CONTAINER_DIMENSION`].
pub fn latest_by_container(metric: &Metric) -> Vec<(String, f64)> {
    metric
        .timeseries
        .iter()
        .filter_map(|ts| {
            let container = ts
                .metadatavalues
                .iter()
                .flatten()
                .find(|m| {
                    m.name
                        .as_ref()
                        .is_some_and(|n| n.value.eq_ignore_ascii_case(CONTAINER_DIMENSION))
                })?
                .value
                .clone()?;
            let newest = ts
                .data
                .iter()
                .flatten()
                .filter(|d| d.average.is_some())
                .max_by(|a, b| a.time_stamp.cmp(&b.time_stamp))?;
            Some((container, newest.average?))
        })
        .collect()
}

impl ArmClient {
    /// Batch: `CpuUsage` and `MemoryUsage` per container of the groups
    /// `resource_ids` (at most [`MAX_RESOURCES`]) over the last `minutes`
    /// minutes, one-minute averages.
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn group_metrics(
        &self,
        resource_ids: &[String],
        minutes: i64,
    ) -> Result<MetricResultsResponse, ArmError> {
        let now = jiff::Timestamp::now();
        let start = now - jiff::SignedDuration::from_mins(minutes);
        let fmt = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let mut url = self.monitor_endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend([
                "subscriptions",
                self.subscription_id.as_str(),
                "metrics:getBatch",
            ]);
        }
        url.query_pairs_mut()
            .append_pair("api-version", METRICS_API_VERSION)
            .append_pair("starttime", &fmt(start))
            .append_pair("endtime", &fmt(now))
            .append_pair("interval", "PT1M")
            .append_pair("metricnamespace", NAMESPACE)
            .append_pair("metricnames", &format!("{CPU_USAGE},{MEMORY_USAGE}"))
            .append_pair("aggregation", "average")
            .append_pair("top", "60")
            .append_pair("filter", &format!("{CONTAINER_DIMENSION} eq '*'"));
        let body = super::send::json_body(
            METRICS_BATCH,
            &ResourceIdList {
                resourceids: Some(resource_ids.to_vec()),
            },
        )?;
        let answer = self
            .send(
                METRICS_BATCH,
                azure_core::http::Method::Post,
                &url,
                Some(body),
            )
            .await;
        let result = match answer {
            Ok(a) if a.status == 200 => a.json(METRICS_BATCH),
            Ok(a) => Err(a.error(METRICS_BATCH)),
            Err(e) => Err(e),
        };
        self.counted(METRICS_BATCH, result)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_newest_average_of_each_container() {
        // shaped as MetricBatchExample.json of the spec, with ACI's metric
        let answer: MetricResultsResponse = serde_json::from_value(json!({
            "values": [{
                "starttime": "2026-01-01T00:00:00Z",
                "endtime": "2026-01-01T00:03:00Z",
                "interval": "PT1M",
                "namespace": NAMESPACE,
                "resourceregion": "westeurope",
                "resourceid": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g",
                "value": [{
                    "id": "/subscriptions/s/.../providers/Microsoft.Insights/metrics/CpuUsage",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": "CpuUsage", "localizedValue": "CPU Usage"},
                    "displayDescription": "CPU usage on all cores in millicores.",
                    "errorCode": "Success",
                    "unit": "MilliCores",
                    "timeseries": [
                        {"metadatavalues": [{"name": {"value": "containername"}, "value": "web"}],
                         "data": [{"timeStamp": "2026-01-01T00:01:00Z", "average": 10.0},
                                  {"timeStamp": "2026-01-01T00:02:00Z", "average": 250.0},
                                  {"timeStamp": "2026-01-01T00:03:00Z"}]},
                        {"metadatavalues": [{"name": {"value": "containerName"}, "value": "side"}],
                         "data": []}
                    ]
                }]
            }]
        }))
        .unwrap();
        let values = answer.values.unwrap();
        assert_eq!(
            latest_by_container(&values[0].value[0]),
            [("web".to_owned(), 250.0)],
            "the newest point with an average; a series without data is skipped"
        );
    }
}
