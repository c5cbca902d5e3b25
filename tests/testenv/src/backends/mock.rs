//! The simulated backend: its state file (which survives a kill -9, as a
//! cloud's state would) is what it holds.

use serde_json::{Value, json};

use super::skylet_bin;
use crate::{
    ControlPlane, Skylet,
    k8s::{sample_sum, scrape},
    suite::{BackendUnderTest, Instance},
};

/// The simulated backend (`--provider mock`).
#[derive(Debug, Default)]
pub struct Mock;

impl BackendUnderTest for Mock {
    const PROVIDER: &'static str = "mock";
    const SHORT: &'static str = "mock";
    const CHECKS_SPEC_BEFORE_CALLING: bool = false;

    async fn start() -> Self {
        Self
    }

    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        Skylet::start(cp, &skylet_bin(), node, extra)
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        vec![("topology.kubernetes.io/region", "mock-region-1".into())]
    }

    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        let field = |p: &Value, k: &str| p[k].as_str().unwrap_or_default().to_owned();
        s.backend_state()["pods"]
            .as_array()
            .map(|pods| {
                pods.iter()
                    .map(|p| Instance {
                        uid: field(p, "uid"),
                        namespace: field(p, "namespace"),
                        name: field(p, "name"),
                        ip: p["ip"].as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Create calls as skylet's provider metrics count them (this process).
    async fn creates(&self, s: &Skylet) -> u64 {
        let calls = sample_sum(
            &scrape(s),
            &[
                "skylet_provider_call_duration_seconds_count",
                "op=\"create\"",
            ],
        );
        calls as u64
    }

    fn make_unsupported(&self, pod: &mut Value) -> &'static str {
        pod["spec"]["hostNetwork"] = json!(true);
        pod["metadata"]["annotations"] = json!({
            "mock.skylet.io/reject": "the simulated backend does not run spec.hostNetwork"
        });
        "hostNetwork"
    }
}
