//! The downward API: `fieldRef` and `resourceFieldRef` values, for the
//! environment and for downwardAPI volume files, formatted as the kubelet
//! formats them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ObjectFieldSelector, Pod, ResourceFieldSelector, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use skylet_provider::quantity::{Quantity, ceil_div};

use super::build::Inputs;
use super::{containers, spec};

/// The value of a `fieldRef`. `status.podIP(s)` is what the pod status holds
/// now, usually empty: the backend assigns the address later.
pub(super) fn field_value(
    inputs: &Inputs<'_>,
    selector: &ObjectFieldSelector,
) -> Result<String, String> {
    let (pod, meta) = (inputs.pod, &inputs.pod.metadata);
    let path = selector.field_path.as_str();
    if let Some((base, key)) = subscript(path) {
        let map = match base {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => return Err(unsupported_field(path)),
        };
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    Ok(match path {
        "metadata.name" => text(&meta.name),
        "metadata.namespace" => text(&meta.namespace),
        "metadata.uid" => text(&meta.uid),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec(pod)
            .node_name
            .clone()
            .unwrap_or_else(|| inputs.node.name.clone()),
        "spec.serviceAccountName" => text(&spec(pod).service_account_name),
        "status.hostIP" | "status.hostIPs" => inputs.node.ip.clone(),
        "status.podIP" => pod_ips(pod).first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips(pod).join(","),
        _ => return Err(unsupported_field(path)),
    })
}

fn unsupported_field(path: &str) -> String {
    format!(
        "fieldPath {path:?} is not supported; use metadata.name, metadata.namespace, metadata.uid, \
         metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, \
         status.hostIP, status.hostIPs, status.podIP or status.podIPs"
    )
}

/// `base['key']` as `(base, key)` (fieldpath.SplitMaybeSubscriptedPath).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (base, key) = path.strip_suffix("']")?.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// The pod's IPs, primary first; empty until the backend reports them.
fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        status
            .pod_ip
            .iter()
            .filter(|ip| !ip.is_empty())
            .cloned()
            .collect()
    } else {
        ips
    }
}

/// Labels or annotations as the kubelet writes them (fieldpath.FormatMap):
/// `key="value"` lines sorted by key, values quoted like Go's `%q`.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `s` quoted like Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if go_printable(c) => out.push(c),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint` for the characters labels and annotations hold in
/// practice: not a control, not a space other than ' ', not a format or
/// private-use character.
fn go_printable(c: char) -> bool {
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
        )
        || ('\u{e000}'..='\u{f8ff}').contains(&c))
}

/// The value of a `resourceFieldRef`, rounded up to a whole number of
/// `divisor`s (pkg/api/v1/resource). `default_container` is the container of
/// an environment variable; volumes must name one.
pub(super) fn resource_value(
    inputs: &Inputs<'_>,
    selector: &ResourceFieldSelector,
    default_container: Option<&Container>,
) -> Result<String, String> {
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => containers(inputs.pod)
            .map(|(_, c)| c)
            .find(|c| c.name == name)
            .ok_or_else(|| format!("containerName {name:?} is not a container of this pod"))?,
        None => default_container.ok_or("containerName is required")?,
    };
    let divisor = match &selector.divisor {
        Some(q) => Quantity::parse(&q.0)
            .ok_or_else(|| format!("divisor {:?} is not a valid quantity", q.0))?,
        None => Quantity::ONE,
    };
    let divisor = if divisor.is_zero() {
        Quantity::ONE
    } else {
        divisor
    };
    let unsupported = || {
        format!(
            "resource {:?} is not supported; use limits.cpu, limits.memory, limits.ephemeral-storage, \
             requests.cpu, requests.memory or requests.ephemeral-storage",
            selector.resource
        )
    };
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(unsupported)?;
    let cpu = match resource {
        "cpu" => true,
        "memory" | "ephemeral-storage" => false,
        r if r.starts_with("hugepages-") => false,
        _ => return Err(unsupported()),
    };
    let amount = match kind {
        "limits" => limit(inputs, container, resource)?,
        "requests" => quantity_of(
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref()),
            resource,
        )?
        .unwrap_or(Quantity::ZERO),
        _ => return Err(unsupported()),
    };
    let scale = if cpu { 1000 } else { 1 };
    let overflow = || format!("{} is too large", selector.resource);
    let amount = amount.scaled_ceil(scale).ok_or_else(overflow)?;
    let divisor = divisor.scaled_ceil(scale).ok_or_else(overflow)?;
    ceil_div(amount, divisor)
        .map(|v| v.to_string())
        .ok_or_else(|| "divisor must not be zero".to_owned())
}

