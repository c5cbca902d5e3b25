//! From a container group (GET or LIST answer) to the pod status skylet
//! reports (the group's events are [`crate::events`]). Pure functions (but
//! for [`pod_status`]'s clock).
//!
//! | container `currentState.state` | container state |
//! |---|---|
//! | `Running` | running since `startTime` |
//! | `Terminated` (or any state with an `exitCode`) | terminated: exit code, start and finish time; `detailStatus` as reason (`Completed`, `Error`, `OOMKilled`, or the word before a `:`) and message (the rest), else `Completed`/`Error` by exit code |
//! | `Waiting` and others | waiting: reason from `detailStatus` (`CrashLoopBackOff: ...`), else `ContainerCreating` |
//! | none yet | waiting `ContainerCreating` (`PodInitializing` while init containers run); terminated `ContainerCannotRun` (exit 128) when the group failed |
//!
//! `previousState` is `lastState`, `restartCount` is ACI's. The phase is the
//! kubelet's rule over these states and the group's restart policy
//! (`getPhase` in pkg/kubelet/kubelet_pods.go): a failed init container
//! with restartPolicy Never fails the pod, unfinished init containers or a
//! waiting container keep it Pending, a running container makes it
//! Running, and once every container has ended the pod Succeeded (all
//! exited 0), Failed (restartPolicy Never, or the group was stopped) or
//! stays Running (it will be restarted). A group whose provisioning
//! `Failed` (or was `Canceled`) fails the pod with reason
//! `ProvisioningFailed` (`ProvisioningCanceled`) and the latest Warning
//! event as message.
//!
//! # Readiness (an approximation)
//! ACI runs readiness probes but reports no result. A running container is
//! ready; with a readiness probe, only once it has run for the probe's
//! `initialDelaySeconds`. A container whose probe keeps failing therefore
//! shows ready; a failing liveness probe restarts it, which does show.
//!
//! Like the ECS backend, this fills phase, reason, message, container and
//! init container statuses, IPs and start time; the core derives the
//! conditions (PodScheduled, Initialized, ContainersReady, Ready) from them
//! and keeps their transition times, and sets `hostIP` (the node's).

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::{
    events::events,
    models::{
        self, ContainerGroup, ContainerGroupPropertiesProperties, ContainerGroupProvisioningState,
        ContainerGroupRestartPolicy, ContainerPropertiesInstanceView,
    },
};

/// Whether no container of the group runs any more (each has terminated
/// or never started): stopping it is done.
pub fn all_terminated(group: &ContainerGroup) -> bool {
    group.properties.containers.iter().all(|c| {
        let state = c
            .properties
            .instance_view
            .as_ref()
            .and_then(|v| v.current_state.as_ref())
            .and_then(|s| s.state.as_deref());
        !state.is_some_and(|s| s.eq_ignore_ascii_case("Running"))
    })
}

/// The pod status of a group, now.
pub fn pod_status(group: &ContainerGroup) -> PodStatus {
    pod_status_at(group, Timestamp::now())
}

/// A `detailStatus` as (reason, message): a single PascalCase word is a
/// reason, `Word: text` a reason and a message, anything else a message.
fn split_detail(detail: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(d) = detail.map(str::trim).filter(|d| !d.is_empty()) else {
        return (None, None);
    };
    let word = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_uppercase())
            && w.chars().all(|c| c.is_ascii_alphanumeric())
    };
    if word(d) {
        return (Some(d.to_owned()), None);
    }
    if let Some((head, rest)) = d.split_once(':')
        && word(head.trim())
    {
        let rest = rest.trim();
        return (
            Some(head.trim().to_owned()),
            (!rest.is_empty()).then(|| rest.to_owned()),
        );
    }
    (None, Some(d.to_owned()))
}

fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(Time)
}

