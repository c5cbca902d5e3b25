//! Starting and stopping a pod's task.
//!
//! # When RunTask cannot place a task
//! RunTask answers 200 with an entry in `failures[]` when ECS cannot place
//! the task; [`placement_failure`] classifies it:
//!
//! | `reason` (and `detail`) | class |
//! |---|---|
//! | `RESOURCE:*` (`RESOURCE:CPU`, `RESOURCE:MEMORY`, `RESOURCE:ENI`, ...) | [`ProviderError::Capacity`] |
//! | "Capacity is unavailable at this time" (Fargate has no room in the zone) | [`ProviderError::Capacity`] |
//! | "You've reached the limit on the number of (spot) tasks you can run concurrently" (the account's Fargate or Fargate Spot task quota) | [`ProviderError::Capacity`] |
//! | anything else (`MISSING`, `AGENT`, `ATTRIBUTE`, ...) | [`ProviderError::Transient`] |
//!
//! Capacity is not the pod's fault and may pass, or be found on another
//! backend: the core fails a pod that a controller owns (its controller
//! replaces it elsewhere) and retries a bare one. Throttling is an error
//! answer, not a failure entry, and stays [`ProviderError::Throttled`]
//! (`client`).

use aws_sdk_ecs::{
    operation::run_task::builders::RunTaskFluentBuilder,
    types::{
        AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, LaunchType,
        NetworkConfiguration, Tag, Task, TaskOverride,
    },
};
use skylet_provider::{BackendPod, PodRef, ProviderError, Result};

use crate::{
    EcsProvider,
    client::{ECS, aws},
    state::TaskEntry,
    status::{self, Observation},
    translate::Plan,
};

