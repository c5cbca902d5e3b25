//! Test fixtures: an in-memory API server ([`Fake`]) and pod builders.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::{
    authentication::v1::TokenRequestStatus,
    core::v1::{ConfigMap, Pod, Secret, Service},
};
use k8s_openapi::{ByteString, apimachinery::pkg::apis::meta::v1::Time};
use serde_json::json;
use skylet_provider::{PodRef, Value, VolumeFile};

use super::{Error, NodeInfo, Resolved, Source, resolve};

/// When the fake API server issues every token.
pub(super) const ISSUED: i64 = 1_700_000_000;

/// An in-memory API server: objects from JSON, calls recorded.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) config_maps: Vec<ConfigMap>,
    pub(super) secrets: Vec<Secret>,
    pub(super) services: Vec<Service>,
    pub(super) forbid_secrets: bool,
    pub(super) calls: Mutex<Vec<String>>,
}

impl Fake {
    /// Objects by `kind`; a Secret's `stringData` becomes `data`, as the
    /// API server does.
    pub(super) fn new(objects: serde_json::Value) -> Self {
        let mut fake = Self::default();
        for object in objects.as_array().unwrap() {
            match object["kind"].as_str().unwrap() {
                "ConfigMap" => fake
                    .config_maps
                    .push(serde_json::from_value(object.clone()).unwrap()),
                "Service" => fake
                    .services
                    .push(serde_json::from_value(object.clone()).unwrap()),
                "Secret" => {
                    let mut secret: Secret = serde_json::from_value(object.clone()).unwrap();
                    for (k, v) in secret.string_data.take().unwrap_or_default() {
                        secret
                            .data
                            .get_or_insert_default()
                            .insert(k, ByteString(v.into_bytes()));
                    }
                    fake.secrets.push(secret);
                }
                other => panic!("unexpected kind {other}"),
            }
        }
        fake
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

fn find<K: kube::Resource + Clone>(objects: &[K], ns: &str, name: &str) -> Option<K> {
    objects
        .iter()
        .find(|o| {
            o.meta().namespace.as_deref() == Some(ns) && o.meta().name.as_deref() == Some(name)
        })
        .cloned()
}

impl Source for Fake {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        self.record(format!("configmap {ns}/{name}"));
        Ok(find(&self.config_maps, ns, name))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        self.record(format!("secret {ns}/{name}"));
        if self.forbid_secrets {
            let status = kube::core::Status::failure(
                &format!("secrets \"{name}\" is forbidden"),
                "Forbidden",
            );
            return Err(kube::Error::Api(status.with_code(403).boxed()));
        }
        Ok(find(&self.secrets, ns, name))
    }

    fn services(&self, ns: &str) -> Vec<Service> {
        self.services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .cloned()
            .collect()
    }

    async fn token(
        &self,
        ns: &str,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
        pod: &PodRef,
    ) -> Result<TokenRequestStatus, kube::Error> {
        self.record(format!(
            "token {ns}/{service_account} {audience:?} {expiration_seconds} {}",
            pod.uid
        ));
        Ok(TokenRequestStatus {
            token: Some(format!(
                "token:{service_account}:{}",
                audience.unwrap_or("api")
            )),
            expiration_timestamp: Some(Time(
                Timestamp::from_second(ISSUED + expiration_seconds).unwrap(),
            )),
        })
    }
}

pub(super) fn node() -> NodeInfo {
    NodeInfo {
        name: "skylet".into(),
        ip: "10.0.0.1".into(),
        allocatable_cpu: "1000".into(),
        allocatable_memory: "4Ti".into(),
        csi_secret_attributes: &[],
    }
}

/// Pod `shop/web` with `spec`.
pub(super) fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web", "namespace": "shop", "uid": "uid-1",
            "labels": {"zone": "a", "app": "web"},
            "annotations": {"note": "say \"hi\"\n"},
        },
        "spec": spec,
    }))
    .unwrap()
}

/// A pod with one container `app` and these env entries.
pub(super) fn env_pod(env_from: serde_json::Value, env: serde_json::Value) -> Pod {
    pod(json!({
        "enableServiceLinks": false,
        "containers": [{"name": "app", "image": "app", "envFrom": env_from, "env": env}],
    }))
}

pub(super) fn env(resolved: &Resolved, container: &str) -> Vec<(String, String)> {
    resolved.pod.env[container]
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().into_owned()))
        .collect()
}

pub(super) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn secret_flag(resolved: &Resolved, container: &str, name: &str) -> bool {
    resolved.pod.env[container]
        .iter()
        .find(|(k, _)| k == name)
        .unwrap()
        .1
        .secret
}

pub(super) async fn resolve_with(fake: &Fake, pod: &Pod) -> Result<Resolved, Error> {
    resolve(fake, &node(), pod).await
}

pub(super) fn file(path: &str, mode: u32, value: Value) -> VolumeFile {
    VolumeFile {
        path: path.into(),
        mode,
        value,
    }
}
