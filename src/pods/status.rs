//! Pure functions from what the backend reports to the pod status skylet
//! writes: phase, conditions, container statuses, IPs, start time.
//!
//! Times are carried over from the current status wherever the value did not
//! change, so that equal inputs give an equal status and skylet writes only
//! when something changed.

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
        Pod, PodCondition, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

/// What skylet knows of a pod besides its Kubernetes object.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed<'a> {
    /// The backend reports this status.
    Backend(&'a PodStatus),
    /// Not in the backend yet: waiting for it to be created, with a reason
    /// and message when something blocks it (a missing ConfigMap).
    Waiting {
        reason: &'a str,
        message: Option<&'a str>,
    },
    /// Will never run: failed with reason and message.
    Failed { reason: &'a str, message: &'a str },
}

/// The status skylet wants the pod to have.
pub fn desired(pod: &Pod, observed: &Observed<'_>, host_ip: &str, now: Timestamp) -> PodStatus {
    let current = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut s = PodStatus {
        host_ip: Some(host_ip.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_owned(),
        }]),
        qos_class: current.qos_class.clone(),
        start_time: current.start_time.clone().or(Some(Time(now))),
        observed_generation: pod.metadata.generation,
        ..Default::default()
    };
    let waiting =
        |name: &str, image: Option<&String>, reason: &str, message: Option<&str>| ContainerStatus {
            name: name.to_owned(),
            image: image.cloned().unwrap_or_default(),
            image_id: String::new(),
            ready: false,
            started: Some(false),
            restart_count: 0,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.to_owned()),
                    message: message.map(str::to_owned),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
    match observed {
        Observed::Backend(b) => {
            s.phase = b.phase.clone().or(Some("Pending".into()));
            s.pod_ip = b.pod_ip.clone();
            s.pod_ips = b.pod_ips.clone();
            s.reason = b.reason.clone();
            s.message = b.message.clone();
            s.start_time = current
                .start_time
                .clone()
                .or(b.start_time.clone())
                .or(Some(Time(now)));
            s.container_statuses =
                Some(complete(&spec.containers, b.container_statuses.as_deref()));
            if let Some(init) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
                let mut reported = b.init_container_statuses.clone().unwrap_or_default();
                // a backend without native sidecars runs them as regular
                // containers and reports them so (ACI)
                for c in init.iter().filter(|c| is_sidecar(c)) {
                    if !reported.iter().any(|r| r.name == c.name)
                        && let Some(r) = b
                            .container_statuses
                            .iter()
                            .flatten()
                            .find(|r| r.name == c.name)
                    {
                        reported.push(r.clone());
                    }
                }
                s.init_container_statuses = Some(complete(init, Some(&reported)));
            }
            s.ephemeral_container_statuses = ephemeral(&spec, b, &current);
        }
        Observed::Waiting { reason, message } => {
            s.ephemeral_container_statuses = current.ephemeral_container_statuses.clone();
            s.phase = Some("Pending".into());
            s.pod_ip = current.pod_ip.clone();
            s.pod_ips = current.pod_ips.clone();
            s.container_statuses = Some(
                spec.containers
                    .iter()
                    .map(|c| waiting(&c.name, c.image.as_ref(), reason, *message))
                    .collect(),
            );
            if let Some(init) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
                s.init_container_statuses = Some(
                    init.iter()
                        .map(|c| waiting(&c.name, c.image.as_ref(), reason, *message))
                        .collect(),
                );
            }
        }
        Observed::Failed { reason, message } => {
            s.ephemeral_container_statuses = current.ephemeral_container_statuses.clone();
            s.phase = Some("Failed".into());
            s.reason = Some((*reason).to_owned());
            s.message = Some((*message).to_owned());
            let terminated = |name: &str, image: Option<&String>| ContainerStatus {
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 128,
                        reason: Some((*reason).to_owned()),
                        message: Some((*message).to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..waiting(name, image, reason, None)
            };
            s.container_statuses = Some(
                spec.containers
                    .iter()
                    .map(|c| terminated(&c.name, c.image.as_ref()))
                    .collect(),
            );
        }
    }
    let mut conditions = conditions(&s, &current, spec.init_containers.as_deref(), now);
    if let Observed::Backend(b) = observed {
        conditions.extend(resize_conditions(b, &current, now));
    }
    s.conditions = Some(conditions);
    s
}

/// The ephemeral containers' statuses (`kubectl debug`), in spec order:
/// as the backend reports them, else as skylet wrote them, else waiting
/// for the backend to start them.
fn ephemeral(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    b: &PodStatus,
    current: &PodStatus,
) -> Option<Vec<ContainerStatus>> {
    let list = spec
        .ephemeral_containers
        .as_ref()
        .filter(|e| !e.is_empty())?;
    let find = |statuses: Option<&Vec<ContainerStatus>>, name: &str| {
        statuses
            .into_iter()
            .flatten()
            .find(|s| s.name == name)
            .cloned()
    };
    Some(
        list.iter()
            .map(|c| {
                find(b.ephemeral_container_statuses.as_ref(), &c.name)
                    .or_else(|| find(current.ephemeral_container_statuses.as_ref(), &c.name))
                    .unwrap_or_else(|| creating(&c.name, c.image.as_ref()))
            })
            .collect(),
    )
}

