//! From an ECS task (DescribeTasks with `include=TAGS`) to the pod status
//! skylet reports. Pure functions.
//!
//! | task `lastStatus` | pod phase |
//! |---|---|
//! | PROVISIONING, PENDING, ACTIVATING | Pending |
//! | RUNNING, DEACTIVATING, STOPPING, DEPROVISIONING | Running |
//! | STOPPED | Succeeded when every app container exited 0, else Failed (reason: the `stopCode`, message: `stoppedReason`) |
//!
//! | container `lastStatus` | container state |
//! |---|---|
//! | RUNNING | running since the task's `startedAt`; ready once its health check says HEALTHY (a container the task's `skylet.io/health-checked` tag names, from an exec probe), else unless it says UNHEALTHY |
//! | STOPPED (or any, with an `exitCode`) | terminated: exit code, `Completed`/`Error`, the container's `reason` as message |
//! | anything else in a STOPPED task | terminated with exit code 128, `ContainerCannotRun`, the reason (e.g. `CannotPullContainerError`) |
//! | anything else | waiting, `ContainerCreating` |
//!
//! The pod IP is the `privateIPv4Address` of the task's ENI attachment (or of
//! a container's network interface). Containers are told apart by their ECS
//! names ([`crate::names::container_kind`]); skylet's files container is not
//! reported.

use aws_sdk_ecs::types::{Container, HealthStatus, Task};
use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use skylet_provider::{BackendPod, PodRef};

use crate::names::{
    self, ContainerKind, STOP_REASON_PREFIX, TAG_POD_NAME, TAG_POD_NAMESPACE, TAG_POD_UID,
};

/// What a described task means for the pod listing.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// A pod and its status.
    Pod(Box<BackendPod>),
    /// A task skylet stopped that has stopped: the pod is gone from the
    /// backend's point of view.
    Finished(PodRef),
    /// Not a task of skylet's (no pod tags).
    Foreign,
}

