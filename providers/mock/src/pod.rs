//! A simulated pod and its containers: their states, the phase and the
//! status that follow from them, and what the state file keeps of them.

use std::{collections::HashMap, sync::Arc};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use skylet_provider::{BackendPod, CancellationToken, PodRef, ProviderError, Result};
use skylet_toysh::Sandbox;

use crate::{logs::LogBuffer, plan::Plan, probe::Life, state, usage::Usage};

/// A simulated pod.
pub(crate) struct MockPod {
    pub(crate) pod: PodRef,
    pub(crate) created: Timestamp,
    pub(crate) ip: String,
    pub(crate) phase: &'static str,
    pub(crate) init: Vec<Container>,
    pub(crate) app: Vec<Container>,
    /// Ephemeral containers (`kubectl debug`), added while it runs.
    pub(crate) ephemeral: Vec<Container>,
    /// Cancelled when the pod is deleted or dropped: running scripts stop.
    /// (A token, 100 bytes or so, where a watch channel took 350: the
    /// simulated backend holds one per pod.)
    pub(crate) stop: CancellationToken,
    /// Probes and restarts of app containers, by name.
    pub(crate) lives: HashMap<String, Life>,
}

/// A simulated container.
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) state: CState,
    pub(crate) logs: Arc<LogBuffer>,
    /// Environment and files, for exec.
    pub(crate) sandbox: Arc<Sandbox>,
    /// Its resource use (`load` in its program).
    pub(crate) usage: Arc<Usage>,
    /// How often it restarted (an image change restarts it).
    pub(crate) restarts: i32,
}

/// Where a simulated container is in its life.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum CState {
    Waiting,
    Running {
        since: Timestamp,
    },
    Exited {
        code: i32,
        started: Timestamp,
        finished: Timestamp,
    },
}

impl Drop for MockPod {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl MockPod {
    /// A pod just created from its plans: every container waiting.
    pub(crate) fn new(
        pod: PodRef,
        created: Timestamp,
        ip: String,
        plans: &[Plan],
        stop: CancellationToken,
    ) -> Self {
        let (init, app): (Vec<&Plan>, Vec<&Plan>) = plans.iter().partition(|p| p.init);
        let waiting = |plans: Vec<&Plan>| {
            plans
                .into_iter()
                .map(|p| Container {
                    name: p.name.clone(),
                    image: p.image.clone(),
                    state: CState::Waiting,
                    logs: Arc::default(),
                    sandbox: p.sandbox.clone(),
                    usage: Arc::default(),
                    restarts: 0,
                })
                .collect()
        };
        Self {
            pod,
            created,
            ip,
            phase: "Pending",
            init: waiting(init),
            app: waiting(app),
            ephemeral: Vec::new(),
            stop,
            lives: HashMap::new(),
        }
    }

    /// A pod the state file kept: its containers' states, no logs, no
    /// running programs.
    pub(crate) fn restored(saved: state::SavedPod) -> Self {
        let containers = |cs: Vec<state::SavedContainer>| {
            cs.into_iter()
                .map(|c| Container {
                    name: c.name,
                    image: c.image,
                    state: c.state,
                    logs: Arc::default(),
                    sandbox: Arc::default(),
                    usage: Arc::default(),
                    restarts: c.restarts,
                })
                .collect()
        };
        let mut pod = Self {
            pod: PodRef::new(saved.namespace, saved.name, saved.uid),
            created: saved.created,
            ip: saved.ip,
            phase: "Pending",
            init: containers(saved.init),
            app: containers(saved.app),
            ephemeral: containers(saved.ephemeral),
            stop: CancellationToken::new(),
            lives: HashMap::new(),
        };
        pod.phase = pod.compute_phase();
        pod
    }

