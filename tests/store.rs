//! The pod store alone: what 10,000 Running pods cost in it, kept whole
//! and kept as the slim records skylet keeps once the backend holds a pod
//! (`src/pods/record.rs`), measured with dhat's heap statistics (this test
//! binary's global allocator). The pod is a `hack/bench` pod as the
//! apiserver serves it once Running, without managedFields (skylet drops
//! them in both cases).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector::store::Writer, watcher};
use serde_json::json;
use skylet::pods::PodRecord;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const PODS: usize = 10_000;

/// Pod `i` of a benchmark run, Running, as the watch delivers it.
fn bench_pod(i: usize) -> Pod {
    let t = "2026-12-07T05:00:00Z";
    let cond = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": t});
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("bench-{i:05}"), "namespace": "bench",
            "uid": format!("6f1c2e4a-0b7d-4c1e-9a3f-{i:012}"),
            "resourceVersion": format!("{}", 100_000 + i), "creationTimestamp": t,
            "labels": {"app": "skylet-bench", "skylet-bench/run": "burst-1796620800"}
        },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": {},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "nodeName": "bench-skylet",
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "mock", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                cond("ContainersReady"), cond("PodScheduled")],
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": format!("10.200.{}.{}", i / 256, i % 256),
            "podIPs": [{"ip": format!("10.200.{}.{}", i / 256, i % 256)}],
            "startTime": t,
            "containerStatuses": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "imageID": "",
                "ready": true, "started": true, "restartCount": 0, "lastState": {},
                "state": {"running": {"startedAt": t}}}],
            "qosClass": "BestEffort"
        }
    }))
    .expect("a valid pod")
}

/// Heap bytes held by a store of `PODS` records made by `record`.
fn store_bytes(record: impl Fn(Pod) -> PodRecord) -> (usize, Writer<PodRecord>) {
    let before = dhat::HeapStats::get().curr_bytes;
    let mut writer = Writer::<PodRecord>::default();
    for i in 0..PODS {
        writer.apply_watcher_event(&watcher::Event::Apply(record(bench_pod(i))));
    }
    let after = dhat::HeapStats::get().curr_bytes;
    (after.saturating_sub(before), writer)
}

#[test]
fn the_store_keeps_10000_running_pods_in_a_fraction_of_their_whole_size() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let (whole, kept) = store_bytes(PodRecord::whole);
    drop(kept);
    let (slim, kept) = store_bytes(PodRecord::slim);
    let per = |b: usize| b as f64 / PODS as f64;
    println!(
        "store of {PODS} Running pods: whole {:.1} MB ({:.0} B/pod), slim {:.1} MB ({:.0} B/pod)",
        whole as f64 / 1e6,
        per(whole),
        slim as f64 / 1e6,
        per(slim)
    );
    // the slim pod, built again, still has what status writes read
    let reader = kept.as_reader();
    let any: Arc<PodRecord> = reader.state().pop().expect("pods in the store");
    let pod = any.pod();
    assert_eq!(pod.spec.as_ref().map(|s| s.containers.len()), Some(1));
    assert_eq!(any.phase(), Some("Running"));
    dhat::assert!(
        slim * 3 <= whole,
        "the slim store takes {slim} bytes, the whole one {whole}: less than a third expected"
    );
}