/// The pod a task runs, from its tags.
pub fn identity(task: &Task) -> Option<PodRef> {
    let tag = |k: &str| {
        task.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    let uid = tag(TAG_POD_UID).filter(|u| !u.is_empty())?;
    Some(PodRef {
        namespace: tag(TAG_POD_NAMESPACE).unwrap_or_default(),
        name: tag(TAG_POD_NAME).unwrap_or_default(),
        uid,
    })
}

/// Whether skylet stopped this task (its `stoppedReason` says so).
pub fn stopped_by_skylet(task: &Task) -> bool {
    task.stopped_reason()
        .is_some_and(|r| r.starts_with(STOP_REASON_PREFIX))
}

/// Whether the task has reached its final state.
pub fn is_stopped(task: &Task) -> bool {
    matches!(task.last_status(), Some("STOPPED" | "DELETED"))
}

/// Classifies a described task.
pub fn observe(task: &Task) -> Observation {
    let Some(pod) = identity(task) else {
        return Observation::Foreign;
    };
    if is_stopped(task) && stopped_by_skylet(task) {
        return Observation::Finished(pod);
    }
    Observation::Pod(Box::new(BackendPod {
        pod,
        status: pod_status(task),
    }))
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<Time> {
    let t = t?;
    Timestamp::new(t.secs(), i32::try_from(t.subsec_nanos()).unwrap_or(0))
        .ok()
        .map(Time)
}

/// The task's private IPv4 address.
pub fn pod_ip(task: &Task) -> Option<String> {
    let from_eni = task
        .attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .filter(|v| !v.is_empty());
    let from_container = || {
        task.containers()
            .iter()
            .flat_map(|c| c.network_interfaces())
            .find_map(|n| n.private_ipv4_address())
            .filter(|v| !v.is_empty())
    };
    from_eni.or_else(from_container).map(str::to_owned)
}

/// The pod status of a task.
pub fn pod_status(task: &Task) -> PodStatus {
    let stopped = is_stopped(task);
    let running_task = task.last_status() == Some("RUNNING");
    let started = time(task.started_at());
    let finished = time(task.execution_stopped_at().or(task.stopped_at()));
    let mut apps = Vec::new();
    let mut inits = Vec::new();
    for c in task.containers() {
        let name = c.name().unwrap_or_default();
        match names::container_kind(name) {
            ContainerKind::App(n) => apps.push(container_status(
                c,
                n,
                stopped,
                running_task,
                started.as_ref(),
                finished.as_ref(),
                task,
            )),
            ContainerKind::Init(n) => inits.push(container_status(
                c,
                n,
                stopped,
                running_task,
                started.as_ref(),
                finished.as_ref(),
                task,
            )),
            ContainerKind::Files => {}
        }
    }
    let phase = match task.last_status().unwrap_or_default() {
        "STOPPED" | "DELETED" => {
            let ok = !apps.is_empty()
                && apps.iter().all(|s| {
                    s.state
                        .as_ref()
                        .and_then(|st| st.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
                });
            if ok { "Succeeded" } else { "Failed" }
        }
        "RUNNING" | "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => "Running",
        _ => "Pending",
    };
    let (reason, message) = if phase == "Failed" {
        (
            task.stop_code()
                .map(|c| c.as_str().to_owned())
                .or(Some("TaskStopped".into())),
            task.stopped_reason().map(str::to_owned),
        )
    } else {
        (None, None)
    };
    let ip = pod_ip(task);
    PodStatus {
        phase: Some(phase.into()),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        reason,
        message,
        start_time: started.clone().or_else(|| time(task.created_at())),
        container_statuses: Some(apps),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        ..Default::default()
    }
}

fn container_status(
    c: &Container,
    name: &str,
    task_stopped: bool,
    task_running: bool,
    started: Option<&Time>,
    finished: Option<&Time>,
    task: &Task,
) -> ContainerStatus {
    let last = c.last_status().unwrap_or_default();
    let state = if last == "RUNNING" && !task_stopped {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: started.cloned(),
            }),
            ..Default::default()
        }
    } else if let (Some(code), true) = (c.exit_code(), last == "STOPPED" || task_stopped) {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                message: c.reason().map(str::to_owned),
                started_at: started.cloned(),
                finished_at: finished.cloned(),
                container_id: c.runtime_id().map(|id| format!("ecs://{id}")),
                ..Default::default()
            }),
            ..Default::default()
        }
    } else if task_stopped || last == "STOPPED" {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 128,
                reason: Some("ContainerCannotRun".into()),
                message: c.reason().or(task.stopped_reason()).map(str::to_owned),
                finished_at: finished.cloned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    } else {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: c.reason().map(str::to_owned),
            }),
            ..Default::default()
        }
    };
    let running = state.running.is_some();
    // a container with a health check is ready once it passed (ECS says
    // UNKNOWN before the first checks, and always without one)
    let checked = task
        .tags()
        .iter()
        .find(|t| t.key() == Some(names::TAG_HEALTH_CHECKED))
        .and_then(|t| t.value())
        .is_some_and(|v| v.split(' ').any(|n| Some(n) == c.name()));
    let healthy = match c.health_status().map(HealthStatus::as_str) {
        Some("HEALTHY") => true,
        Some("UNHEALTHY") => false,
        _ => !checked,
    };
    ContainerStatus {
        name: name.to_owned(),
        image: c.image().unwrap_or_default().to_owned(),
        image_id: c
            .image_digest()
            .map(|d| format!("{}@{d}", c.image().unwrap_or_default()))
            .unwrap_or_default(),
        container_id: c.runtime_id().map(|id| format!("ecs://{id}")),
        ready: running && task_running && healthy,
        started: Some(running),
        restart_count: 0,
        state: Some(state),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures shaped like DescribeTasks answers (API model
    //! `Task`/`Container`/`Attachment`), built with the SDK's builders.
    use super::*;
    use aws_sdk_ecs::types::{
        Attachment, HealthStatus, KeyValuePair, NetworkInterface, Tag, TaskStopCode,
    };
    use aws_smithy_types::DateTime;

    fn container(name: &str, last: &str, exit: Option<i32>) -> Container {
        Container::builder()
            .name(name)
            .image("nginx:1")
            .last_status(last)
            .set_exit_code(exit)
            .runtime_id("abc123")
            .build()
    }

    fn task(last: &str, desired: &str, containers: Vec<Container>) -> Task {
        Task::builder()
            .task_arn("arn:aws:ecs:us-east-1:123456789012:task/burst/0f1e2d")
            .last_status(last)
            .desired_status(desired)
            .created_at(DateTime::from_secs(1_700_000_000))
            .started_at(DateTime::from_secs(1_700_000_030))
            .set_containers(Some(containers))
            .attachments(
                Attachment::builder()
                    .r#type("ElasticNetworkInterface")
                    .status("ATTACHED")
                    .details(
                        KeyValuePair::builder()
                            .name("subnetId")
                            .value("subnet-1")
                            .build(),
                    )
                    .details(
                        KeyValuePair::builder()
                            .name("privateIPv4Address")
                            .value("10.0.1.23")
                            .build(),
                    )
                    .build(),
            )
            .tags(Tag::builder().key(TAG_POD_UID).value("uid-1").build())
            .tags(Tag::builder().key(TAG_POD_NAMESPACE).value("shop").build())
            .tags(Tag::builder().key(TAG_POD_NAME).value("web-1").build())
            .build()
    }

    fn state(s: &PodStatus, i: usize) -> ContainerState {
        s.container_statuses.as_ref().unwrap()[i]
            .state
            .clone()
            .unwrap()
    }

    #[test]
    fn pending_task_is_a_pending_pod_with_creating_containers() {
        let t = task(
            "PROVISIONING",
            "RUNNING",
            vec![container("web", "PENDING", None)],
        );
        let s = pod_status(&t);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            state(&s, 0).waiting.unwrap().reason.as_deref(),
            Some("ContainerCreating")
        );
        assert!(!s.container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(identity(&t), Some(PodRef::new("shop", "web-1", "uid-1")));
    }

    #[test]
    fn running_multi_container_task_with_init_and_files_containers() {
        let t = task(
            "RUNNING",
            "RUNNING",
            vec![
                container("web", "RUNNING", None),
                Container::builder()
                    .name("metrics")
                    .image("m")
                    .last_status("RUNNING")
                    .health_status(HealthStatus::Unhealthy)
                    .build(),
                container(names::FILES_CONTAINER, "STOPPED", Some(0)),
                container("init_migrate", "STOPPED", Some(0)),
            ],
        );
        let s = pod_status(&t);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.1.23"));
        assert_eq!(s.start_time.as_ref().unwrap().0.as_second(), 1_700_000_030);
        let cs = s.container_statuses.as_ref().unwrap();
        assert_eq!(cs.len(), 2, "the files container is not reported");
        assert!(cs[0].ready && cs[0].state.as_ref().unwrap().running.is_some());
        assert_eq!(cs[0].container_id.as_deref(), Some("ecs://abc123"));
        assert!(!cs[1].ready, "an UNHEALTHY container is not ready");
        // with a health check, UNKNOWN (before the first checks) is not ready
        let checked = |status: HealthStatus| {
            let mut t = task(
                "RUNNING",
                "RUNNING",
                vec![
                    Container::builder()
                        .name("web")
                        .image("w")
                        .last_status("RUNNING")
                        .health_status(status)
                        .build(),
                ],
            );
            t.tags.get_or_insert_with(Vec::new).push(
                Tag::builder()
                    .key(names::TAG_HEALTH_CHECKED)
                    .value("web")
                    .build(),
            );
            pod_status(&t).container_statuses.unwrap()[0].ready
        };
        assert!(!checked(HealthStatus::from("UNKNOWN")));
        assert!(checked(HealthStatus::Healthy));
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(init.name, "migrate");
        let term = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (0, Some("Completed"))
        );
    }

    #[test]
    fn stopped_task_with_exit_codes_fails_with_the_stop_code() {
        let mut t = task(
            "STOPPED",
            "STOPPED",
            vec![
                container("web", "STOPPED", Some(0)),
                container("worker", "STOPPED", Some(3)),
            ],
        );
        t.stop_code = Some(TaskStopCode::EssentialContainerExited);
        t.stopped_reason = Some("Essential container in task exited".into());
        t.stopped_at = Some(DateTime::from_secs(1_700_000_100));
        let s = pod_status(&t);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("EssentialContainerExited"));
        assert_eq!(
            s.message.as_deref(),
            Some("Essential container in task exited")
        );
        let w = state(&s, 1).terminated.unwrap();
        assert_eq!((w.exit_code, w.reason.as_deref()), (3, Some("Error")));
        assert_eq!(w.finished_at.unwrap().0.as_second(), 1_700_000_100);
        assert!(
            matches!(observe(&t), Observation::Pod(_)),
            "a task that ended by itself is reported"
        );
    }

    #[test]
    fn essential_container_exit_zero_is_success() {
        let mut t = task(
            "STOPPED",
            "STOPPED",
            vec![
                container("job", "STOPPED", Some(0)),
                container("init_setup", "STOPPED", Some(0)),
            ],
        );
        t.stop_code = Some(TaskStopCode::EssentialContainerExited);
        let s = pod_status(&t);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(s.reason, None);
    }

    #[test]
    fn task_that_failed_to_start_reports_why() {
        let mut t = task(
            "STOPPED",
            "STOPPED",
            vec![
                Container::builder()
                    .name("web")
                    .image("nope")
                    .last_status("STOPPED")
                    .reason("CannotPullContainerError: pull access denied")
                    .build(),
            ],
        );
        t.stop_code = Some(TaskStopCode::TaskFailedToStart);
        t.stopped_reason = Some("CannotPullContainerError: pull access denied".into());
        t.started_at = None;
        t.attachments = None;
        let s = pod_status(&t);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("TaskFailedToStart"));
        assert_eq!(s.pod_ip, None);
        assert_eq!(
            s.start_time.as_ref().unwrap().0.as_second(),
            1_700_000_000,
            "createdAt when never started"
        );
        let term = state(&s, 0).terminated.unwrap();
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (128, Some("ContainerCannotRun"))
        );
        assert!(term.message.unwrap().contains("CannotPullContainerError"));
    }

    #[test]
    fn stopping_task_stays_running_and_skylet_stopped_tasks_are_finished() {
        let mut t = task(
            "DEACTIVATING",
            "STOPPED",
            vec![container("web", "RUNNING", None)],
        );
        t.stopped_reason = Some(format!("{STOP_REASON_PREFIX} (pod shop/web-1)"));
        assert_eq!(pod_status(&t).phase.as_deref(), Some("Running"));
        assert!(
            matches!(observe(&t), Observation::Pod(_)),
            "still stopping: the pod waits"
        );
        t.last_status = Some("STOPPED".into());
        assert_eq!(
            observe(&t),
            Observation::Finished(PodRef::new("shop", "web-1", "uid-1"))
        );
        t.tags = None;
        assert_eq!(observe(&t), Observation::Foreign);
    }

    #[test]
    fn ip_from_a_container_interface_when_no_attachment() {
        let mut t = task("RUNNING", "RUNNING", vec![]);
        t.attachments = None;
        t.containers = Some(vec![
            Container::builder()
                .name("web")
                .last_status("RUNNING")
                .network_interfaces(
                    NetworkInterface::builder()
                        .private_ipv4_address("10.9.8.7")
                        .build(),
                )
                .build(),
        ]);
        assert_eq!(pod_ip(&t).as_deref(), Some("10.9.8.7"));
    }
}
