#![allow(clippy::unwrap_used)]
//! The fault suite (issue #15): skylet against APIs that fail, with the
//! figures printed on stderr (`--nocapture`).
//!
//! - ECS on moto, ACI on the emulator and a remote cluster, each behind a
//!   fault-injecting proxy (`skylet_testenv::proxy`) that answers 30% of
//!   the requests with the API's own throttling, 500 and 503 (and ARM's
//!   409), delays them, resets connections or loses answers: 100 pods
//!   Running, each created once, calls per pod bounded, `Retry-After`
//!   honoured, then deleted with nothing left
//!   (`skylet_testenv::faults::backend_under_faults`).
//! - The home apiserver, on a control plane of this test's own: API
//!   Priority and Fairness rejecting skylet's user with 429, then
//!   kube-apiserver and etcd each stopped mid-burst and started again.

use std::{path::Path, time::Duration};

use skylet_testenv::{
    ControlPlane,
    backends::{Aci, Ecs, Remote},
    faults::{FaultPlan, apf_rejects_skylet, backend_under_faults, home_restart_mid_burst},
    suite::BackendUnderTest,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// Calls per pod skylet may make under 30% faults, burst and delete
/// together (a create, its retries, the status reads and the sweep's
/// share): a bound that catches a retry storm, not a tight budget.
const MAX_REQUESTS_PER_POD: f64 = 20.0;

fn bounded(r: &skylet_testenv::faults::FaultReport) {
    let per_pod = r.api_end.requests / r.pods as f64;
    assert!(
        per_pod <= MAX_REQUESTS_PER_POD,
        "{per_pod:.1} requests per pod"
    );
    assert!(r.proxy_end.faults() > 0, "faults were injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ecs_pods_run_once_under_30_percent_faults() {
    let r = backend_under_faults(&Ecs::start().await, &FaultPlan::ci(1511)).await;
    bounded(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_pods_run_once_under_30_percent_faults() {
    let r = backend_under_faults(&Aci::start().await, &FaultPlan::ci(1512)).await;
    bounded(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_cluster_pods_run_once_under_30_percent_faults() {
    let r = backend_under_faults(&Remote::start().await, &FaultPlan::ci(1513)).await;
    bounded(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn home_apiserver_rejections_and_restarts_lose_nothing() {
    let cp = ControlPlane::start("home-faults").unwrap();
    let bin = Path::new(BIN);
    apf_rejects_skylet(&cp, bin, 200).await;
    home_restart_mid_burst(
        &cp,
        bin,
        "kube-apiserver",
        200,
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .await;
    home_restart_mid_burst(
        &cp,
        bin,
        "etcd",
        200,
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .await;
}
