//! The sweep: every task of the node, from ListTasks and DescribeTasks,
//! into the provider's state; duplicates stopped, garbage collected, and
//! the listing the core asked for.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use skylet_provider::{BackendPod, Result};

use crate::{
    EcsProvider,
    client::{AwsError, ECS, aws},
    gc::{Garbage, collect_garbage},
    state::{TaskEntry, duplicates_of, listing_of},
    status::{self, Observation},
};

/// How long a task that RunTask returned is kept in the cache even when a
/// listing lacks it (ListTasks is eventually consistent).
const FRESH: Duration = Duration::from_secs(60);

impl EcsProvider {
    /// Every task ARN of the node with this desired status, all pages;
    /// adds the ListTasks calls made to `calls`.
    async fn list_tasks(
        &self,
        desired: DesiredStatus,
        calls: &mut u64,
    ) -> Result<Vec<String>, AwsError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            *calls += 1;
            let r = self
                .inner
                .clients
                .ecs
                .list_tasks()
                .cluster(&self.inner.config.cluster)
                .started_by(&self.inner.started_by)
                .desired_status(desired.clone())
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(aws(ECS, "ListTasks", self.m()))?;
            out.extend(r.task_arns().iter().cloned());
            token = r.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
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
        let to_describe: Vec<String> = {
            let st = self.state();
            let mut seen = HashSet::new();
            arns.into_iter()
                .filter(|a| seen.insert(a.clone()))
                .filter(|a| !st.foreign.contains(a) && !st.tasks.get(a).is_some_and(|e| e.stopped))
                .collect()
        };
        let described = self.describe(&to_describe).await?;
        let describe_calls = u64::try_from(to_describe.len().div_ceil(100)).unwrap_or(u64::MAX);
        self.m().sweep_calls(ECS, "ListTasks", list_calls);
        self.m().sweep_calls(ECS, "DescribeTasks", describe_calls);

        let (listing, duplicates, garbage) = {
            let mut st = self.state();
            for t in &described {
                let Some(arn) = t.task_arn() else { continue };
                let obs = status::observe(t);
                let pod = match &obs {
                    Observation::Pod(bp) => bp.pod.clone(),
                    Observation::Finished(p) => p.clone(),
                    Observation::Foreign => {
                        st.foreign.insert(arn.to_owned());
                        continue;
                    }
                };
                st.tasks.insert(
                    arn.to_owned(),
                    TaskEntry {
                        pod,
                        td_arn: t.task_definition_arn().unwrap_or_default().to_owned(),
                        containers: t
                            .containers()
                            .iter()
                            .filter_map(|c| c.name().map(str::to_owned))
                            .collect(),
                        observation: obs,
                        stopped: status::is_stopped(t),
                        seen: Instant::now(),
                        created_at: t
                            .created_at()
                            .map_or(i64::MAX, aws_smithy_types::DateTime::secs),
                    },
                );
            }
            // forget what ECS no longer lists (unless just created)
            st.tasks.retain(|arn, e| {
                listed.contains(arn) || e.seen >= started || e.seen.elapsed() < FRESH
            });
            st.foreign.retain(|a| listed.contains(a));
            let uids: HashSet<String> = st.tasks.values().map(|e| e.pod.uid.clone()).collect();
            st.released.retain(|u| uids.contains(u));
            st.listed = true;
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