/// The Kubernetes state of an ACI container state; `None` when it says nothing.
fn state(s: &models::ContainerState) -> Option<ContainerState> {
    let name = s.state.as_deref().unwrap_or_default();
    let (reason, message) = split_detail(s.detail_status.as_deref());
    if name.eq_ignore_ascii_case("Running") {
        return Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(s.start_time),
            }),
            ..Default::default()
        });
    }
    if name.eq_ignore_ascii_case("Terminated") || s.exit_code.is_some() {
        let code = s
            .exit_code
            .unwrap_or(if reason.as_deref() == Some("Completed") {
                0
            } else {
                128
            });
        return Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: reason
                    .or_else(|| Some(if code == 0 { "Completed" } else { "Error" }.into())),
                message,
                started_at: time(s.start_time),
                finished_at: time(s.finish_time),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if name.is_empty() && reason.is_none() && message.is_none() {
        return None;
    }
    let fallback = if name.is_empty() || name.eq_ignore_ascii_case("Waiting") {
        "ContainerCreating".to_owned()
    } else {
        name.to_owned()
    };
    Some(ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.unwrap_or(fallback)),
            message,
        }),
        ..Default::default()
    })
}

fn terminated(s: &ContainerState) -> Option<&ContainerStateTerminated> {
    s.terminated.as_ref()
}

/// What the group's provisioning says about the pod: a terminal failure's
/// reason and message.
fn provisioning_failure(group: &ContainerGroup) -> Option<(String, String)> {
    let reason = match group.properties.provisioning_state.as_ref()? {
        ContainerGroupProvisioningState::Failed => "ProvisioningFailed",
        ContainerGroupProvisioningState::Canceled => "ProvisioningCanceled",
        _ => return None,
    };
    let warning = events(group)
        .into_iter()
        .filter(|e| e.type_.eq_ignore_ascii_case("Warning"))
        .max_by_key(|e| e.last_timestamp.or(e.first_timestamp))
        .map(|e| e.message.unwrap_or(e.name));
    let message = warning
        .or_else(|| {
            group
                .properties
                .instance_view
                .as_ref()
                .and_then(|v| v.state.clone())
                .map(|s| format!("container group state {s}"))
        })
        .unwrap_or_else(|| {
            format!(
                "ACI could not provision the container group ({})",
                reason.trim_start_matches("Provisioning").to_lowercase()
            )
        });
    Some((reason.to_owned(), message))
}

struct Ctx<'a> {
    group: Option<&'a str>,
    failure: Option<&'a (String, String)>,
    now: Timestamp,
}

fn status(
    ctx: &Ctx<'_>,
    name: &str,
    image: &str,
    view: Option<&ContainerPropertiesInstanceView>,
    placeholder: &str,
) -> ContainerStatus {
    let current = view.and_then(|v| v.current_state.as_ref()).and_then(state);
    let current = current.unwrap_or_else(|| match ctx.failure {
        Some((_, message)) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 128,
                reason: Some("ContainerCannotRun".into()),
                message: Some(message.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        None => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(placeholder.to_owned()),
                message: None,
            }),
            ..Default::default()
        },
    });
    let began = current.running.is_some()
        || current
            .terminated
            .as_ref()
            .is_some_and(|t| t.started_at.is_some());
    ContainerStatus {
        name: name.to_owned(),
        image: image.to_owned(),
        image_id: String::new(),
        container_id: ctx
            .group
            .filter(|_| began)
            .map(|g| format!("aci://{g}/{name}")),
        started: Some(current.running.is_some()),
        restart_count: view.and_then(|v| v.restart_count).unwrap_or(0),
        last_state: view.and_then(|v| v.previous_state.as_ref()).and_then(state),
        ready: false,
        state: Some(current),
        ..Default::default()
    }
}

