//! Fixtures for tests of the core and of backends (feature `testing`):
//! a pod builder, after controller-rs's `fixtures.rs`.
//!
//! ```
//! use skylet_provider::testing::pod;
//! let p = pod("shop", "web").container("web", "nginx").label("app", "web").build();
//! assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
//! ```

use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
};
use serde_json::{Value as Json, json};

use crate::ResolvedPod;

/// A pod under construction.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    pod: Json,
}

/// A pod `namespace/name` with UID `uid-<name>` and an empty spec.
pub fn pod(namespace: &str, name: &str) -> PodBuilder {
    PodBuilder {
        pod: json!({
            "metadata": {"namespace": namespace, "name": name, "uid": format!("uid-{name}")},
            "spec": {"containers": []},
        }),
    }
}

impl PodBuilder {
    /// Sets the UID.
    pub fn uid(mut self, uid: &str) -> Self {
        self.pod["metadata"]["uid"] = json!(uid);
        self
    }

    /// Adds a container with this name and image.
    pub fn container(self, name: &str, image: &str) -> Self {
        self.container_json(json!({"name": name, "image": image}))
    }

    /// Adds a container given as JSON (`{"name": .., "image": .., ...}`).
    pub fn container_json(mut self, container: Json) -> Self {
        if let Some(cs) = self.pod["spec"]["containers"].as_array_mut() {
            cs.push(container);
        }
        self
    }

    /// Merges `fields` into the spec (top-level keys replace).
    pub fn spec(mut self, fields: Json) -> Self {
        if let (Some(spec), Some(fields)) = (self.pod["spec"].as_object_mut(), fields.as_object()) {
            for (k, v) in fields {
                spec.insert(k.clone(), v.clone());
            }
        }
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod["metadata"]["labels"][key] = json!(value);
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// Binds it to `node` (`spec.nodeName`).
    pub fn node(mut self, node: &str) -> Self {
        self.pod["spec"]["nodeName"] = json!(node);
        self
    }

    /// Sets the phase in its status.
    pub fn phase(mut self, phase: &str) -> Self {
        self.pod["status"]["phase"] = json!(phase);
        self
    }

    /// Marks it deleted (a deletion timestamp) with this grace period.
    pub fn deleting(mut self, grace_seconds: i64) -> Self {
        let now = Time(jiff::Timestamp::now());
        self.pod["metadata"]["deletionTimestamp"] = json!(now);
        self.pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace_seconds);
        self
    }

    /// Adds a controller owner reference (`ReplicaSet`, `DaemonSet`, ...).
    pub fn owned_by(mut self, kind: &str, name: &str) -> Self {
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let refs = &mut self.pod["metadata"]["ownerReferences"];
        if refs.is_null() {
            *refs = json!([]);
        }
        if let Some(a) = refs.as_array_mut() {
            a.push(json!(owner));
        }
        self
    }

    /// The pod.
    ///
    /// # Panics
    /// If the JSON given to the builder is not a valid pod (a test bug).
    pub fn build(self) -> Pod {
        #[allow(clippy::expect_used)] // fixtures: a bad one is a test bug
        serde_json::from_value(self.pod).expect("the builder's JSON is a valid Pod")
    }

    /// The pod with nothing resolved, as a backend receives it.
    pub fn resolved(self) -> ResolvedPod {
        ResolvedPod::bare(self.build())
    }
}
