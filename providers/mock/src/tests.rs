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

/// Creates pod `name` in `ns` whose container `main` runs `sh -c script`
/// once (restartPolicy Never).
async fn create_script(p: &MockProvider, name: &str, script: &str) -> ResolvedPod {
    let rp = pod("ns", name)
        .spec(json!({"restartPolicy": "Never"}))
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

/// The next status of `main` the backend pushed that `want` accepts, and
/// the Events it pushed meanwhile.
async fn main_status(
    rx: &mut SinkReceiver,
    want: impl Fn(&k8s_openapi::api::core::v1::ContainerStatus) -> bool,
) -> (k8s_openapi::api::core::v1::ContainerStatus, Vec<String>) {
    let mut events = Vec::new();
    let wait = async {
        loop {
            match rx.recv().await {
                Some(BackendEvent::Status(bp)) => {
                    if let Some(c) = bp.status.container_statuses.into_iter().flatten().next()
                        && want(&c)
                    {
                        return c;
                    }
                }
                Some(BackendEvent::Event(e)) => events.push(format!("{}: {}", e.reason, e.note)),
                Some(_) => {}
                None => panic!("the sink closed"),
            }
        }
    };
    let c = tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .unwrap_or_else(|_| panic!("no such status; events: {events:?}"));
    (c, events)
}

#[tokio::test]
async fn restarts_keep_the_previous_log_and_probes_set_readiness() {
    let (p, mut rx) = provider();
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let (p, shutdown) = (p.clone(), shutdown.clone());
        async move { p.run(shutdown).await }
    });
    // restartPolicy Always (the default): exit 3, a back-off, a restart
    let crash = pod("ns", "crash")
        .container_json(json!({"name": "main", "image": "busybox",
            "command": ["sh", "-c", "echo run; sleep 2; exit 3"],
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}))
        .resolved();
    p.create_pod(&crash).await.unwrap();
    let (c, _) = main_status(&mut rx, |c| c.ready).await;
    assert_eq!(c.restart_count, 0);
    let (c, _) = main_status(&mut rx, |c| {
        c.state.as_ref().is_some_and(|s| s.waiting.is_some())
    })
    .await;
    let waiting = c.state.unwrap().waiting.unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert!(!c.ready);
    let (c, _) = main_status(&mut rx, |c| c.restart_count == 1 && c.ready).await;
    let last = c.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    let previous = LogOptions {
        previous: true,
        ..LogOptions::default()
    };
    assert_eq!(log(&p, &crash.pod_ref(), previous.clone()).await, "run\n");
    assert_eq!(
        log(&p, &crash.pod_ref(), LogOptions::default()).await,
        "run\n"
    );
    let listed = p.list_pods().await.unwrap();
    assert_eq!(
        listed[0].status.phase.as_deref(),
        Some("Running"),
        "restarting, not ended"
    );

    // a failing readiness probe: Running, not ready, one Warning Event;
    // a failing liveness probe: killed (137) and restarted
    p.delete_pod(&crash.pod_ref(), Duration::ZERO)
        .await
        .unwrap();
    let sick = pod("ns", "sick")
        .container_json(json!({"name": "main", "image": "busybox",
            "readinessProbe": {"exec": {"command": ["cat", "/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
            "livenessProbe": {"exec": {"command": ["false"]}, "initialDelaySeconds": 5, "periodSeconds": 1,
                              "failureThreshold": 2},
            "startupProbe": {"httpGet": {"port": 80}}}))
        .resolved();
    p.create_pod(&sick).await.unwrap();
    let (c, events) = main_status(&mut rx, |c| c.restart_count == 1).await;
    let last = c.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 137);
    let joined = events.join("\n");
    assert!(
        joined.contains("ProbeNotSupported: startupProbe.httpGet of container main is not run"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "Unhealthy: Readiness probe failed: command [\"cat\", \"/ready\"] exited with 1"
        ),
        "{joined}"
    );
    assert!(
        joined.contains("Unhealthy: Liveness probe failed"),
        "{joined}"
    );
    assert!(
        joined.contains("Killing: Container main failed liveness probe, will be restarted"),
        "{joined}"
    );
    assert_eq!(
        joined.matches("Readiness probe failed").count(),
        1,
        "once while it keeps failing: {joined}"
    );
    let err = p
        .logs(&crash.pod_ref(), "main", previous)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn the_listing_in_pages_holds_every_pod_once() {
    let (p, _rx) = provider();
    for i in 0..1201 {
        let rp = pod("ns", &format!("p{i}"))
            .container("main", "nginx")
            .resolved();
        p.create_pod(&rp).await.unwrap();
    }
    let mut paged = Vec::new();
    let mut from = None;
    let mut pages = 0;
    loop {
        let page = p.list_page(from).await.unwrap();
        pages += 1;
        assert!(page.pods.len() <= crate::provider::LIST_PAGE);
        paged.extend(page.pods.into_iter().map(|bp| bp.pod.uid));
        from = page.next;
        if from.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3, "1201 pods in pages of 500");
    let mut whole: Vec<String> = p
        .list_pods()
        .await
        .unwrap()
        .into_iter()
        .map(|bp| bp.pod.uid)
        .collect();
    whole.sort();
    assert_eq!(paged, whole, "every pod once, in the order of their UIDs");
}