impl EcsProvider {
    /// RunTask for `pod` from task definition `td_arn`, with ECS Exec when
    /// `exec`; records the task.
    ///
    /// # Errors
    /// When ECS cannot place the task, as [`placement_failure`] classifies
    /// it (capacity, else transient); when the task definition was removed
    /// meanwhile, the template is forgotten so that the next attempt
    /// registers it again.
    pub(crate) async fn run_task(
        &self,
        plan: &Plan,
        td_arn: &str,
        pod: &PodRef,
        exec: bool,
    ) -> Result<()> {
        let req = self.run_task_request(plan, td_arn, pod, exec)?;
        let out = match req.send().await.map_err(aws(ECS, "RunTask", self.m())) {
            Ok(out) => out,
            Err(e)
                if e.is("InvalidParameterException")
                    && e.message().contains("TaskDefinition is inactive") =>
            {
                // removed under our feet: register again next time
                self.state().templates.remove(&plan.key);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(f) = out.failures().first() {
            let e = placement_failure(
                f.reason().unwrap_or_default(),
                f.detail().unwrap_or_default(),
            );
            tracing::info!(pod = %pod, class = e.class().as_str(), error = %e, "RunTask could not place the task");
            return Err(e);
        }
        self.record_started(out.tasks(), pod, td_arn, &plan.family);
        Ok(())
    }

    /// The RunTask call: one task in the node's subnets, tagged, with the
    /// plan's overrides, on FARGATE or FARGATE_SPOT, with ECS Exec when
    /// `exec` (`crate::exec`).
    fn run_task_request(
        &self,
        plan: &Plan,
        td_arn: &str,
        pod: &PodRef,
        exec: bool,
    ) -> Result<RunTaskFluentBuilder> {
        let cfg = &self.inner.config;
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(cfg.subnets.clone()))
            .set_security_groups(
                (!cfg.security_groups.is_empty()).then(|| cfg.security_groups.clone()),
            )
            .assign_public_ip(if cfg.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(ProviderError::transient)?;
        let mut req = self
            .inner
            .clients
            .ecs
            .run_task()
            .cluster(&cfg.cluster)
            .task_definition(td_arn)
            .count(1)
            .started_by(&self.inner.started_by)
            .client_token(&pod.uid)
            .enable_execute_command(exec)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .set_platform_version(cfg.platform_version.clone())
            .set_tags(Some(
                plan.tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ));
        if !plan.overrides.is_empty() {
            req = req.overrides(
                TaskOverride::builder()
                    .set_container_overrides(Some(plan.container_overrides()))
                    .build(),
            );
        }
        Ok(if plan.spot {
            req.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider("FARGATE_SPOT")
                    .weight(1)
                    .build()
                    .map_err(ProviderError::transient)?,
            )
        } else {
            req.launch_type(LaunchType::Fargate)
        })
    }

    /// Records the tasks RunTask started for `pod`.
    fn record_started(&self, tasks: &[Task], pod: &PodRef, td_arn: &str, family: &str) {
        let mut st = self.state();
        for t in tasks {
            let Some(arn) = t.task_arn() else { continue };
            tracing::info!(pod = %pod, task = %arn, family = %family, "started a task");
            let mut obs = status::observe(t);
            if matches!(obs, Observation::Foreign) {
                // tags not echoed: the pod is known anyway
                obs = Observation::Pod(Box::new(BackendPod {
                    pod: pod.clone(),
                    status: status::pod_status(t),
                }));
            }
            st.tasks.insert(
                arn.to_owned(),
                TaskEntry::new(t, pod.clone(), td_arn.to_owned(), obs),
            );
        }
    }

    /// StopTask; whether the task has stopped (or is gone).
    pub(crate) async fn stop_task(&self, arn: &str, reason: &str) -> Result<bool> {
        let r = self
            .inner
            .clients
            .ecs
            .stop_task()
            .cluster(&self.inner.config.cluster)
            .task(arn)
            .reason(reason)
            .send()
            .await
            .map_err(aws(ECS, "StopTask", self.m()));
        match r {
            Ok(out) => {
                let stopped = out.task().is_some_and(status::is_stopped);
                if let Some(t) = out.task() {
                    let mut st = self.state();
                    if let Some(e) = st.tasks.get_mut(arn) {
                        e.observation = status::observe(t);
                        e.stopped = stopped;
                    }
                }
                Ok(stopped)
            }
            // the task is gone (ECS forgets stopped tasks after about an hour)
            Err(e) if e.is("InvalidParameterException") && e.message().contains("not found") => {
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What a RunTask `failures[]` entry with `reason` and `detail` means (see
/// the module docs): [`ProviderError::Capacity`] when ECS has no room for
/// the task now (a `RESOURCE:*` reason, Fargate capacity unavailable, the
/// account's concurrent task or Spot task limit), else
/// [`ProviderError::Transient`]. The message quotes ECS's words.
pub(crate) fn placement_failure(reason: &str, detail: &str) -> ProviderError {
    let said = match (reason.trim(), detail.trim()) {
        (r, "") => r.to_owned(),
        ("", d) => d.to_owned(),
        (r, d) => format!("{r} ({d})"),
    };
    let lower = said.to_lowercase();
    let capacity = reason.trim_start().starts_with("RESOURCE:")
        || lower.contains("capacity is unavailable")
        || lower.contains("reached the limit on the number of");
    if capacity {
        let what = if lower.contains("spot tasks") {
            "the account's Fargate Spot task limit is reached"
        } else if lower.contains("reached the limit on the number of") {
            "the account's Fargate task limit is reached"
        } else if lower.contains("capacity is unavailable") {
            "Fargate has no capacity in the subnets' zones now"
        } else {
            "no resources to place the task"
        };
        ProviderError::Capacity(format!("ECS RunTask: {what}: {said}"))
    } else {
        ProviderError::transient(format!("RunTask could not place the task: {said}"))
    }
}

#[cfg(test)]
mod tests {
    use skylet_provider::ErrorClass;

    use super::*;

    fn class(reason: &str, detail: &str) -> ErrorClass {
        placement_failure(reason, detail).class()
    }

    #[test]
    fn resource_failures_are_capacity() {
        for reason in [
            "RESOURCE:CPU",
            "RESOURCE:MEMORY",
            "RESOURCE:ENI",
            "RESOURCE:PORTS_TCP",
            "RESOURCE:GPU",
        ] {
            assert_eq!(class(reason, ""), ErrorClass::Capacity, "{reason}");
        }
        let e = placement_failure("RESOURCE:MEMORY", "");
        assert_eq!(
            e.to_string(),
            "ECS RunTask: no resources to place the task: RESOURCE:MEMORY"
        );
    }

    #[test]
    fn fargate_capacity_unavailable_is_capacity() {
        let reason = "Capacity is unavailable at this time. Please try again later or in a different availability zone";
        assert_eq!(class(reason, ""), ErrorClass::Capacity);
        let text = placement_failure(reason, "").to_string();
        assert!(text.contains("no capacity in the subnets' zones"), "{text}");
        assert!(
            text.contains("Capacity is unavailable"),
            "ECS's words: {text}"
        );
        // in the detail, in other case
        assert_eq!(
            class("", "capacity is unavailable at this time"),
            ErrorClass::Capacity
        );
    }

    #[test]
    fn the_spot_and_on_demand_task_limits_are_capacity_naming_the_quota() {
        for apostrophe in ["'", "\u{2019}"] {
            let spot = format!(
                "You{apostrophe}ve reached the limit on the number of spot tasks you can run concurrently. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
            );
            let e = placement_failure(&spot, "");
            assert_eq!(e.class(), ErrorClass::Capacity, "{spot}");
            assert!(e.to_string().contains("Fargate Spot task limit"), "{e}");
            let on_demand = spot.replace("spot tasks", "tasks");
            let e = placement_failure(&on_demand, "");
            assert_eq!(e.class(), ErrorClass::Capacity, "{on_demand}");
            assert!(e.to_string().contains("Fargate task limit"), "{e}");
        }
    }

    #[test]
    fn other_failures_stay_transient() {
        for (reason, detail) in [
            ("MISSING", ""),
            ("AGENT", ""),
            (
                "ATTRIBUTE",
                "ecs.capability.secrets.asm.environment-variables",
            ),
            ("LOCATION", "no container instance in the zone"),
            ("", ""),
            // a resource word that is not a RESOURCE: reason
            ("Task failed ELB health checks", "resources"),
        ] {
            let e = placement_failure(reason, detail);
            assert_eq!(e.class(), ErrorClass::Transient, "{reason} {detail}");
            assert!(
                e.to_string().contains("RunTask could not place the task"),
                "{e}"
            );
        }
        assert_eq!(
            placement_failure("ATTRIBUTE", "ecs.capability.x").to_string(),
            "transient backend error: RunTask could not place the task: ATTRIBUTE (ecs.capability.x)"
        );
    }
}
