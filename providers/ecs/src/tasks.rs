//! Starting and stopping a pod's task.

use skylet_provider::Result;

use crate::{
    EcsProvider,
    client::{ECS, aws},
    status,
};

impl EcsProvider {
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
