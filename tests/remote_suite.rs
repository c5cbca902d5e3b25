#![allow(clippy::unwrap_used)]
//! The shared scenarios (`skylet_testenv::suite`) on the remote-Kubernetes
//! backend: a home skylet (`--provider kubernetes`) whose pods run in a
//! second control plane, on a simulated-backend skylet that is that
//! cluster's node (so remote containers run their scripts and serve
//! `/metrics/resource`), with metrics-server in the remote cluster feeding
//! its `metrics.k8s.io`, which the home skylet reads (issue #16).
//!
//! tests/remote.rs keeps the backend's own tests (reflection, Events,
//! logs, exec, port-forward, outages, with kwok nodes).

use std::path::Path;

use kube::{
    Api,
    api::{ListParams, ResourceExt},
};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Skylet,
    k8s::{node_ready, sample_sum, scrape},
    suite::{BackendUnderTest, Changes, Instance, Probing},
    unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// A remote control plane whose one node is a simulated-backend skylet,
/// with metrics-server.
struct Remote {
    cp: ControlPlane,
    /// Keeps the remote node running.
    _node: Skylet,
}

impl BackendUnderTest for Remote {
    const PROVIDER: &'static str = "kubernetes";
    const SHORT: &'static str = "rmt";
    // the remote cluster's scheduler and kubelet decide: nothing is refused
    // before a call
    const CHECKS_SPEC_BEFORE_CALLING: bool = false;
    // passed on to the remote pod; its node (a simulated backend) restarts
    // containers and runs ephemeral ones, and answers resizes Infeasible
    const CHANGES: Changes = Changes {
        image: true,
        ephemeral: true,
        resize: true,
    };

    async fn start() -> Self {
        let cp = ControlPlane::start(&unique_name("remote")).unwrap();
        let node = Skylet::start(&cp, Path::new(BIN), "remote-vn", &["--no-taint"]);
        node_ready(&cp.client().await.unwrap(), "remote-vn").await;
        cp.ensure_metrics_server().unwrap();
        Self { cp, _node: node }
    }

    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        let kubeconfig = self.cp.kubeconfig.display().to_string();
        let mut args = vec![
            "--provider",
            "kubernetes",
            "--remote-kubeconfig",
            kubeconfig.as_str(),
            "--cluster-id",
            "home",
        ];
        args.extend_from_slice(extra);
        Skylet::start(cp, Path::new(BIN), node, &args)
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        let client = self.cp.client().await.unwrap();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client);
        let lp = ListParams::default().labels(&format!("skylet.io/node={}", s.node));
        pods.list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let label = |k: &str| p.labels().get(k).cloned().unwrap_or_default();
                Instance {
                    uid: label("skylet.io/origin-uid"),
                    namespace: label("skylet.io/origin-namespace"),
                    name: label("skylet.io/origin-name"),
                    ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                }
            })
            .collect()
    }

    async fn creates(&self, s: &Skylet) -> u64 {
        sample_sum(
            &scrape(s),
            &[
                "skylet_backend_api_calls_total",
                "operation=\"createCoreV1NamespacedPod\"",
            ],
        ) as u64
    }

    async fn remote_pod(
        &self,
        s: &Skylet,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Option<k8s_openapi::api::core::v1::Pod> {
        let client = self.cp.client().await.ok()?;
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client);
        let uid = pod.metadata.uid.clone()?;
        let lp = ListParams::default().labels(&format!(
            "skylet.io/node={},skylet.io/origin-uid={uid}",
            s.node
        ));
        pods.list(&lp).await.ok()?.items.into_iter().next()
    }

    // the remote kubelet (a simulated-backend skylet here) runs the probes
    // and restarts; its Events reach the home pod
    const PROBING: Probing = Probing {
        readiness: true,
        restarts: true,
        previous_logs: true,
    };

    fn probe_not_run(&self) -> Option<(serde_json::Value, &'static str)> {
        Some((
            json!({"startupProbe": {"httpGet": {"port": 8080}}}),
            "startupProbe.httpGet",
        ))
    }

    fn make_unsupported(&self, pod: &mut serde_json::Value) -> &'static str {
        // the remote cluster runs anything its nodes can; the simulated
        // node refuses what the annotation says
        pod["metadata"]["annotations"] =
            json!({skylet_mock::REJECT_ANNOTATION: "hostNetwork is not run here"});
        "hostNetwork"
    }
}

skylet_testenv::backend_suite!(Remote =>
    probes_restarts_and_previous_logs_follow_the_backend,
    top_and_cpu_autoscaling_follow_the_backend_load,
    active_deadline_fails_the_pod_and_stops_its_instance,
    changes_after_creation_apply_or_say_why_not,
);
