#![allow(clippy::unwrap_used)]
//! The crash suite (issue #15): on every backend, a 200-pod burst and a
//! 200-pod delete with skylet killed -9 at seeded random moments (5 kills
//! in each, every restart a fresh process on the same backend state), then
//! no duplicate instance, no pod lost, no orphan after one sweep
//! (`skylet_testenv::crash::burst_and_delete`); and with two replicas under
//! leader election, the leader killed mid-burst three times, the standby
//! finishing it with every pod created once
//! (`skylet_testenv::crash::leader_killed_mid_burst`).
//!
//! Set `SKYLET_CRASH_SEED` to replay a run's kill moments; the reports
//! (printed on stderr, `--nocapture`) say when each kill hit and how many
//! pods were Running then. `hack/soak` runs longer variants.

use std::path::Path;

use skylet_testenv::{
    backends::{Aci, Ecs, Mock, Remote},
    crash::{HaPlan, Plan, burst_and_delete, leader_killed_mid_burst},
    suite::BackendUnderTest,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mock_survives_kill_9_in_a_burst_and_a_delete() {
    let plan = Plan::ci(Plan::seed_or(1501));
    burst_and_delete(&Mock::start().await, &plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ecs_survives_kill_9_in_a_burst_and_a_delete() {
    let plan = Plan::ci(Plan::seed_or(1502));
    burst_and_delete(&Ecs::start().await, &plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_survives_kill_9_in_a_burst_and_a_delete() {
    let plan = Plan::ci(Plan::seed_or(1503));
    burst_and_delete(&Aci::start().await, &plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_cluster_survives_kill_9_in_a_burst_and_a_delete() {
    let plan = Plan::ci(Plan::seed_or(1504));
    burst_and_delete(&Remote::start().await, &plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standby_finishes_the_burst_when_the_leader_is_killed() {
    let plan = HaPlan {
        pods: 200,
        kills: 3,
        // lease 6 s, renew deadline 4 s, retry 1 s: take-overs in CI time
        timings: (6, 4, 1),
        seed: Plan::seed_or(1505),
    };
    leader_killed_mid_burst(Path::new(BIN), &plan).await;
}