    /// The container named `name`: init, app or ephemeral.
    pub(crate) fn container(&self, name: &str) -> Result<&Container> {
        self.init
            .iter()
            .chain(&self.app)
            .chain(&self.ephemeral)
            .find(|c| c.name == name)
            .ok_or_else(|| {
                ProviderError::NotFound(format!(
                    "container {name:?} is not in pod {}/{}",
                    self.pod.namespace, self.pod.name
                ))
            })
    }

    /// What the state file keeps of it.
    pub(crate) fn saved(&self) -> state::SavedPod {
        let conv = |cs: &[Container]| {
            cs.iter()
                .map(|c| state::SavedContainer {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: c.state.clone(),
                    restarts: c.restarts,
                })
                .collect()
        };
        state::SavedPod {
            namespace: self.pod.namespace.clone(),
            name: self.pod.name.clone(),
            uid: self.pod.uid.clone(),
            created: self.created,
            ip: self.ip.clone(),
            init: conv(&self.init),
            app: conv(&self.app),
            ephemeral: conv(&self.ephemeral),
        }
    }

    /// The phase its containers' states make.
    pub(crate) fn compute_phase(&self) -> &'static str {
        if self
            .init
            .iter()
            .any(|c| matches!(c.state, CState::Exited { code, .. } if code != 0))
        {
            return "Failed";
        }
        if self
            .app
            .iter()
            .any(|c| matches!(c.state, CState::Running { .. }))
            || self.lives.values().any(|l| l.backoff.is_some())
        {
            return "Running";
        }
        if !self.app.is_empty()
            && self
                .app
                .iter()
                .all(|c| matches!(c.state, CState::Exited { .. }))
        {
            let ok = self
                .app
                .iter()
                .all(|c| matches!(c.state, CState::Exited { code: 0, .. }));
            return if ok { "Succeeded" } else { "Failed" };
        }
        if self
            .app
            .iter()
            .any(|c| matches!(c.state, CState::Exited { .. }))
        {
            return "Running";
        }
        "Pending"
    }

    /// Its status, as pushed to the core.
    pub(crate) fn backend_pod(&self) -> BackendPod {
        let statuses =
            |cs: &[Container]| cs.iter().map(|c| c.status(&self.pod)).collect::<Vec<_>>();
        BackendPod {
            pod: self.pod.clone(),
            status: PodStatus {
                phase: Some(self.phase.into()),
                pod_ip: Some(self.ip.clone()),
                pod_ips: Some(vec![PodIP {
                    ip: self.ip.clone(),
                }]),
                start_time: Some(Time(self.created)),
                init_container_statuses: (!self.init.is_empty()).then(|| statuses(&self.init)),
                container_statuses: Some(
                    statuses(&self.app)
                        .into_iter()
                        .map(|mut s| {
                            if let Some(l) = self.lives.get(&s.name) {
                                l.apply(&mut s, &self.pod);
                            }
                            s
                        })
                        .collect(),
                ),
                ephemeral_container_statuses: (!self.ephemeral.is_empty())
                    .then(|| statuses(&self.ephemeral)),
                ..Default::default()
            },
        }
    }
}

impl Container {
    fn status(&self, pod: &PodRef) -> ContainerStatus {
        let (state, ready, started) = match &self.state {
            CState::Waiting => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        message: None,
                    }),
                    ..Default::default()
                },
                false,
                false,
            ),
            CState::Running { since } => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(*since)),
                    }),
                    ..Default::default()
                },
                true,
                true,
            ),
            CState::Exited {
                code,
                started,
                finished,
            } => (
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: *code,
                        reason: Some(if *code == 0 { "Completed" } else { "Error" }.into()),
                        started_at: Some(Time(*started)),
                        finished_at: Some(Time(*finished)),
                        container_id: Some(format!("mock://{}/{}", pod.uid, self.name)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                false,
                false,
            ),
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("mock://{}", self.image),
            container_id: Some(format!("mock://{}/{}", pod.uid, self.name)),
            ready,
            started: Some(started),
            restart_count: self.restarts,
            state: Some(state),
            ..Default::default()
        }
    }
}
