//! The sweep: every task of the node, from ListTasks and DescribeTasks,
//! into the provider's state; duplicates stopped, garbage collected, and
//! the listing the core asked for.

use std::{collections::HashSet, time::Instant};

use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use skylet_provider::{BackendPod, Result};

use crate::{
    EcsProvider,
    client::{AwsError, ECS, all_pages, aws},
    gc::{Garbage, collect_garbage},
    state::{duplicates_of, listing_of},
};

impl EcsProvider {
    /// Every task ARN of the node with this desired status, all pages;
    /// adds the ListTasks calls made to `calls`.
    async fn list_tasks(
        &self,
        desired: DesiredStatus,
        calls: &mut u64,
    ) -> Result<Vec<String>, AwsError> {
        all_pages(|token| {
            *calls += 1;
            let req = self
                .inner
                .clients
                .ecs
                .list_tasks()
                .cluster(&self.inner.config.cluster)
                .started_by(&self.inner.started_by)
                .desired_status(desired.clone())
                .max_results(100)
                .set_next_token(token);
            async move {
                let r = req.send().await.map_err(aws(ECS, "ListTasks", self.m()))?;
                Ok((r.task_arns().to_vec(), r.next_token().map(str::to_owned)))
            }
        })
        .await
    }

    /// DescribeTasks for `arns`, 100 at a time, with tags.
    async fn describe(&self, arns: &[String]) -> Result<Vec<aws_sdk_ecs::types::Task>, AwsError> {
        let mut out = Vec::with_capacity(arns.len());
        for chunk in arns.chunks(100) {
            let r = self
                .inner
                .clients
                .ecs
                .describe_tasks()
                .cluster(&self.inner.config.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(aws(ECS, "DescribeTasks", self.m()))?;
            out.extend(r.tasks().iter().cloned());
        }
        Ok(out)
    }

    /// One sweep: refreshes the task cache, stops duplicates, collects
    /// garbage, and returns the listing.
    pub(crate) async fn sweep(&self) -> Result<Vec<BackendPod>> {
        let _g = self.inner.sweep.lock().await;
        let started = Instant::now();
        let mut list_calls = 0;
        let mut arns = self
            .list_tasks(DesiredStatus::Running, &mut list_calls)
            .await?;
        arns.extend(
            self.list_tasks(DesiredStatus::Stopped, &mut list_calls)
                .await?,
        );
        let listed: HashSet<String> = arns.iter().cloned().collect();
        let to_describe = self.state().to_describe(arns);
        let described = self.describe(&to_describe).await?;
        let describe_calls = u64::try_from(to_describe.len().div_ceil(100)).unwrap_or(u64::MAX);
        self.m().sweep_calls(ECS, "ListTasks", list_calls);
        self.m().sweep_calls(ECS, "DescribeTasks", describe_calls);

        // a task seen stopped is described once: one Event per failure
        for e in described.iter().filter_map(crate::failures::event) {
            tracing::info!(pod = %e.pod, reason = %e.reason, "{}", e.note);
            self.sink.event(e);
        }
        let (listing, duplicates, garbage) = {
            let mut st = self.state();
            st.record(&described);
            st.forget_unlisted(&listed, started);
            let listing = listing_of(&st);
            let duplicates = duplicates_of(&st);
            let garbage = if st.discovered {
                collect_garbage(&mut st, self.inner.config.gc_grace)
            } else {
                Garbage::default()
            };
            (listing, duplicates, garbage)
        };
        for arn in duplicates {
            tracing::warn!(task = %arn, "stopping a duplicate task of a pod");
            let _ = self
                .stop_task(&arn, "Deleted by skylet (duplicate task of one pod)")
                .await;
        }
        if !self.state().discovered {
            self.discover().await;
        }
        self.remove_garbage(garbage).await;
        Ok(listing)
    }

    /// Sweeps if this process has not listed the backend yet.
    pub(crate) async fn ensure_listed(&self) -> Result<()> {
        if !self.state().listed {
            self.sweep().await?;
        }
        Ok(())
    }
}
