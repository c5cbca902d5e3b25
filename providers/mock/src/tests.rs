//! The simulated backend end to end: creates, the quota, programs in
//! `Provider::run`, logs.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use serde_json::json;
use skylet_provider::{
    BackendEvent, BackendPod, CancellationToken, LogOptions, PodRef, Provider, ProviderError,
    ResolvedPod, Sink, SinkReceiver, testing::pod,
};

use crate::{Config, MockProvider};

fn provider() -> (MockProvider, SinkReceiver) {
    let (sink, rx) = Sink::channel();
    (MockProvider::new(Config::default(), sink), rx)
}

/// The next status the backend pushed with this phase.
async fn phase(rx: &mut SinkReceiver, want: &str) -> BackendPod {
    let wait = async {
        loop {
            match rx.recv().await {
                Some(BackendEvent::Status(bp)) if bp.status.phase.as_deref() == Some(want) => {
                    return *bp;
                }
                Some(_) => {}
                None => panic!("the sink closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no status with phase {want}"))
}

async fn log(p: &MockProvider, pod: &PodRef, opts: LogOptions) -> String {
    let chunks: Vec<Bytes> = p
        .logs(pod, "main", opts)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

#[tokio::test]
async fn a_plain_pod_is_running_when_create_returns_without_run() {
    let (p, mut rx) = provider();
    let rp = pod("ns", "web").container("main", "nginx").resolved();
    p.create_pod(&rp).await.unwrap();
    let bp = phase(&mut rx, "Running").await;
    assert_eq!(bp.pod, rp.pod_ref());
    assert_eq!(p.list_pods().await.unwrap().len(), 1);
    p.create_pod(&rp).await.unwrap();
    assert_eq!(
        p.list_pods().await.unwrap().len(),
        1,
        "create is idempotent"
    );
}

#[tokio::test]
async fn the_quota_others_use_refuses_creates_for_lack_of_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage");
    let mut config = Config::default();
    config.capacity.insert("pods".into(), "3".into());
    config.usage_file = Some(usage.clone());
    let p = MockProvider::new(config, Sink::discard());
    let allocatable = |p: &MockProvider| {
        let mut n = Node::default();
        p.configure_node(&mut n);
        n.status.unwrap().allocatable.unwrap()["pods"].0.clone()
    };
    assert_eq!(allocatable(&p), "3");
    std::fs::write(&usage, "pods=1").unwrap();
    assert_eq!(allocatable(&p), "3", "others' use is not visible");
    for name in ["a", "b"] {
        p.create_pod(&pod("ns", name).container("main", "i").resolved())
            .await
            .unwrap();
    }
    let third = pod("ns", "c").container("main", "i").resolved();
    let err = p.create_pod(&third).await.unwrap_err();
    assert!(matches!(err, ProviderError::Capacity(_)), "{err:?}");
    std::fs::remove_file(&usage).unwrap();
    p.create_pod(&third).await.unwrap();
}

/// Creates pod `name` in `ns` whose container `main` runs `sh -c script`.
async fn create_script(p: &MockProvider, name: &str, script: &str) -> ResolvedPod {
    let rp = pod("ns", name)
        .container_json(json!({"name": "main", "image": "busybox",
            "command": ["sh", "-c", script]}))
        .resolved();
    p.create_pod(&rp).await.unwrap();
    rp
}

#[tokio::test]
async fn scripts_run_in_run_and_stop_with_it() {
    let (p, mut rx) = provider();
    let rp = create_script(&p, "job", "echo one; echo two; exit 3").await;
    phase(&mut rx, "Pending").await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (p, shutdown) = (p.clone(), shutdown.clone());
        async move { p.run(shutdown).await }
    });
    let bp = phase(&mut rx, "Failed").await;
    let exit = bp.status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap()
        .exit_code;
    assert_eq!(exit, 3);
    let job = rp.pod_ref();
    assert_eq!(log(&p, &job, LogOptions::default()).await, "one\ntwo\n");
    let opts = LogOptions {
        limit_bytes: Some(6),
        ..LogOptions::default()
    };
    assert_eq!(log(&p, &job, opts).await, "one\ntw");
    let opts = LogOptions {
        timestamps: true,
        tail_lines: Some(1),
        ..LogOptions::default()
    };
    let last = log(&p, &job, opts).await;
    let (ts, line) = last.split_once(' ').unwrap();
    assert_eq!(line, "two\n");
    assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");

    // a long-running script stops when run() does
    create_script(&p, "ticker", "log-every 0.01 tick").await;
    phase(&mut rx, "Running").await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
}
