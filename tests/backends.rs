#![allow(clippy::unwrap_used)]
//! The scenarios every backend shares (`skylet_testenv::suite`: deployment
//! and delete, logs, restart and orphans, an unsupported spec, a quota used
//! up), run here on the simulated backend (`--provider mock`, the skylet
//! binary as in tests/node.rs), whose state file shows what it runs. The
//! same list runs on ECS in tests/ecs.rs and on ACI in tests/aci.rs, each
//! through its own [`BackendUnderTest`] hooks.

use std::path::Path;

use serde_json::{Value, json};
use skylet_testenv::{
    ControlPlane, Skylet,
    k8s::{sample_sum, scrape},
    suite::{BackendUnderTest, Changes, Instance, Probing, WithQuota},
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// The simulated backend, optionally with a quota that others use most of
/// (its usage file).
struct Mock {
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
        Self { usage: None }
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
        Skylet::start(cp, Path::new(BIN), node, &args)
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("topology.kubernetes.io/region", "mock-region-1".into()),
            ("topology.kubernetes.io/zone", "mock-region-1a".into()),
        ]
    }

    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        let state = s.backend_state();
        let field = |p: &Value, k: &str| p[k].as_str().unwrap_or_default().to_owned();
        state["pods"]
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

    /// Create calls as skylet's provider metrics count them (refused ones
    /// included).
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
        pod["metadata"]["annotations"] = json!({
            skylet_mock::REJECT_ANNOTATION: "the simulated backend does not run spec.hostNetwork"
        });
        "hostNetwork"
    }
}

impl WithQuota for Mock {
    /// Capacity 100 pods, of which others use all but `pods` (unseen by
    /// skylet, as an ECS account's Fargate quota).
    async fn start_with_quota(pods: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("usage"),
            format!("pods={}", 100 - pods.min(100)),
        )
        .unwrap();
        Self { usage: Some(dir) }
    }
}

skylet_testenv::backend_suite!(Mock =>
    probes_restarts_and_previous_logs_follow_the_backend,
    deployment_runs_one_instance_per_pod_and_delete_removes_them,
    logs_plain_tail_timestamps_limit_and_follow,
    restart_adopts_and_the_sweep_removes_orphans,
    unsupported_spec_fails_the_pod_with_an_event,
    capacity_refusal_fails_owned_pods_taints_the_node_and_keeps_bare_pods_pending,
    top_and_cpu_autoscaling_follow_the_backend_load,
    active_deadline_fails_the_pod_and_stops_its_instance,
    changes_after_creation_apply_or_say_why_not,
);