/// The in-place resize conditions the backend reports (the remote
/// kubelet's, or skylet's `Infeasible` for a backend that cannot resize),
/// with their transition time kept while their status stays.
fn resize_conditions(b: &PodStatus, current: &PodStatus, now: Timestamp) -> Vec<PodCondition> {
    b.conditions
        .iter()
        .flatten()
        .filter(|c| matches!(c.type_.as_str(), "PodResizePending" | "PodResizeInProgress"))
        .map(|c| {
            let since = current
                .conditions
                .iter()
                .flatten()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .and_then(|p| p.last_transition_time.clone());
            PodCondition {
                last_transition_time: since
                    .or_else(|| c.last_transition_time.clone())
                    .or(Some(Time(now))),
                last_probe_time: None,
                observed_generation: None,
                ..c.clone()
            }
        })
        .collect()
}

/// Container statuses in spec order, one per container, with a waiting
/// status for any the backend did not report.
fn complete(
    spec: &[k8s_openapi::api::core::v1::Container],
    reported: Option<&[ContainerStatus]>,
) -> Vec<ContainerStatus> {
    spec.iter()
        .map(|c| {
            reported
                .into_iter()
                .flatten()
                .find(|s| s.name == c.name)
                .cloned()
                .unwrap_or_else(|| creating(&c.name, c.image.as_ref()))
        })
        .collect()
}

