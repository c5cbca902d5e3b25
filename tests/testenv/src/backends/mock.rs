//! The simulated backend: its state file (which survives a kill -9, as a
//! cloud's state would) is what it holds.

use serde_json::{Value, json};

use super::skylet_bin;
use crate::{
    ControlPlane, Skylet,
    k8s::{sample_sum, scrape},
    suite::{BackendUnderTest, Changes, Instance, Probing, WithQuota},
};

/// The simulated backend (`--provider mock`), optionally with a quota that
/// others use most of (its usage file, [`WithQuota`]).
#[derive(Debug, Default)]
pub struct Mock {
    usage: Option<tempfile::TempDir>,
}

impl BackendUnderTest for Mock {
    const PROVIDER: &'static str = "mock";
    const SHORT: &'static str = "mock";
    // it has no API: its refusal is the create call itself
    const CHECKS_SPEC_BEFORE_CALLING: bool = false;
    // it restarts a container with a new image and runs ephemeral
    // containers; it cannot resize
    const CHANGES: Changes = Changes {
        image: true,
        ephemeral: true,
        resize: false,
    };

    async fn start() -> Self {
        Self::default()
    }

    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        let usage = self
            .usage
            .as_ref()
            .map(|d| d.path().join("usage").display().to_string());
        let mut args: Vec<&str> = Vec::new();
        if let Some(usage) = &usage {
            args.extend([
                "--mock-capacity",
                "cpu=100,memory=400Gi,pods=100",
                "--mock-usage-file",
                usage,
            ]);
        }
        args.extend_from_slice(extra);
        Skylet::start(cp, &skylet_bin(), node, &args)
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("topology.kubernetes.io/region", "mock-region-1".into()),
            ("topology.kubernetes.io/zone", "mock-region-1a".into()),
        ]
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

    /// Create calls as skylet's provider metrics count them (this process,
    /// refused ones included).
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

    const PROBING: Probing = Probing {
        readiness: true,
        restarts: true,
        previous_logs: true,
    };

    fn probe_not_run(&self) -> Option<(Value, &'static str)> {
        Some((
            json!({"startupProbe": {"httpGet": {"port": 8080}}}),
            "startupProbe.httpGet",
        ))
    }

    fn make_unsupported(&self, pod: &mut Value) -> &'static str {
        pod["spec"]["hostNetwork"] = json!(true);
        // skylet_mock::REJECT_ANNOTATION (not a dependency of this crate)
        pod["metadata"]["annotations"] = json!({
            "mock.skylet.io/reject": "the simulated backend does not run spec.hostNetwork"
        });
        "hostNetwork"
    }
}

impl WithQuota for Mock {
    /// Capacity 100 pods, of which others use all but `pods` (unseen by
    /// skylet, as an ECS account's Fargate quota).
    ///
    /// # Panics
    /// If the usage file cannot be written.
    async fn start_with_quota(pods: u32) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(
            dir.path().join("usage"),
            format!("pods={}", 100 - pods.min(100)),
        )
        .expect("the usage file");
        Self { usage: Some(dir) }
    }
}
