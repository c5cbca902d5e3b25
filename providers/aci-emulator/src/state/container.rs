//! A simulated container: its state (current and previous), restarts,
//! events, log and live output, and what its programs see.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};
use skylet_toysh::{Program, Sandbox};
use tokio::sync::{Notify, broadcast};

use super::events::{Event, add_event, render_events};

/// Log lines kept per container; older ones are dropped.
const MAX_LOG_LINES: usize = 10_000;

/// A container's state.
#[derive(Clone, Debug)]
pub(crate) enum CState {
    /// Not started yet.
    Waiting { detail: &'static str },
    /// Running since.
    Running { start: Timestamp },
    /// Ended.
    Terminated {
        start: Option<Timestamp>,
        finish: Timestamp,
        exit_code: i32,
        detail: &'static str,
    },
}

impl CState {
    pub(super) fn render(&self) -> Value {
        match self {
            Self::Waiting { detail } => json!({"state": "Waiting", "detailStatus": detail}),
            Self::Running { start } => {
                json!({"state": "Running", "startTime": start.to_string(), "detailStatus": ""})
            }
            Self::Terminated {
                start,
                finish,
                exit_code,
                detail,
            } => {
                let mut v = json!({
                    "state": "Terminated",
                    "finishTime": finish.to_string(),
                    "exitCode": exit_code,
                    "detailStatus": detail,
                });
                if let (Some(start), Some(obj)) = (start, v.as_object_mut()) {
                    obj.insert("startTime".into(), Value::String(start.to_string()));
                }
                v
            }
        }
    }

    pub(super) fn start(&self) -> Option<Timestamp> {
        match self {
            Self::Running { start } => Some(*start),
            Self::Terminated { start, .. } => *start,
            Self::Waiting { .. } => None,
        }
    }
}

/// What a container printed, for attach.
#[derive(Clone, Debug)]
pub(crate) enum Output {
    /// A log line (without its newline).
    Line(String),
    /// The container ended.
    Ended,
}

/// Which list a container is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// `initContainers`.
    Init,
    /// `containers`.
    Main,
}

/// A simulated container.
pub(crate) struct Ctr {
    pub(crate) name: String,
    pub(super) image: String,
    pub(super) program: Program,
    /// Its environment, secure values included (what the container sees).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) current: CState,
    pub(super) previous: Option<CState>,
    pub(super) restart_count: i32,
    pub(super) events: Vec<Event>,
    pub(crate) logs: Vec<(Timestamp, String)>,
    pub(crate) output: broadcast::Sender<Output>,
    pub(super) kill: Arc<Notify>,
    pub(super) kill_code: Option<i32>,
    /// What it uses over time, for Azure Monitor's metrics: from each
    /// instant on, millicores and bytes (`load` in its program sets them;
    /// a start resets them to [`DEFAULT_LOAD`]).
    pub(crate) load: Vec<Load>,
}

/// A container's resource use from `at` on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Load {
    pub(crate) at: Timestamp,
    pub(crate) millicores: u64,
    pub(crate) memory: u64,
}

/// What a container uses when its program does not say: 5 millicores and
/// 20 MiB, as the simulated backend's containers.
pub(crate) const DEFAULT_LOAD: (u64, u64) = (5, 20 << 20);

/// Changes of load kept per container.
const MAX_LOAD_CHANGES: usize = 1000;

impl Ctr {
    pub(super) fn new(spec: &Value) -> Self {
        let props = spec.get("properties");
        let command: Vec<String> = props
            .and_then(|p| p.get("command"))
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let env = props
            .and_then(|p| p.get("environmentVariables"))
            .and_then(Value::as_array)
            .map(|vars| {
                vars.iter()
                    .filter_map(|v| {
                        let name = v.get("name")?.as_str()?.to_owned();
                        let value = v
                            .get("value")
                            .or_else(|| v.get("secureValue"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        Some((name, value.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            name: spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            image: props
                .and_then(|p| p.get("image"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            program: Program::parse(&command),
            env,
            current: CState::Waiting {
                detail: "ContainerCreating",
            },
            previous: None,
            restart_count: 0,
            events: Vec::new(),
            logs: Vec::new(),
            output: broadcast::channel(1024).0,
            kill: Arc::new(Notify::new()),
            kill_code: None,
            load: Vec::new(),
        }
    }

    /// From now on it uses `millicores` and `memory` bytes (the last
    /// memory when `None`).
    pub(super) fn set_load(&mut self, millicores: u64, memory: Option<u64>) {
        let memory = memory
            .or_else(|| self.load.last().map(|l| l.memory))
            .unwrap_or(DEFAULT_LOAD.1);
        if self.load.len() >= MAX_LOAD_CHANGES {
            self.load.drain(..self.load.len() + 1 - MAX_LOAD_CHANGES);
        }
        self.load.push(Load {
            at: Timestamp::now(),
            millicores,
            memory,
        });
    }

    /// The load in effect at `t`, if it was running then (it ran from its
    /// first load change on; a terminated container ran until it finished).
    pub(crate) fn load_at(&self, t: Timestamp) -> Option<Load> {
        let l = self.load.iter().rev().find(|l| l.at <= t)?;
        match &self.current {
            CState::Terminated { finish, .. } if *finish < t => None,
            CState::Waiting { .. } => None,
            _ => Some(*l),
        }
    }

    pub(super) fn instance_view(&self) -> Value {
        let mut v = json!({
            "restartCount": self.restart_count,
            "currentState": self.current.render(),
            "events": render_events(&self.events),
        });
        if let (Some(prev), Some(obj)) = (&self.previous, v.as_object_mut()) {
            obj.insert("previousState".into(), prev.render());
        }
        v
    }

    /// Ends the container now (stop, delete): `Terminated` with 137 unless
    /// it already ended.
    pub(super) fn kill_now(&mut self) {
        if !matches!(self.current, CState::Terminated { .. }) {
            self.current = CState::Terminated {
                start: self.current.start(),
                finish: Timestamp::now(),
                exit_code: 137,
                detail: "Killed",
            };
            add_event(
                &mut self.events,
                "Killing",
                "Normal",
                format!("Killing container {}", self.name),
            );
        }
        let _ = self.output.send(Output::Ended);
    }

    /// Whether it is running now (exec/attach need that).
    pub(crate) fn running(&self) -> bool {
        matches!(self.current, CState::Running { .. })
    }

    pub(super) fn push_log(&mut self, line: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            self.logs.drain(..self.logs.len() + 1 - MAX_LOG_LINES);
        }
        self.logs.push((Timestamp::now(), line.clone()));
        let _ = self.output.send(Output::Line(line));
    }
}

/// What a container of group `host` sees: a base environment, then its
/// variables (secure values included: the container sees them); no files.
pub(crate) fn sandbox(host: &str, env: &[(String, String)]) -> Sandbox {
    let base = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOSTNAME", host),
    ];
    Sandbox {
        env: base
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .chain(env.iter().cloned())
            .collect(),
        files: Default::default(),
    }
}