/// A container's limit, defaulted like the kubelet's
/// `defaultPodLimitsForDownwardAPI`: the pod-level limit, else the node's
/// allocatable.
fn limit(inputs: &Inputs<'_>, container: &Container, resource: &str) -> Result<Quantity, String> {
    if let Some(q) =
        quantity_of(limits(container.resources.as_ref()), resource)?.filter(|q| !q.is_zero())
    {
        return Ok(q);
    }
    let pod_level = matches!(resource, "cpu" | "memory");
    if pod_level
        && let Some(q) = quantity_of(limits(spec(inputs.pod).resources.as_ref()), resource)?
            .filter(|q| !q.is_zero())
    {
        return Ok(q);
    }
    let node = match resource {
        "cpu" => &inputs.node.allocatable_cpu,
        "memory" => &inputs.node.allocatable_memory,
        "ephemeral-storage" => {
            return Err(format!(
                "container {:?} has no ephemeral-storage limit and skylet knows no allocatable to default it to; \
                 set resources.limits.ephemeral-storage on the container",
                container.name
            ));
        }
        _ => return Ok(Quantity::ZERO),
    };
    Quantity::parse(node).ok_or_else(|| {
        format!("the node's allocatable {resource} {node:?} is not a valid quantity")
    })
}

fn limits(r: Option<&ResourceRequirements>) -> Option<&BTreeMap<String, ApiQuantity>> {
    r.and_then(|r| r.limits.as_ref())
}

