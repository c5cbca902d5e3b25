//! Starting and stopping a pod's task.

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
    /// RunTask for `pod` from task definition `td_arn`; records the task.
    ///
    /// # Errors
    /// Transient when ECS cannot place the task; when the task definition
    /// was removed meanwhile, the template is forgotten so that the next
    /// attempt registers it again.
    pub(crate) async fn run_task(&self, plan: &Plan, td_arn: &str, pod: &PodRef) -> Result<()> {
        let req = self.run_task_request(plan, td_arn, pod)?;
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
            return Err(ProviderError::transient(format!(
                "RunTask could not place the task: {} {}",
                f.reason().unwrap_or_default(),
                f.detail().unwrap_or_default()
            )));
        }
        self.record_started(out.tasks(), pod, td_arn, &plan.family);
        Ok(())
    }

    /// The RunTask call: one task in the node's subnets, tagged, with the
    /// plan's overrides, on FARGATE or FARGATE_SPOT.
    fn run_task_request(
        &self,
        plan: &Plan,
        td_arn: &str,
        pod: &PodRef,
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
            .enable_execute_command(false)
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
