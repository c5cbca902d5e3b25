//! Fixtures of the translation tests: pods from JSON specs, the node's
//! settings, and helpers to read a refusal.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skylet_provider::{ProviderError, ResolvedPod, Value, VolumeFile};

use super::{Settings, container_group};
use crate::models::ContainerGroup;

/// The settings of node `burst-1` in `westeurope`.
pub(super) fn settings() -> Settings {
    Settings {
        node: "burst-1".into(),
        location: "westeurope".into(),
        ..Settings::default()
    }
}

/// A pod fixture: `spec` in a pod named `name` with `annotations`.
pub(super) fn pod_with(
    name: &str,
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> ResolvedPod {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "annotations": annotations},
        "spec": spec,
    }))
    .unwrap();
    ResolvedPod::bare(p)
}

/// A pod `p` of `spec`.
pub(super) fn pod(spec: serde_json::Value) -> ResolvedPod {
    pod_with("p", json!({}), spec)
}

/// A pod `p` of the one container `c`.
pub(super) fn one(c: serde_json::Value) -> ResolvedPod {
    pod(json!({"containers": [c]}))
}

/// The group of `rp` on [`settings`], which must translate.
pub(super) fn group(rp: &ResolvedPod) -> ContainerGroup {
    container_group(rp, &settings()).unwrap()
}

/// A resolved file of a volume.
pub(super) fn file(path: &str, value: Value) -> VolumeFile {
    VolumeFile {
        path: path.into(),
        mode: 0o644,
        value,
    }
}

/// Base64 of `s`, as secret volumes hold files.
pub(super) fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The reason and message of an InvalidPod error.
pub(super) fn refusal(r: Result<ContainerGroup, ProviderError>) -> (String, String) {
    match r {
        Err(ProviderError::InvalidPod { reason, message }) => (reason, message),
        other => panic!("expected InvalidPod, got {other:?}"),
    }
}
