//! `GET /pods` and `GET /runningpods/`: the pods bound to this node.

use std::sync::Arc;

use axum::{Json, extract::State as AxState};
use k8s_openapi::{
    api::core::v1::{Pod, PodSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::{Value, json};
use skylet_provider::Provider;

use super::State;

fn list(items: Vec<Pod>) -> Json<Value> {
    Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}))
}

pub(crate) async fn pods<P: Provider>(AxState(state): AxState<Arc<State<P>>>) -> Json<Value> {
    let mut items: Vec<Pod> = state
        .pods
        .state()
        .iter()
        .map(|p| (*p.pod()).clone())
        .collect();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    list(items)
}

/// Running pods in the kubelet's reduced form: identity and containers.
pub(crate) async fn running<P: Provider>(AxState(state): AxState<Arc<State<P>>>) -> Json<Value> {
    let mut items: Vec<Pod> = state
        .pods
        .state()
        .iter()
        .filter(|p| p.phase() == Some("Running"))
        .map(|p| p.pod())
        .map(|p| Pod {
            metadata: ObjectMeta {
                name: p.metadata.name.clone(),
                namespace: p.metadata.namespace.clone(),
                uid: p.metadata.uid.clone(),
                ..Default::default()
            },
            spec: p.spec.as_ref().map(|s| PodSpec {
                containers: s.containers.clone(),
                ..Default::default()
            }),
            status: None,
        })
        .collect();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    list(items)
}