/// The pod status of a group at time `now` (readiness depends on it).
pub fn pod_status_at(group: &ContainerGroup, now: Timestamp) -> PodStatus {
    let p = &group.properties;
    let failure = provisioning_failure(group);
    let ctx = Ctx {
        group: group.name.as_deref(),
        failure: failure.as_ref(),
        now,
    };
    let restart = p
        .restart_policy
        .clone()
        .unwrap_or(ContainerGroupRestartPolicy::Always);
    let inits = init_statuses(&ctx, p);
    let init_done = inits.iter().all(|s| s.ready);
    let apps = app_statuses(&ctx, p, init_done);
    let stopped_group = p
        .instance_view
        .as_ref()
        .and_then(|v| v.state.as_deref())
        .is_some_and(|s| s.eq_ignore_ascii_case("Stopped"));
    let (phase, reason, message) = match &failure {
        Some((r, m)) => ("Failed", Some(r.clone()), Some(m.clone())),
        None => (phase(&inits, &apps, &restart, stopped_group), None, None),
    };
    let ip = p
        .ip_address
        .as_ref()
        .and_then(|a| a.ip.clone())
        .filter(|ip| !ip.is_empty());
    PodStatus {
        phase: Some(phase.into()),
        reason,
        message,
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: time(start_time(group)),
        container_statuses: Some(apps),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        ..Default::default()
    }
}

/// The init containers' statuses: ready once exited 0.
fn init_statuses(ctx: &Ctx<'_>, p: &ContainerGroupPropertiesProperties) -> Vec<ContainerStatus> {
    p.init_containers
        .iter()
        .map(|c| {
            let mut s = status(
                ctx,
                &c.name,
                c.properties.image.as_deref().unwrap_or_default(),
                c.properties.instance_view.as_ref(),
                "PodInitializing",
            );
            s.ready = s
                .state
                .as_ref()
                .and_then(terminated)
                .is_some_and(|t| t.exit_code == 0);
            s
        })
        .collect()
}

/// The app containers' statuses (`PodInitializing` until `init_done`).
fn app_statuses(
    ctx: &Ctx<'_>,
    p: &ContainerGroupPropertiesProperties,
    init_done: bool,
) -> Vec<ContainerStatus> {
    let placeholder = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    p.containers
        .iter()
        .map(|c| {
            let mut s = status(
                ctx,
                &c.name,
                &c.properties.image,
                c.properties.instance_view.as_ref(),
                placeholder,
            );
            s.ready = ctx.failure.is_none()
                && ready(
                    s.state.as_ref(),
                    c.properties.readiness_probe.as_ref(),
                    ctx.now,
                );
            s
        })
        .collect()
}

