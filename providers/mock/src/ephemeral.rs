//! Ephemeral containers (`kubectl debug`) of a simulated pod: each starts
//! Running when the core hands it over, runs its program in the toy shell
//! like an app container (without resolved environment or volumes: the
//! core resolves none for them), and is reported in
//! `ephemeralContainerStatuses`; exec and attach reach it by name.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use skylet_provider::{PodRef, ProviderError, ResolvedPod, Result};

use crate::{Inner, plan, pod, pod::CState, run::Out, usage::Usage};

/// Starts the ephemeral containers of `pod` that do not run yet; a
/// program runs in a job, one without a program runs until the pod is
/// deleted.
pub(crate) fn start(inner: &Arc<Inner>, pod: &Pod) -> Result<()> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let now = Timestamp::now();
    let mut started = Vec::new();
    let stop = {
        let mut pods = inner.lock();
        let p = pods.get_mut(&uid).ok_or_else(|| {
            ProviderError::NotFound(format!(
                "pod {} is not running in the mock backend",
                PodRef::of(pod)
            ))
        })?;
        for plan in plans(pod) {
            if p.ephemeral.iter().any(|c| c.name == plan.name) {
                continue;
            }
            let c = pod::Container {
                name: plan.name.clone(),
                image: plan.image.clone(),
                state: CState::Running { since: now },
                logs: Arc::default(),
                sandbox: plan.sandbox.clone(),
                usage: Arc::new(Usage::starting(now)),
                restarts: 0,
            };
            c.logs
                .push(format!("mock: started ephemeral container {}", plan.name));
            started.push((p.ephemeral.len(), c.logs.clone(), c.usage.clone(), plan));
            p.ephemeral.push(c);
        }
        p.stop.clone()
    };
    inner.publish(&uid);
    for (i, logs, usage, plan) in started {
        if plan.program.is_empty() {
            continue;
        }
        let weak = Arc::downgrade(inner);
        let uid = uid.clone();
        let stop = stop.clone();
        let job = async move {
            let out = Out { logs, usage };
            let code = tokio::select! {
                code = plan.program.run(&plan.sandbox, &out) => code,
                () = stop.cancelled() => return,
            };
            let Some(inner) = weak.upgrade() else { return };
            let finished = Timestamp::now();
            inner.update(&uid, |p| {
                if let Some(c) = p.ephemeral.get_mut(i) {
                    c.state = CState::Exited {
                        code,
                        started: now,
                        finished,
                    };
                    c.logs.close();
                }
            });
        };
        // run() has the receiver while the backend runs
        let _ = inner.jobs.send(Box::pin(job));
    }
    Ok(())
}

/// The plans of `pod`'s ephemeral containers, as if they were its app
/// containers (an ephemeral container is a container with fewer fields).
fn plans(pod: &Pod) -> Vec<plan::Plan> {
    let containers: Vec<Container> = pod
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(|e| {
            serde_json::to_value(e)
                .and_then(serde_json::from_value::<Container>)
                .ok()
        })
        .collect();
    let as_app = Pod {
        metadata: pod.metadata.clone(),
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        status: None,
    };
    plan::plans(&ResolvedPod::bare(as_app))
}