/// The status of a container the backend has not reported yet.
fn creating(name: &str, image: Option<&String>) -> ContainerStatus {
    ContainerStatus {
        name: name.to_owned(),
        image: image.cloned().unwrap_or_default(),
        started: Some(false),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether an init container is a native sidecar (`restartPolicy: Always`).
fn is_sidecar(c: &k8s_openapi::api::core::v1::Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn conditions(
    s: &PodStatus,
    current: &PodStatus,
    init: Option<&[k8s_openapi::api::core::v1::Container]>,
    now: Timestamp,
) -> Vec<PodCondition> {
    let phase = s.phase.as_deref().unwrap_or("Pending");
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let containers = s.container_statuses.as_deref().unwrap_or_default();
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let sidecar = |name: &str| {
        init.into_iter()
            .flatten()
            .any(|c| c.name == name && is_sidecar(c))
    };
    // an init container is done once it exited 0; a sidecar once it started
    let initialized = init.is_none_or(<[_]>::is_empty)
        || s.init_container_statuses.iter().flatten().all(|c| {
            let st = c.state.as_ref();
            if sidecar(&c.name) {
                return st.is_some_and(|st| st.running.is_some());
            }
            st.and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
    let sandbox = s.pod_ip.is_some() || matches!(phase, "Running" | "Succeeded");
    let (ready, ready_reason) = if terminal {
        (false, Some("PodCompleted"))
    } else if all_ready && phase == "Running" {
        (true, None)
    } else {
        (false, Some("ContainersNotReady"))
    };
    let not_ready_msg = |ready: bool| {
        (!ready && !terminal).then(|| {
            let names: Vec<&str> = containers
                .iter()
                .filter(|c| !c.ready)
                .map(|c| c.name.as_str())
                .collect();
            format!("containers with unready status: [{}]", names.join(" "))
        })
    };
    let mut out: Vec<PodCondition> = Vec::new();
    let mut push = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        // keep the transition time while the status stays the same
        let prev = current
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_);
        let since = prev
            .filter(|p| p.status == status)
            .and_then(|p| p.last_transition_time.clone());
        out.push(PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(str::to_owned),
            message,
            last_transition_time: since.or(Some(Time(now))),
            last_probe_time: None,
            observed_generation: None,
        });
    };
    push("PodReadyToStartContainers", sandbox, None, None);
    push(
        "Initialized",
        initialized,
        (!initialized).then_some("ContainersNotInitialized"),
        None,
    );
    push("Ready", ready, ready_reason, not_ready_msg(ready));
    push("ContainersReady", ready, ready_reason, not_ready_msg(ready));
    // the scheduler's condition stays as it wrote it
    if let Some(sched) = current
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
    {
        out.push(sched.clone());
    }
    out
}

/// Whether writing `desired` over `current` changes anything a user sees.
///
/// Compared as they travel: serialized. Kubernetes stores times at whole
/// seconds (k8s-openapi serializes `metav1.Time` so too) while backends report
/// nanoseconds, so comparing the structs would see a change in every Running
/// pod and write its status again on every reconcile.
pub fn changed(current: Option<&PodStatus>, desired: &PodStatus) -> bool {
    let Some(cur) = current else { return true };
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        // fields skylet does not own
        s.nominated_node_name = None;
        s.resize = None;
        s.resource_claim_statuses = None;
        s.observed_generation = None;
        for c in s.conditions.iter_mut().flatten() {
            c.observed_generation = None;
            c.last_probe_time = None;
        }
        if let Some(c) = s.conditions.as_mut() {
            c.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
        // the apiserver defaults an absent lastState to {}
        let statuses = s
            .container_statuses
            .iter_mut()
            .chain(s.init_container_statuses.iter_mut())
            .chain(s.ephemeral_container_statuses.iter_mut())
            .flatten();
        for c in statuses {
            if c.last_state.as_ref() == Some(&ContainerState::default()) {
                c.last_state = None;
            }
        }
        serde_json::to_value(&s).unwrap_or(serde_json::Value::Null)
    };
    strip(cur) != strip(desired)
}

/// Whether a pod has finished for good.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerStateRunning, PodIP};
    use serde_json::json;

    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"nodeName": "n", "containers": [{"name": "a", "image": "img-a"}, {"name": "b", "image": "img-b"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn running(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning { started_at: None }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn running_backend_pod_is_ready_with_ip() {
        let b = PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.2.3".into()),
            pod_ips: Some(vec![PodIP {
                ip: "10.1.2.3".into(),
            }]),
            container_statuses: Some(vec![running("b", true), running("a", true)]),
            ..Default::default()
        };
        let s = desired(
            &pod(),
            &Observed::Backend(&b),
            "192.0.2.1",
            Timestamp::now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.1.2.3"));
        assert_eq!(s.host_ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(
            cond(&s, "PodScheduled").status,
            "True",
            "the scheduler's condition is kept"
        );
        let names: Vec<_> = s
            .container_statuses
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["a", "b"], "statuses follow the spec order");
    }

    #[test]
    fn a_missing_container_status_is_waiting_and_not_ready() {
        let b = PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![running("a", true)]),
            ..Default::default()
        };
        let s = desired(&pod(), &Observed::Backend(&b), "h", Timestamp::now());
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        let b_status = &s.container_statuses.unwrap()[1];
        assert_eq!(
            b_status
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
    }

    #[test]
    fn same_inputs_give_no_change_and_keep_transition_times() {
        let b = PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![running("a", true), running("b", true)]),
            ..Default::default()
        };
        let mut p = pod();
        let first = desired(&p, &Observed::Backend(&b), "h", Timestamp::now());
        p.status = Some(first.clone());
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let second = desired(&p, &Observed::Backend(&b), "h", later);
        assert!(!changed(Some(&first), &second), "{first:?}\n{second:?}");
    }

    #[test]
    fn sub_second_times_from_the_backend_are_no_change() {
        // regression (found by hack/bench): the apiserver keeps whole seconds,
        // the backend reports nanoseconds; that must not rewrite the status
        let started: Timestamp = "2026-01-01T00:00:05.123456789Z".parse().unwrap();
        let c = |name: &str| ContainerStatus {
            name: name.into(),
            ready: true,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(started)),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![c("a"), c("b")]),
            ..Default::default()
        };
        let now: Timestamp = "2026-01-01T00:00:06.987654321Z".parse().unwrap();
        let first = desired(&pod(), &Observed::Backend(&b), "h", now);
        // what the apiserver stores and the watch returns: whole seconds,
        // and lastState defaulted to {}
        let mut stored: PodStatus =
            serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap();
        for c in stored.container_statuses.iter_mut().flatten() {
            c.last_state = Some(ContainerState::default());
        }
        let mut p = pod();
        p.status = Some(stored.clone());
        let again = desired(
            &p,
            &Observed::Backend(&b),
            "h",
            now + jiff::SignedDuration::from_secs(300),
        );
        assert!(!changed(Some(&stored), &again), "{stored:?}\n{again:?}");
    }

    #[test]
    fn a_sidecar_run_as_a_regular_container_initializes_the_pod() {
        // issue #16: ACI runs native sidecars as containers of the group
        let mut p = pod();
        p.spec.as_mut().unwrap().init_containers = Some(vec![
            serde_json::from_value(
                json!({"name": "proxy", "image": "envoy", "restartPolicy": "Always"}),
            )
            .unwrap(),
        ]);
        let b = PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![
                running("a", true),
                running("b", true),
                running("proxy", true),
            ]),
            ..Default::default()
        };
        let s = desired(&p, &Observed::Backend(&b), "h", Timestamp::now());
        let init = s.init_container_statuses.as_ref().unwrap();
        assert_eq!(init[0].name, "proxy");
        assert!(init[0].state.as_ref().unwrap().running.is_some());
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "Ready").status, "True");
        let names: Vec<_> = s
            .container_statuses
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["a", "b"], "the sidecar is not an app container");
    }

    #[test]
    fn waiting_and_failed_are_explained() {
        let s = desired(
            &pod(),
            &Observed::Waiting {
                reason: "CreateContainerConfigError",
                message: Some("configmap \"x\" not found"),
            },
            "h",
            Timestamp::now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let w = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
        let f = desired(
            &pod(),
            &Observed::Failed {
                reason: "DaemonSetPodNotSupported",
                message: "no",
            },
            "h",
            Timestamp::now(),
        );
        assert_eq!(
            (f.phase.as_deref(), f.reason.as_deref()),
            (Some("Failed"), Some("DaemonSetPodNotSupported"))
        );
        assert_eq!(cond(&f, "Ready").reason.as_deref(), Some("PodCompleted"));
    }
}
