//! Another Kubernetes cluster: a control plane of its own (`hack/cluster`)
//! whose two nodes kwok v0.8.0 simulates ([`crate::kwok`]: pods there go
//! Running at once, and go away when deleted; they must tolerate
//! [`crate::kwok::TAINT`]), and the remote pods of the node, told apart by
//! their `skylet.io/origin-uid` label.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use serde_json::json;

use super::skylet_bin;
use crate::{
    ControlPlane, Skylet,
    kwok::{Kwok, kwok_nodes},
    proxy::{self, FaultProxy, Faults, Upstream},
    suite::{BackendUnderTest, BehindProxy, Instance},
};

/// A remote cluster with kwok nodes (torn down on drop).
pub struct Remote {
    _kwok: Kwok,
    cp: ControlPlane,
    client: Client,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("cluster", &self.cp.name)
            .finish_non_exhaustive()
    }
}

/// Starts skylet on `cp` as node `node` with the remote-Kubernetes backend
/// driving the cluster of `kubeconfig` (cluster id `home`), plus `extra`
/// flags.
pub fn start_skylet(cp: &ControlPlane, node: &str, kubeconfig: &Path, extra: &[&str]) -> Skylet {
    let kc = kubeconfig.display().to_string();
    let mut args = vec![
        "--provider",
        "kubernetes",
        "--remote-kubeconfig",
        &kc,
        "--cluster-id",
        "home",
    ];
    args.extend_from_slice(extra);
    Skylet::start(cp, &skylet_bin(), node, &args)
}

impl Remote {
    /// The remote control plane.
    pub fn cluster(&self) -> &ControlPlane {
        &self.cp
    }

    async fn remote_pods(&self, node: &str) -> Vec<Pod> {
        Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().labels(&format!("skylet.io/node={node}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }
}

fn instance(p: &Pod) -> Instance {
    let label = |k: &str| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k).cloned())
            .unwrap_or_default()
    };
    Instance {
        uid: label("skylet.io/origin-uid"),
        namespace: label("skylet.io/origin-namespace"),
        name: label("skylet.io/origin-name"),
        ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
    }
}

impl BackendUnderTest for Remote {
    const PROVIDER: &'static str = "kubernetes";
    const SHORT: &'static str = "kube";

    async fn start() -> Self {
        let cp = ControlPlane::start("remote").expect("a remote control plane");
        let client = cp.client().await.expect("a client of the remote cluster");
        let kwok = kwok_nodes(&cp, &[]).await;
        crate::k8s::node_ready(&client, "kwok-0").await;
        crate::k8s::node_ready(&client, "kwok-1").await;
        Self {
            _kwok: kwok,
            cp,
            client,
        }
    }

    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        start_skylet(cp, node, &self.cp.kubeconfig, extra)
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Remote pods of the node not being deleted.
    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        self.remote_pods(&s.node)
            .await
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(instance)
            .collect()
    }

    /// Every remote pod of the node, terminating ones included.
    async fn instances_ever(&self, s: &Skylet) -> Vec<Instance> {
        self.remote_pods(&s.node)
            .await
            .iter()
            .map(instance)
            .collect()
    }

    async fn creates(&self, s: &Skylet) -> u64 {
        let calls = crate::k8s::sample_sum(
            &crate::k8s::scrape(s),
            &[
                "skylet_backend_api_calls_total",
                "service=\"kubernetes\"",
                "operation=\"createCoreV1NamespacedPod\"",
            ],
        );
        calls as u64
    }

    fn make_unsupported(&self, pod: &mut serde_json::Value) -> &'static str {
        pod["spec"]["hostNetwork"] = json!(true);
        "hostNetwork"
    }
}

impl BehindProxy for Remote {
    const API: proxy::Api = proxy::Api::Kubernetes;

    fn proxy(&self, faults: Faults) -> FaultProxy {
        let upstream =
            Upstream::from_kubeconfig(&self.cp.kubeconfig).expect("the remote apiserver");
        FaultProxy::start(proxy::Api::Kubernetes, upstream, true, None, faults)
            .expect("a fault proxy")
    }

    fn skylet_through(
        &self,
        cp: &ControlPlane,
        node: &str,
        proxy: &FaultProxy,
        extra: &[&str],
    ) -> Skylet {
        let kc = proxy
            .kubeconfig(&self.cp.kubeconfig, &format!("proxy-{node}"))
            .expect("a kubeconfig through the proxy");
        start_skylet(cp, node, &kc, extra)
    }
}
