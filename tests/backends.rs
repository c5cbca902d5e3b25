//! The scenarios every backend shares (`skylet_testenv::suite`: deployment
//! and delete, logs, restart and orphans, an unsupported spec, a quota used
//! up), run here on the simulated backend (`--provider mock`, the skylet
//! binary as in tests/node.rs), whose state file shows what it runs, through
//! its hooks in `skylet_testenv::backends` (the crash and fault suites use
//! the same). The same list runs on ECS in tests/ecs.rs and on ACI in
//! tests/aci.rs.

use skylet_testenv::backends::Mock;

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
