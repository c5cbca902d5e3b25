//! ECS runtime failures as Warning Events on the pod: a task that ECS
//! stopped (not skylet) because an image could not be pulled, an
//! essential container exited with an error, or capacity ran out gets one
//! Event with ECS's own words (`stopCode`, `stoppedReason`, and each
//! failed container's `reason` and exit code). The pod's status says the
//! same ([`crate::status`]); the Event is what `kubectl describe pod` and
//! `kubectl get events` show.
//!
//! | ECS says | Event reason |
//! |---|---|
//! | `CannotPullContainerError` (task or container) | `ErrImagePull` |
//! | stop code `SpotInterruption` | `SpotInterruption` |
//! | "Capacity is unavailable", "insufficient capacity" | `CapacityUnavailable` |
//! | stop code `EssentialContainerExited`, a non-zero exit code | `EssentialContainerExited` |
//! | any other stop by ECS, except every app container exiting 0 | `TaskStopped` |
//!
//! A task stopped by skylet (its `stoppedReason` is skylet's) or that
//! ended with every container exiting 0 (a finished job) has no Event.

use aws_sdk_ecs::types::{Task, TaskStopCode};
use skylet_provider::{EventType, PodEvent};

use crate::{
    names::{ContainerKind, container_kind},
    status,
};

/// The Warning Event for `task`, a task just seen stopped, if ECS stopped
/// it for a failure.
pub fn event(task: &Task) -> Option<PodEvent> {
    if !status::is_stopped(task) || status::stopped_by_skylet(task) {
        return None;
    }
    let pod = status::identity(task)?;
    let stop_code = task.stop_code();
    let why = task.stopped_reason().unwrap_or_default();
    let apps: Vec<_> = task
        .containers()
        .iter()
        .filter(|c| {
            matches!(
                container_kind(c.name().unwrap_or_default()),
                ContainerKind::App(_)
            )
        })
        .collect();
    let all_ok = !apps.is_empty() && apps.iter().all(|c| c.exit_code() == Some(0));
    let failed: Vec<String> = task
        .containers()
        .iter()
        .filter(|c| c.exit_code().is_some_and(|code| code != 0) || c.reason().is_some())
        .map(|c| {
            let mut s = format!("container {}", c.name().unwrap_or_default());
            if let Some(r) = c.reason() {
                s.push_str(&format!(": {r}"));
            }
            if let Some(code) = c.exit_code() {
                s.push_str(&format!(" (exit code {code})"));
            }
            s
        })
        .collect();
    let said = |needle: &str| {
        let needle = needle.to_ascii_lowercase();
        why.to_ascii_lowercase().contains(&needle)
            || task.containers().iter().any(|c| {
                c.reason()
                    .is_some_and(|r| r.to_ascii_lowercase().contains(&needle))
            })
    };
    let reason = if said("CannotPullContainerError") {
        "ErrImagePull"
    } else if stop_code == Some(&TaskStopCode::SpotInterruption) {
        "SpotInterruption"
    } else if said("capacity is unavailable") || said("insufficient capacity") {
        "CapacityUnavailable"
    } else if all_ok {
        return None;
    } else if stop_code == Some(&TaskStopCode::EssentialContainerExited) {
        "EssentialContainerExited"
    } else {
        "TaskStopped"
    };
    let id = task
        .task_arn()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default();
    let mut note = format!("ECS stopped task {id}");
    if let Some(code) = stop_code {
        note.push_str(&format!(" ({})", code.as_str()));
    }
    if !why.is_empty() {
        note.push_str(&format!(": {why}"));
    }
    if !failed.is_empty() {
        note.push_str(&format!("; {}", failed.join("; ")));
    }
    Some(PodEvent {
        pod,
        type_: EventType::Warning,
        reason: reason.into(),
        note,
        action: "Ecs",
        reporter: "skylet-ecs",
    })
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::{Container, Tag};

    use super::*;
    use crate::names::{TAG_POD_NAME, TAG_POD_NAMESPACE, TAG_POD_UID};

    fn stopped(
        code: Option<TaskStopCode>,
        why: &str,
        containers: &[(&str, Option<i32>, Option<&str>)],
    ) -> Task {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        Task::builder()
            .task_arn("arn:aws:ecs:us-east-1:1:task/c/abc123")
            .last_status("STOPPED")
            .set_stop_code(code)
            .stopped_reason(why)
            .tags(tag(TAG_POD_UID, "u1"))
            .tags(tag(TAG_POD_NAMESPACE, "ns"))
            .tags(tag(TAG_POD_NAME, "web"))
            .set_containers(Some(
                containers
                    .iter()
                    .map(|(n, code, reason)| {
                        Container::builder()
                            .name(*n)
                            .set_exit_code(*code)
                            .set_reason(reason.map(str::to_owned))
                            .build()
                    })
                    .collect(),
            ))
            .build()
    }

    #[test]
    fn failures_are_named_with_ecs_words() {
        let cases = [
            (
                stopped(
                    Some(TaskStopCode::TaskFailedToStart),
                    "CannotPullContainerError: pull access denied for private/app",
                    &[("main", None, None)],
                ),
                "ErrImagePull",
                "ECS stopped task abc123 (TaskFailedToStart): CannotPullContainerError: pull access denied for private/app",
            ),
            (
                stopped(
                    Some(TaskStopCode::EssentialContainerExited),
                    "Essential container in task exited",
                    &[("main", Some(3), None)],
                ),
                "EssentialContainerExited",
                "container main (exit code 3)",
            ),
            (
                stopped(
                    Some(TaskStopCode::SpotInterruption),
                    "Your Spot Task was interrupted.",
                    &[],
                ),
                "SpotInterruption",
                "Spot Task was interrupted",
            ),
            (
                stopped(
                    Some(TaskStopCode::TaskFailedToStart),
                    "Capacity is unavailable at this time. Please try again later or in a different availability zone",
                    &[],
                ),
                "CapacityUnavailable",
                "Capacity is unavailable",
            ),
            (
                stopped(
                    Some(TaskStopCode::TaskFailedToStart),
                    "ResourceInitializationError: unable to pull secrets",
                    &[],
                ),
                "TaskStopped",
                "ResourceInitializationError",
            ),
        ];
        for (task, reason, needle) in cases {
            let e = event(&task).expect("an Event");
            assert_eq!((e.reason.as_str(), e.type_), (reason, EventType::Warning));
            assert!(e.note.contains(needle), "{needle} not in {}", e.note);
            assert_eq!(e.pod.uid, "u1");
        }
    }

    #[test]
    fn a_finished_job_or_a_stop_by_skylet_has_no_event() {
        let done = stopped(
            Some(TaskStopCode::EssentialContainerExited),
            "Essential container in task exited",
            &[("main", Some(0), None)],
        );
        assert_eq!(event(&done), None);
        let deleted = stopped(
            Some(TaskStopCode::UserInitiated),
            "Deleted by skylet (pod ns/web)",
            &[("main", Some(137), None)],
        );
        assert_eq!(event(&deleted), None);
        let mut running = stopped(None, "", &[]);
        running.last_status = Some("RUNNING".into());
        assert_eq!(event(&running), None);
    }
}