fn quantity_of(
    list: Option<&BTreeMap<String, ApiQuantity>>,
    resource: &str,
) -> Result<Option<Quantity>, String> {
    match list.and_then(|l| l.get(resource)) {
        None => Ok(None),
        Some(q) => Quantity::parse(&q.0)
            .map(Some)
            .ok_or_else(|| format!("{resource} {:?} is not a valid quantity", q.0)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;
    use skylet_provider::Value;

    use super::super::fixtures::*;
    use super::*;

    #[tokio::test]
    async fn field_refs() {
        let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
        let paths = [
            ("NAME", "metadata.name"),
            ("NAMESPACE", "metadata.namespace"),
            ("UID", "metadata.uid"),
            ("APP", "metadata.labels['app']"),
            ("NO_LABEL", "metadata.labels['missing']"),
            ("NOTE", "metadata.annotations['note']"),
            ("NODE", "spec.nodeName"),
            ("SA", "spec.serviceAccountName"),
            ("HOST_IP", "status.hostIP"),
            ("HOST_IPS", "status.hostIPs"),
            ("POD_IP", "status.podIP"),
            ("POD_IPS", "status.podIPs"),
        ];
        let env_json: Vec<_> = paths
            .iter()
            .map(|(n, p)| json!({"name": n, "valueFrom": field(p)}))
            .collect();
        let mut pod = pod(json!({
            "enableServiceLinks": false,
            "nodeName": "skylet",
            "serviceAccountName": "builder",
            "containers": [{"name": "app", "env": env_json}],
        }));
        let fake = Fake::default();

        // not yet running: no pod IP
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        let expected = [
            ("NAME", "web"),
            ("NAMESPACE", "shop"),
            ("UID", "uid-1"),
            ("APP", "web"),
            ("NO_LABEL", ""),
            ("NOTE", "say \"hi\"\n"),
            ("NODE", "skylet"),
            ("SA", "builder"),
            ("HOST_IP", "10.0.0.1"),
            ("HOST_IPS", "10.0.0.1"),
            ("POD_IP", ""),
            ("POD_IPS", ""),
        ];
        assert_eq!(env(&resolved, "app"), pairs(&expected));

        // re-resolved once the backend reported addresses
        pod.status = Some(
            serde_json::from_value(
                json!({"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}]}),
            )
            .unwrap(),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        let vars = env(&resolved, "app");
        assert_eq!(vars[10], ("POD_IP".to_owned(), "10.1.2.3".to_owned()));
        assert_eq!(
            vars[11],
            ("POD_IPS".to_owned(), "10.1.2.3,fd00::3".to_owned())
        );

        let bad = env_pod(
            json!([]),
            json!([{"name": "H", "valueFrom": field("spec.hostname")}]),
        );
        let err = resolve_with(&fake, &bad).await.unwrap_err();
        assert!(!err.retriable());
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert!(
            err.to_string().starts_with(
                "spec.containers[0].env[0].valueFrom.fieldRef: fieldPath \"spec.hostname\" is not supported"
            )
        );
    }

    #[tokio::test]
    async fn resource_field_refs_round_up_and_default_to_node_allocatable() {
        fn res(
            resource: &str,
            divisor: Option<&str>,
            container: Option<&str>,
        ) -> serde_json::Value {
            json!({"resourceFieldRef": {"resource": resource, "divisor": divisor, "containerName": container}})
        }
        let pod = pod(json!({
            "enableServiceLinks": false,
            "containers": [
                {"name": "app",
                 "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "100Mi"}},
                 "env": [
                    {"name": "MEM_LIMIT_MI", "valueFrom": res("limits.memory", Some("1Mi"), None)},
                    {"name": "CPU_REQ_M", "valueFrom": res("requests.cpu", Some("1m"), None)},
                    {"name": "CPU_REQ", "valueFrom": res("requests.cpu", None, None)},
                    {"name": "CPU_LIMIT", "valueFrom": res("limits.cpu", None, None)},
                    {"name": "MEM_REQ_K", "valueFrom": res("requests.memory", Some("1k"), None)},
                    {"name": "SIDECAR_MEM_GI", "valueFrom": res("limits.memory", Some("1Gi"), Some("sidecar"))},
                    {"name": "SIDECAR_CPU_REQ", "valueFrom": res("requests.cpu", None, Some("sidecar"))},
                 ]},
                {"name": "sidecar"},
            ],
        }));
        let resolved = resolve_with(&Fake::default(), &pod).await.unwrap();
        assert_eq!(
            env(&resolved, "app"),
            pairs(&[
                ("MEM_LIMIT_MI", "1024"),
                ("CPU_REQ_M", "250"),
                ("CPU_REQ", "1"),
                ("CPU_LIMIT", "1000"),
                ("MEM_REQ_K", "104858"),
                ("SIDECAR_MEM_GI", "4096"),
                ("SIDECAR_CPU_REQ", "0"),
            ])
        );
        assert_eq!(env(&resolved, "sidecar"), pairs(&[]));

        // a pod-level limit comes before the node's allocatable
        let pod_level = serde_json::from_value::<Pod>(json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"enableServiceLinks": false, "resources": {"limits": {"cpu": "2"}},
                     "containers": [{"name": "app", "env": [
                        {"name": "CPU", "valueFrom": res("limits.cpu", None, None)}]}]},
        }))
        .unwrap();
        let resolved = resolve_with(&Fake::default(), &pod_level).await.unwrap();
        assert_eq!(env(&resolved, "app"), pairs(&[("CPU", "2")]));

        let no_limit = env_pod(
            json!([]),
            json!([{"name": "E", "valueFrom": res("limits.ephemeral-storage", None, None)}]),
        );
        let err = resolve_with(&Fake::default(), &no_limit).await.unwrap_err();
        assert!(!err.retriable());
        assert!(
            err.to_string()
                .contains("set resources.limits.ephemeral-storage"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn downward_api_volume_formats_maps_like_the_kubelet() {
        let pod = pod(json!({
            "containers": [{"name": "app", "resources": {"limits": {"cpu": "500m"}}}],
            "volumes": [{"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o600},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "cpu_limit",
                 "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}},
            ]}}],
        }));
        let resolved = resolve_with(&Fake::default(), &pod).await.unwrap();
        assert_eq!(
            resolved.pod.volumes["info"],
            [
                file("annotations", 0o600, Value::plain(r#"note="say \"hi\"\n""#)),
                file("cpu_limit", 0o644, Value::plain("500")),
                file("labels", 0o644, Value::plain("app=\"web\"\nzone=\"a\"")),
                file("name", 0o644, Value::plain("web")),
            ]
        );

        let pod = self::pod(
            json!({"containers": [{"name": "app"}], "volumes": [{"name": "info", "downwardAPI": {
            "items": [{"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}}]}}]}),
        );
        let err = resolve_with(&Fake::default(), &pod).await.unwrap_err();
        assert!(!err.retriable());
        assert_eq!(
            err.to_string(),
            "spec.volumes[0].downwardAPI.items[0].resourceFieldRef: containerName is required"
        );
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("tab\there é"), r#""tab\there é""#);
        assert_eq!(go_quote("\u{7f}\u{a0}\\"), r#""\x7f\u00a0\\""#);
    }
}