/// When the pod started: the group's creation, else its first container
/// start.
fn start_time(group: &ContainerGroup) -> Option<Timestamp> {
    let p = &group.properties;
    let created = group
        .system_data
        .as_ref()
        .and_then(|s| s.created_at.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let first_start = p
        .init_containers
        .iter()
        .filter_map(|c| c.properties.instance_view.as_ref())
        .chain(
            p.containers
                .iter()
                .filter_map(|c| c.properties.instance_view.as_ref()),
        )
        .flat_map(|v| v.current_state.iter().chain(v.previous_state.iter()))
        .filter_map(|s| s.start_time)
        .min();
    created.or(first_start)
}

/// Running, and past the readiness probe's initial delay.
fn ready(
    state: Option<&ContainerState>,
    probe: Option<&models::ContainerProbe>,
    now: Timestamp,
) -> bool {
    let Some(running) = state.and_then(|s| s.running.as_ref()) else {
        return false;
    };
    let delay = probe.and_then(|p| p.initial_delay_seconds).unwrap_or(0);
    if delay <= 0 {
        return true;
    }
    running
        .started_at
        .as_ref()
        .is_some_and(|t| now.as_second() - t.0.as_second() >= i64::from(delay))
}

/// The kubelet's phase rule (pkg/kubelet/kubelet_pods.go `getPhase`).
fn phase(
    inits: &[ContainerStatus],
    apps: &[ContainerStatus],
    restart: &ContainerGroupRestartPolicy,
    terminal: bool,
) -> &'static str {
    let never = *restart == ContainerGroupRestartPolicy::Never;
    let last_failed = |s: &ContainerStatus| {
        s.last_state
            .as_ref()
            .and_then(terminated)
            .is_some_and(|t| t.exit_code != 0)
    };
    let (mut pending_init, mut failed_init) = (0, 0);
    for s in inits {
        let st = s.state.clone().unwrap_or_default();
        match (&st.running, &st.terminated, &st.waiting) {
            (Some(_), _, _) => pending_init += 1,
            (_, Some(t), _) if t.exit_code == 0 => {}
            (_, Some(_), _) => failed_init += 1,
            _ if last_failed(s) => failed_init += 1,
            _ => pending_init += 1,
        }
    }
    if failed_init > 0 && never {
        return "Failed";
    }
    if pending_init > 0 || failed_init > 0 {
        return "Pending";
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in apps {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s.last_state.as_ref().and_then(terminated).is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    if terminal {
        return if stopped == succeeded {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    match restart {
        ContainerGroupRestartPolicy::Always => "Running",
        _ if stopped == succeeded => "Succeeded",
        ContainerGroupRestartPolicy::Never => "Failed",
        _ => "Running",
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures shaped like GET/LIST answers (spec `ContainerGroup`, the
    //! emulator's instance views), parsed with the crate's own models.
    use super::*;
    use serde_json::{Value, json};

    const T0: &str = "2026-11-25T21:40:00Z";
    const T1: &str = "2026-11-25T21:40:30Z";
    const T2: &str = "2026-11-25T21:41:00Z";

    fn now() -> Timestamp {
        "2026-11-25T21:45:00Z".parse().unwrap()
    }

    fn running() -> Value {
        json!({"restartCount": 0, "currentState": {"state": "Running", "startTime": T1, "detailStatus": ""}})
    }

    fn waiting(detail: &str) -> Value {
        json!({"restartCount": 0, "currentState": {"state": "Waiting", "detailStatus": detail}})
    }

    fn exited(code: i32, detail: &str) -> Value {
        json!({"restartCount": 0, "currentState": {"state": "Terminated", "startTime": T1, "finishTime": T2, "exitCode": code, "detailStatus": detail}})
    }

    /// A group named `g` in `state`, with `restart` policy, app containers
    /// (name, instance view) and init containers.
    fn group(
        state: &str,
        restart: &str,
        apps: Vec<(&str, Value)>,
        inits: Vec<(&str, Value)>,
    ) -> ContainerGroup {
        let c = |(name, view): (&str, Value)| {
            let mut props = json!({"image": format!("{name}:1"), "resources": {"requests": {"cpu": 1, "memoryInGB": 1.5}}});
            if !view.is_null() {
                props["instanceView"] = view;
            }
            json!({"name": name, "properties": props})
        };
        serde_json::from_value(json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g", "name": "g",
            "location": "westeurope",
            "properties": {"provisioningState": state, "restartPolicy": restart, "osType": "Linux",
                           "ipAddress": {"type": "Private", "ip": "10.1.0.4", "ports": [{"port": 80}]},
                           "containers": apps.into_iter().map(c).collect::<Vec<_>>(),
                           "initContainers": inits.into_iter().map(c).collect::<Vec<_>>()}
        }))
        .unwrap()
    }

    fn cs(s: &PodStatus, i: usize) -> &ContainerStatus {
        &s.container_statuses.as_ref().unwrap()[i]
    }

    /// The reason of a terminated state.
    fn exit_reason(state: Option<&ContainerState>) -> Option<&str> {
        state.and_then(terminated).and_then(|t| t.reason.as_deref())
    }

    fn st(s: &PodStatus, i: usize) -> ContainerState {
        cs(s, i).state.clone().unwrap()
    }

    #[test]
    fn creating_group_is_pending_with_waiting_containers() {
        let g = group(
            "Creating",
            "Always",
            vec![("web", waiting("ContainerCreating")), ("side", Value::Null)],
            vec![],
        );
        let s = pod_status_at(&g, now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            st(&s, 0).waiting.unwrap().reason.as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(
            st(&s, 1).waiting.unwrap().reason.as_deref(),
            Some("ContainerCreating"),
            "not reported yet"
        );
        assert!(!cs(&s, 0).ready && cs(&s, 0).started == Some(false));
        assert_eq!(cs(&s, 0).container_id, None, "not started: no id");
        assert_eq!(s.pod_ip.as_deref(), Some("10.1.0.4"));
        assert!(all_terminated(&g), "nothing runs yet: nothing to stop");
    }

    #[test]
    fn running_group_is_running_and_ready() {
        let g = group(
            "Succeeded",
            "Always",
            vec![("web", running()), ("side", running())],
            vec![("init", exited(0, "Completed"))],
        );
        let s = pod_status_at(&g, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(cs(&s, 0).ready && cs(&s, 0).started == Some(true));
        assert_eq!(
            st(&s, 0).running.unwrap().started_at.unwrap().0,
            T1.parse::<Timestamp>().unwrap()
        );
        assert_eq!(cs(&s, 0).container_id.as_deref(), Some("aci://g/web"));
        assert_eq!(cs(&s, 0).image, "web:1");
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.1.0.4");
        assert_eq!(
            s.start_time.as_ref().unwrap().0,
            T1.parse::<Timestamp>().unwrap(),
            "the first container start"
        );
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert!(init.ready, "a completed init container is ready");
        assert_eq!(exit_reason(init.state.as_ref()), Some("Completed"));
        assert!(!all_terminated(&g));
    }

    #[test]
    fn readiness_waits_for_the_probes_initial_delay() {
        let mut g = group("Succeeded", "Always", vec![("web", running())], vec![]);
        g.properties.containers[0].properties.readiness_probe = Some(models::ContainerProbe {
            initial_delay_seconds: Some(60),
            ..Default::default()
        });
        let started: Timestamp = T1.parse().unwrap();
        let at = |secs: i64| {
            pod_status_at(
                &g,
                started
                    .checked_add(jiff::SignedDuration::from_secs(secs))
                    .unwrap(),
            )
        };
        assert!(!cs(&at(59), 0).ready);
        assert!(cs(&at(60), 0).ready);
        assert_eq!(
            at(10).phase.as_deref(),
            Some("Running"),
            "running but not ready"
        );
    }

    #[test]
    fn phases_after_containers_end() {
        for (restart, codes, stopped, want) in [
            ("Never", [0, 0], false, "Succeeded"),
            ("Never", [0, 3], false, "Failed"),
            ("OnFailure", [0, 0], false, "Succeeded"),
            ("OnFailure", [0, 3], false, "Running"),
            ("Always", [0, 0], false, "Running"),
            ("Always", [0, 137], true, "Failed"),
            ("Always", [0, 0], true, "Succeeded"),
        ] {
            let mut g = group(
                "Succeeded",
                restart,
                vec![
                    ("a", exited(codes[0], "Completed")),
                    (
                        "b",
                        exited(codes[1], if codes[1] == 0 { "Completed" } else { "Error" }),
                    ),
                ],
                vec![],
            );
            if stopped {
                g.properties.instance_view =
                    Some(models::ContainerGroupPropertiesPropertiesInstanceView {
                        events: vec![],
                        state: Some("Stopped".into()),
                    });
            }
            let s = pod_status_at(&g, now());
            assert_eq!(
                s.phase.as_deref(),
                Some(want),
                "{restart} {codes:?} stopped={stopped}"
            );
            assert!(all_terminated(&g));
        }
        let s = pod_status_at(
            &group(
                "Succeeded",
                "Never",
                vec![("a", exited(3, "Error"))],
                vec![],
            ),
            now(),
        );
        let t = st(&s, 0).terminated.unwrap();
        assert_eq!(
            (t.exit_code, t.reason.as_deref(), t.message),
            (3, Some("Error"), None)
        );
        assert_eq!(
            (
                t.started_at.unwrap().0.as_second(),
                t.finished_at.unwrap().0.as_second()
            ),
            (
                T1.parse::<Timestamp>().unwrap().as_second(),
                T2.parse::<Timestamp>().unwrap().as_second()
            )
        );
        assert!(!cs(&s, 0).ready);
        assert_eq!(
            cs(&s, 0).container_id.as_deref(),
            Some("aci://g/a"),
            "it ran: it has an id"
        );
    }

    #[test]
    fn restarts_and_crash_loops() {
        let view = json!({"restartCount": 4,
            "currentState": {"state": "Waiting", "detailStatus": "CrashLoopBackOff: Back-off 40s restarting failed container"},
            "previousState": {"state": "Terminated", "startTime": T0, "finishTime": T1, "exitCode": 1, "detailStatus": "Error"}});
        let s = pod_status_at(
            &group("Succeeded", "Always", vec![("web", view.clone())], vec![]),
            now(),
        );
        assert_eq!(
            s.phase.as_deref(),
            Some("Running"),
            "a crash-looping container's pod stays Running"
        );
        let c = cs(&s, 0);
        assert_eq!(c.restart_count, 4);
        let w = c.state.as_ref().unwrap().waiting.clone().unwrap();
        assert_eq!(
            (w.reason.as_deref(), w.message.as_deref()),
            (
                Some("CrashLoopBackOff"),
                Some("Back-off 40s restarting failed container")
            )
        );
        let last = c.last_state.as_ref().unwrap().terminated.clone().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert!(!c.ready);
        assert_eq!(
            pod_status_at(
                &group("Succeeded", "OnFailure", vec![("web", view)], vec![]),
                now()
            )
            .phase
            .as_deref(),
            Some("Running")
        );
        // a restarted container that runs again
        let again = json!({"restartCount": 1, "currentState": {"state": "Running", "startTime": T2},
                           "previousState": {"state": "Terminated", "exitCode": 137, "detailStatus": "OOMKilled"}});
        let s = pod_status_at(
            &group("Succeeded", "Always", vec![("web", again)], vec![]),
            now(),
        );
        assert!(cs(&s, 0).ready);
        assert_eq!(
            exit_reason(cs(&s, 0).last_state.as_ref()),
            Some("OOMKilled")
        );
    }

    #[test]
    fn init_containers_gate_the_pod() {
        // one init container running, the app waits
        let s = pod_status_at(
            &group(
                "Succeeded",
                "Always",
                vec![("web", Value::Null)],
                vec![("a", exited(0, "Completed")), ("b", running())],
            ),
            now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            st(&s, 0).waiting.unwrap().reason.as_deref(),
            Some("PodInitializing")
        );
        let inits = s.init_container_statuses.as_ref().unwrap();
        assert!(inits[0].ready && !inits[1].ready);
        // a failed init container: fails the pod with Never, retries otherwise
        let failed = vec![("a", exited(2, "Error"))];
        let s = pod_status_at(
            &group(
                "Succeeded",
                "Never",
                vec![("web", Value::Null)],
                failed.clone(),
            ),
            now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let s = pod_status_at(
            &group("Succeeded", "OnFailure", vec![("web", Value::Null)], failed),
            now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        // waiting after a failure counts as failed
        let retry = json!({"restartCount": 1, "currentState": {"state": "Waiting", "detailStatus": "CrashLoopBackOff"},
                           "previousState": {"state": "Terminated", "exitCode": 1}});
        let s = pod_status_at(
            &group(
                "Succeeded",
                "Never",
                vec![("web", Value::Null)],
                vec![("a", retry)],
            ),
            now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn failed_provisioning_fails_the_pod_with_the_warning() {
        let mut g = group("Failed", "Always", vec![("web", Value::Null)], vec![]);
        g.properties.ip_address = None;
        g.properties.instance_view = Some(models::ContainerGroupPropertiesPropertiesInstanceView {
            events: vec![
                models::Event {
                    name: Some("Pulling".into()),
                    type_: Some("Normal".into()),
                    last_timestamp: Some(T0.parse().unwrap()),
                    ..Default::default()
                },
                models::Event {
                    name: Some("Failed".into()),
                    type_: Some("Warning".into()),
                    message: Some("Failed to pull image \"nope\"".into()),
                    last_timestamp: Some(T1.parse().unwrap()),
                    ..Default::default()
                },
            ],
            state: Some("Pending".into()),
        });
        let s = pod_status_at(&g, now());
        assert_eq!(
            (s.phase.as_deref(), s.reason.as_deref()),
            (Some("Failed"), Some("ProvisioningFailed"))
        );
        assert_eq!(s.message.as_deref(), Some("Failed to pull image \"nope\""));
        let t = st(&s, 0).terminated.unwrap();
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (128, Some("ContainerCannotRun"))
        );
        assert_eq!((s.pod_ip, s.start_time), (None, None));
        g.properties.provisioning_state = Some(ContainerGroupProvisioningState::Canceled);
        g.properties.instance_view = None;
        let s = pod_status_at(&g, now());
        assert_eq!(s.reason.as_deref(), Some("ProvisioningCanceled"));
        assert!(s.message.unwrap().contains("canceled"));
    }

    #[test]
    fn detail_status_splits_into_reason_and_message() {
        assert_eq!(
            split_detail(Some("ContainerCreating")),
            (Some("ContainerCreating".into()), None)
        );
        assert_eq!(
            split_detail(Some("ErrImagePull: manifest unknown")),
            (Some("ErrImagePull".into()), Some("manifest unknown".into()))
        );
        assert_eq!(
            split_detail(Some("pulling image x")),
            (None, Some("pulling image x".into()))
        );
        assert_eq!(split_detail(Some("  ")), (None, None));
        let s = state(&models::ContainerState {
            state: Some("Waiting".into()),
            detail_status: Some("pulling image".into()),
            ..Default::default()
        })
        .unwrap();
        let w = s.waiting.unwrap();
        assert_eq!(
            (w.reason.as_deref(), w.message.as_deref()),
            (Some("ContainerCreating"), Some("pulling image"))
        );
        // an unknown state with an exit code is terminated; without, waiting on that state
        let s = state(&models::ContainerState {
            state: Some("Stopped".into()),
            exit_code: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.terminated.unwrap().reason.as_deref(), Some("Completed"));
        let s = state(&models::ContainerState {
            state: Some("Repairing".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.waiting.unwrap().reason.as_deref(), Some("Repairing"));
        assert_eq!(state(&models::ContainerState::default()), None);
    }

    #[test]
    fn list_items_without_group_instance_view() {
        // ListResultContainerGroup: no group instanceView, containers carry theirs
        let g: ContainerGroup = serde_json::from_value(json!({
            "name": "g", "properties": {"osType": "Linux", "provisioningState": "Succeeded", "restartPolicy": "Never",
                "containers": [{"name": "job", "properties": {"image": "busybox", "resources": {"requests": {"cpu": 1, "memoryInGB": 1}},
                    "instanceView": {"restartCount": 0, "currentState": {"state": "Terminated", "exitCode": 0, "detailStatus": "Completed",
                                                                          "startTime": T0, "finishTime": T1}}}}]}}))
        .unwrap();
        let s = pod_status_at(&g, now());
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(s.init_container_statuses, None);
        assert!(all_terminated(&g));
    }
}
