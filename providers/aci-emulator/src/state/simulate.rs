//! Groups at work: a generation's task waits out the create delay, then
//! runs the init containers in order and every container concurrently,
//! restarting them as the group's `restartPolicy` says, until the
//! generation is cancelled.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use skylet_toysh::{Output as ProgramOutput, Program, Sandbox};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Key;
use super::container::{CState, DEFAULT_LOAD, Output, Which, sandbox};
use super::events::add_event;
use super::group::Group;
use crate::App;

/// Starts the simulation of the group at `key` for the generation `token`:
/// after `delay` it is `Succeeded` and its containers run.
pub(crate) fn simulate(app: &Arc<App>, key: Key, token: CancellationToken, delay: Duration) {
    let span = tracing::info_span!("group", rg = %key.0, group = %key.1);
    app.tasks
        .spawn(run_group(app.clone(), key, token, delay).instrument(span));
}

/// Sleeps unless cancelled first; true when cancelled.
async fn cancelled_sleep(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = token.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

async fn run_group(app: Arc<App>, key: Key, token: CancellationToken, delay: Duration) {
    if cancelled_sleep(&token, delay).await {
        return;
    }
    let (n_init, n_main) = {
        let mut store = app.lock_store();
        let Some(group) = store.groups.get_mut(&key) else {
            return;
        };
        if token.is_cancelled() {
            return;
        }
        group.provisioning = "Succeeded";
        let op = group.pending_op.take();
        let counts = (group.init.len(), group.containers.len());
        if let Some(op) = op {
            store.finish_operation(&op, "Succeeded", None);
        }
        counts
    };
    tracing::debug!("provisioned");
    for idx in 0..n_init {
        let slot = Slot {
            app: &app,
            key: &key,
            which: Which::Init,
            idx,
        };
        match run_container(slot, &token).await {
            None => return,
            Some(0) => {}
            Some(code) => {
                tracing::debug!(code, "init container failed");
                if let Some(g) = app.lock_store().groups.get_mut(&key)
                    && !token.is_cancelled()
                {
                    g.init_failed = true;
                }
                return;
            }
        }
    }
    let runs = (0..n_main).map(|idx| {
        let (app, key, token) = (app.clone(), key.clone(), token.clone());
        async move {
            let slot = Slot {
                app: &app,
                key: &key,
                which: Which::Main,
                idx,
            };
            run_container(slot, &token).await
        }
    });
    futures::future::join_all(runs).await;
}

/// Runs one container until it ends for good (per the restart policy);
/// `None` when the generation was cancelled.
async fn run_container(slot: Slot<'_>, token: &CancellationToken) -> Option<i32> {
    let mut first = true;
    loop {
        let (program, sandbox, kill) = slot.start(token, first)?;
        first = false;
        let code = tokio::select! {
            () = token.cancelled() => return None,
            code = slot.execute(&program, &sandbox, &kill) => code,
        };
        let restart = slot.end(token, code)?;
        tracing::debug!(container = slot.idx, code, restart, "container ended");
        if !restart {
            return Some(code);
        }
        if cancelled_sleep(token, slot.app.config.restart_delay).await {
            return None;
        }
    }
}

/// One container of a group, as its generation's task sees it.
#[derive(Clone, Copy)]
struct Slot<'a> {
    app: &'a Arc<App>,
    key: &'a Key,
    which: Which,
    idx: usize,
}

impl Slot<'_> {
    /// Applies `f` to the group and the container, unless the generation
    /// was cancelled or either is gone.
    fn with<T>(
        &self,
        token: &CancellationToken,
        f: impl FnOnce(&mut Group) -> Option<T>,
    ) -> Option<T> {
        let mut store = self.app.lock_store();
        let group = store.groups.get_mut(self.key)?;
        if token.is_cancelled() {
            return None;
        }
        f(group)
    }

    /// Marks the container Running (its image pulled the first time, its
    /// previous state kept on a restart); returns what it runs.
    fn start(
        &self,
        token: &CancellationToken,
        first: bool,
    ) -> Option<(Program, Sandbox, Arc<Notify>)> {
        self.with(token, |group| {
            let host = group.name.clone();
            let ctr = group.ctr_mut(self.which, self.idx)?;
            if first {
                add_event(
                    &mut ctr.events,
                    "Pulling",
                    "Normal",
                    format!("pulling image \"{}\"", ctr.image),
                );
                add_event(
                    &mut ctr.events,
                    "Pulled",
                    "Normal",
                    format!("Successfully pulled image \"{}\"", ctr.image),
                );
            } else {
                ctr.previous = Some(ctr.current.clone());
                ctr.restart_count = ctr.restart_count.saturating_add(1);
            }
            add_event(
                &mut ctr.events,
                "Started",
                "Normal",
                format!("Started container {}", ctr.name),
            );
            ctr.current = CState::Running {
                start: Timestamp::now(),
            };
            ctr.set_load(DEFAULT_LOAD.0, Some(DEFAULT_LOAD.1));
            ctr.kill_code = None;
            Some((
                ctr.program.clone(),
                sandbox(&host, &ctr.env),
                ctr.kill.clone(),
            ))
        })
    }

    /// Marks the container Terminated with `code`; whether the restart
    /// policy starts it again (init containers: on failure, unless the
    /// group's policy is `Never`).
    fn end(&self, token: &CancellationToken, code: i32) -> Option<bool> {
        self.with(token, |group| {
            let policy = match self.which {
                Which::Init => "OnFailure",
                Which::Main => group.restart_policy(),
            };
            let restart = match policy {
                "Always" => true,
                "OnFailure" => code != 0,
                _ => false,
            };
            let restart =
                restart && !(self.which == Which::Init && group.restart_policy() == "Never");
            let ctr = group.ctr_mut(self.which, self.idx)?;
            ctr.current = CState::Terminated {
                start: ctr.current.start(),
                finish: Timestamp::now(),
                exit_code: code,
                detail: if code == 0 { "Completed" } else { "Error" },
            };
            let _ = ctr.output.send(Output::Ended);
            Some(restart)
        })
    }

    /// Runs a program until it ends or the container is told to exit
    /// ([`crate::Emulator::set_container_exit`]); one that understands
    /// nothing runs until then.
    async fn execute(&self, program: &Program, sandbox: &Sandbox, kill: &Notify) -> i32 {
        let script = async {
            if program.understood() {
                program.run(sandbox, self).await
            } else {
                std::future::pending::<i32>().await
            }
        };
        tokio::pin!(script);
        loop {
            tokio::select! {
                code = &mut script => return code,
                () = kill.notified() => {
                    if let Some(code) = self.kill_code() {
                        return code;
                    }
                }
            }
        }
    }

    /// The exit code the container was told to end with, taken.
    fn kill_code(&self) -> Option<i32> {
        self.app
            .lock_store()
            .groups
            .get_mut(self.key)
            .and_then(|g| g.ctr_mut(self.which, self.idx))
            .and_then(|c| c.kill_code.take())
    }
}

/// A container's program writes into its log.
impl ProgramOutput for Slot<'_> {
    fn line(&self, line: String) {
        if let Some(c) = self
            .app
            .lock_store()
            .groups
            .get_mut(self.key)
            .and_then(|g| g.ctr_mut(self.which, self.idx))
        {
            c.push_log(line);
        }
    }

    fn load(&self, millicores: u64, memory_bytes: Option<u64>) {
        if let Some(c) = self
            .app
            .lock_store()
            .groups
            .get_mut(self.key)
            .and_then(|g| g.ctr_mut(self.which, self.idx))
        {
            c.set_load(millicores, memory_bytes);
        }
    }
}
