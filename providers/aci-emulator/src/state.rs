//! Container groups, their simulated containers and the long-running
//! operations: the emulator's whole world, behind one mutex in
//! [`crate::App`].
//!
//! Each group generation (create, update, start, restart) gets a
//! [`CancellationToken`] and one task that waits `create_delay`, marks the
//! group `Succeeded`, runs the init containers in order and then every
//! container concurrently, each its own program in the toy shell of
//! `skylet-toysh` (one that understands nothing in its command, or has
//! none, is a server: it runs until stopped). When a program ends the container is `Terminated` with its exit code and the
//! group's `restartPolicy` decides whether it starts again
//! (`restartCount + 1`, `previousState` = the terminated state, another
//! `Started` event). Stop, delete and replace cancel the generation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use skylet_toysh::{Output as ProgramOutput, Program, Sandbox};

use crate::App;

/// Log lines kept per container; older ones are dropped.
const MAX_LOG_LINES: usize = 10_000;

/// A group's key: its resource group and name, both lowercased (ARM names
/// are case-insensitive).
pub(crate) type Key = (String, String);

/// The key of `rg`/`name`.
pub(crate) fn key(rg: &str, name: &str) -> Key {
    (rg.to_ascii_lowercase(), name.to_ascii_lowercase())
}

/// The whole state.
#[derive(Default)]
pub(crate) struct Store {
    pub(crate) groups: BTreeMap<Key, Group>,
    pub(crate) operations: HashMap<String, OpRecord>,
    ip_counter: u32,
}

/// What a long-running operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// PUT (create or update).
    Create,
    /// DELETE.
    Delete,
    /// POST start.
    Start,
}

/// A long-running operation's status resource.
#[derive(Clone, Debug)]
pub(crate) struct OpRecord {
    pub(crate) kind: OpKind,
    pub(crate) status: &'static str,
    pub(crate) started: Timestamp,
    pub(crate) ended: Option<Timestamp>,
    pub(crate) error: Option<(String, String)>,
}

impl Store {
    /// Records a new operation, `InProgress` or already `Succeeded`.
    pub(crate) fn new_operation(&mut self, kind: OpKind, done: bool) -> String {
        let id = crate::token::uuid();
        let now = Timestamp::now();
        let record = OpRecord {
            kind,
            status: if done { "Succeeded" } else { "InProgress" },
            started: now,
            ended: done.then_some(now),
            error: None,
        };
        self.operations.insert(id.clone(), record);
        id
    }

    /// Ends an operation.
    pub(crate) fn finish_operation(
        &mut self,
        id: &str,
        status: &'static str,
        error: Option<(String, String)>,
    ) {
        if let Some(op) = self.operations.get_mut(id)
            && op.status == "InProgress"
        {
            op.status = status;
            op.ended = Some(Timestamp::now());
            op.error = error;
        }
    }

    /// The next simulated IP: private `10.0.x.y` or public `20.x.y.z`.
    pub(crate) fn next_ip(&mut self, private: bool) -> String {
        self.ip_counter += 1;
        let n = self.ip_counter;
        if private {
            format!("10.0.{}.{}", (n >> 8) & 0xff, (n & 0xff).max(4))
        } else {
            format!(
                "20.{}.{}.{}",
                50 + ((n >> 16) & 0x7f),
                (n >> 8) & 0xff,
                (n & 0xff).max(1)
            )
        }
    }
}

/// An instance-view event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    name: &'static str,
    message: String,
    kind: &'static str,
    count: i32,
    first: Timestamp,
    last: Timestamp,
}

fn add_event(events: &mut Vec<Event>, name: &'static str, kind: &'static str, message: String) {
    let now = Timestamp::now();
    match events.iter_mut().find(|e| e.name == name) {
        Some(e) => {
            e.count = e.count.saturating_add(1);
            e.last = now;
            e.message = message;
        }
        None => events.push(Event {
            name,
            message,
            kind,
            count: 1,
            first: now,
            last: now,
        }),
    }
}

fn render_events(events: &[Event]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                json!({
                    "count": e.count,
                    "firstTimestamp": e.first.to_string(),
                    "lastTimestamp": e.last.to_string(),
                    "name": e.name,
                    "message": e.message,
                    "type": e.kind,
                })
            })
            .collect(),
    )
}

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
    fn render(&self) -> Value {
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

    fn start(&self) -> Option<Timestamp> {
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
    image: String,
    program: Program,
    /// Its environment, secure values included (what the container sees).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) current: CState,
    previous: Option<CState>,
    restart_count: i32,
    events: Vec<Event>,
    pub(crate) logs: Vec<(Timestamp, String)>,
    pub(crate) output: broadcast::Sender<Output>,
    kill: Arc<Notify>,
    kill_code: Option<i32>,
}

impl Ctr {
    fn new(spec: &Value) -> Self {
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
        }
    }

    fn instance_view(&self) -> Value {
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
    fn kill_now(&mut self) {
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

    fn push_log(&mut self, line: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            self.logs.drain(..self.logs.len() + 1 - MAX_LOG_LINES);
        }
        self.logs.push((Timestamp::now(), line.clone()));
        let _ = self.output.send(Output::Line(line));
    }
}

/// A container group.
pub(crate) struct Group {
    pub(crate) rg: String,
    pub(crate) name: String,
    /// The cleaned request body (readOnly dropped), secrets included.
    pub(crate) body: Value,
    pub(crate) provisioning: &'static str,
    created: Timestamp,
    modified: Timestamp,
    stopped: bool,
    init_failed: bool,
    pub(crate) ip: Option<String>,
    principal_id: String,
    pub(crate) init: Vec<Ctr>,
    pub(crate) containers: Vec<Ctr>,
    pub(crate) generation: CancellationToken,
    pub(crate) pending_op: Option<String>,
    events: Vec<Event>,
}

impl Group {
    /// A new group from its validated body, `Creating`.
    pub(crate) fn new(rg: &str, name: &str, body: Value, ip: Option<String>) -> Self {
        let now = Timestamp::now();
        let mut group = Self {
            rg: rg.to_owned(),
            name: name.to_owned(),
            body: Value::Null,
            provisioning: "Creating",
            created: now,
            modified: now,
            stopped: false,
            init_failed: false,
            ip,
            principal_id: crate::token::uuid(),
            init: Vec::new(),
            containers: Vec::new(),
            generation: CancellationToken::new(),
            pending_op: None,
            events: Vec::new(),
        };
        group.replace_body(body);
        group
    }

    /// Takes a new body (update): containers start over.
    pub(crate) fn replace_body(&mut self, body: Value) {
        let list = |field: &str| -> Vec<Ctr> {
            body.pointer(&format!("/properties/{field}"))
                .and_then(Value::as_array)
                .map(|c| c.iter().map(Ctr::new).collect())
                .unwrap_or_default()
        };
        self.containers = list("containers");
        self.init = list("initContainers");
        self.body = body;
        self.modified = Timestamp::now();
        self.stopped = false;
        self.init_failed = false;
    }

    /// Whether an IP was requested, and whether it is private.
    pub(crate) fn wants_ip(body: &Value) -> Option<bool> {
        let props = body.get("properties")?;
        let ip = props.get("ipAddress")?;
        let has_subnets = props
            .get("subnetIds")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        Some(has_subnets || ip.get("type").and_then(Value::as_str) == Some("Private"))
    }

    /// The container named `name`, in either list.
    pub(crate) fn container(&self, name: &str) -> Option<&Ctr> {
        self.containers
            .iter()
            .chain(self.init.iter())
            .find(|c| c.name == name)
    }

    fn ctr_mut(&mut self, which: Which, idx: usize) -> Option<&mut Ctr> {
        match which {
            Which::Init => self.init.get_mut(idx),
            Which::Main => self.containers.get_mut(idx),
        }
    }

    fn restart_policy(&self) -> &str {
        self.body
            .pointer("/properties/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always")
    }

    /// The sum of the containers' CPU requests.
    pub(crate) fn cpu(&self) -> f64 {
        requested_cpu(&self.body)
    }

    /// `instanceView.state` as ACI reports it.
    pub(crate) fn state(&self) -> &'static str {
        if self.stopped {
            return "Stopped";
        }
        if self.init_failed {
            return "Failed";
        }
        if self.provisioning != "Succeeded" {
            return "Pending";
        }
        if self.containers.iter().any(Ctr::running) {
            return "Running";
        }
        let ended: Vec<i32> = self
            .containers
            .iter()
            .filter_map(|c| match c.current {
                CState::Terminated { exit_code, .. } => Some(exit_code),
                _ => None,
            })
            .collect();
        if ended.is_empty() || ended.len() < self.containers.len() {
            return "Pending";
        }
        let restarts = match self.restart_policy() {
            "Always" => true,
            "OnFailure" => ended.iter().any(|c| *c != 0),
            _ => false,
        };
        match (restarts, ended.iter().all(|c| *c == 0)) {
            (true, _) => "Running",
            (false, true) => "Succeeded",
            (false, false) => "Failed",
        }
    }

    /// Stops every container (POST stop): `Terminated`, 137 unless ended.
    pub(crate) fn stop(&mut self) {
        self.generation.cancel();
        self.stopped = true;
        for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
            c.kill_now();
        }
    }

    /// Cancels the running generation and starts a fresh token.
    pub(crate) fn new_generation(&mut self) -> CancellationToken {
        self.generation.cancel();
        self.generation = CancellationToken::new();
        self.generation.clone()
    }

    /// Resets containers for start/restart; `restart` keeps counts and
    /// previous states.
    pub(crate) fn reset_containers(&mut self, restart: bool) {
        for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if restart {
                c.kill_now();
                c.previous = Some(c.current.clone());
                c.restart_count = c.restart_count.saturating_add(1);
            } else {
                c.previous = None;
                c.restart_count = 0;
                c.events.clear();
            }
            c.current = CState::Waiting {
                detail: "ContainerCreating",
            };
        }
        self.stopped = false;
        self.init_failed = false;
    }

    /// Asks a running container to end with `code`; false if not running.
    pub(crate) fn set_exit(&mut self, container: &str, code: i32) -> bool {
        let Some(c) = self
            .containers
            .iter_mut()
            .chain(self.init.iter_mut())
            .find(|c| c.name == container)
        else {
            return false;
        };
        if !c.running() {
            return false;
        }
        c.kill_code = Some(code);
        c.kill.notify_one();
        true
    }

    /// The ARM id.
    pub(crate) fn id(&self, subscription: &str) -> String {
        format!(
            "/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.ContainerInstance/containerGroups/{}",
            self.rg, self.name
        )
    }

    /// The group as GET/PUT (`list == false`) or LIST items show it: write-only
    /// secrets removed (by the spec's `x-ms-secret`, plus secret volume
    /// contents and extensions' protected settings, which ARM hides too).
    pub(crate) fn render(&self, app: &App, list: bool) -> Value {
        let mut v = match &self.body {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        v.insert(
            "id".into(),
            Value::String(self.id(&app.config.subscription_id)),
        );
        v.insert("name".into(), Value::String(self.name.clone()));
        v.insert(
            "type".into(),
            Value::String("Microsoft.ContainerInstance/containerGroups".into()),
        );
        if !list {
            v.insert(
                "systemData".into(),
                json!({
                    "createdBy": app.config.client_id,
                    "createdByType": "Application",
                    "createdAt": self.created.to_string(),
                    "lastModifiedBy": app.config.client_id,
                    "lastModifiedByType": "Application",
                    "lastModifiedAt": self.modified.to_string(),
                }),
            );
        }
        if let Some(Value::Object(identity)) = v.get_mut("identity") {
            let ty = identity
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if ty.contains("SystemAssigned") {
                identity.insert(
                    "principalId".into(),
                    Value::String(self.principal_id.clone()),
                );
                identity.insert(
                    "tenantId".into(),
                    Value::String(app.config.tenant_id.clone()),
                );
            }
            if let Some(Value::Object(users)) = identity.get_mut("userAssignedIdentities") {
                for (i, (_, u)) in users.iter_mut().enumerate() {
                    *u = json!({"principalId": derived_uuid(&self.principal_id, i + 1), "clientId": derived_uuid(&self.principal_id, i + 101)});
                }
            }
        }
        let mut props = match v.remove("properties") {
            Some(Value::Object(p)) => p,
            _ => Map::new(),
        };
        props.insert(
            "provisioningState".into(),
            Value::String(self.provisioning.into()),
        );
        props
            .entry("osType")
            .or_insert_with(|| Value::String("Linux".into()));
        props
            .entry("restartPolicy")
            .or_insert_with(|| Value::String("Always".into()));
        props
            .entry("sku")
            .or_insert_with(|| Value::String("Standard".into()));
        if let Some(Value::Object(ip)) = props.get_mut("ipAddress") {
            if let Some(addr) = &self.ip {
                ip.insert("ip".into(), Value::String(addr.clone()));
            }
            if let Some(label) = ip.get("dnsNameLabel").and_then(Value::as_str) {
                let fqdn = format!(
                    "{label}.{}.azurecontainer.io",
                    app.config.location.to_ascii_lowercase().replace(' ', "")
                );
                ip.insert("fqdn".into(), Value::String(fqdn));
            }
        }
        for (field, ctrs) in [
            ("containers", &self.containers),
            ("initContainers", &self.init),
        ] {
            if let Some(Value::Array(items)) = props.get_mut(field) {
                for (item, ctr) in items.iter_mut().zip(ctrs.iter()) {
                    if let Some(Value::Object(p)) = item.get_mut("properties") {
                        p.insert("instanceView".into(), ctr.instance_view());
                    }
                }
            }
        }
        if let Some(Value::Array(volumes)) = props.get_mut("volumes") {
            for vol in volumes {
                if let Some(Value::Object(secret)) = vol.get_mut("secret") {
                    secret.clear();
                }
            }
        }
        if let Some(Value::Array(extensions)) = props.get_mut("extensions") {
            for ext in extensions {
                if let Some(Value::Object(p)) = ext.get_mut("properties") {
                    p.remove("protectedSettings");
                }
            }
        }
        if !list {
            props.insert(
                "instanceView".into(),
                json!({"events": render_events(&self.events), "state": self.state()}),
            );
        }
        v.insert("properties".into(), Value::Object(props));
        let mut v = Value::Object(v);
        app.spec.redact(
            if list {
                "ListResultContainerGroup"
            } else {
                "ContainerGroup"
            },
            &mut v,
        );
        v
    }
}

/// A stable UUID-shaped id derived from another (user-assigned identities).
fn derived_uuid(base: &str, n: usize) -> String {
    let tail = format!("{n:012x}");
    match base.rsplit_once('-') {
        Some((head, _)) => format!("{head}-{tail}"),
        None => base.to_owned(),
    }
}

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
        match run_container(&app, &key, Which::Init, idx, &token).await {
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
        async move { run_container(&app, &key, Which::Main, idx, &token).await }
    });
    futures::future::join_all(runs).await;
}

/// Runs one container until it ends for good (per the restart policy);
/// `None` when the generation was cancelled.
async fn run_container(
    app: &Arc<App>,
    key: &Key,
    which: Which,
    idx: usize,
    token: &CancellationToken,
) -> Option<i32> {
    let mut first = true;
    loop {
        let (program, env, kill, host) = {
            let mut store = app.lock_store();
            let group = store.groups.get_mut(key)?;
            if token.is_cancelled() {
                return None;
            }
            let host = group.name.clone();
            let ctr = group.ctr_mut(which, idx)?;
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
            ctr.kill_code = None;
            (ctr.program.clone(), ctr.env.clone(), ctr.kill.clone(), host)
        };
        first = false;
        let run = execute(app, key, which, idx, program, env, host, kill);
        let code = tokio::select! {
            () = token.cancelled() => return None,
            code = run => code,
        };
        let restart = {
            let mut store = app.lock_store();
            let group = store.groups.get_mut(key)?;
            if token.is_cancelled() {
                return None;
            }
            let policy = match which {
                Which::Init => "OnFailure",
                Which::Main => group.restart_policy(),
            };
            let restart = match policy {
                "Always" => true,
                "OnFailure" => code != 0,
                _ => false,
            };
            let restart = restart && !(which == Which::Init && group.restart_policy() == "Never");
            let ctr = group.ctr_mut(which, idx)?;
            ctr.current = CState::Terminated {
                start: ctr.current.start(),
                finish: Timestamp::now(),
                exit_code: code,
                detail: if code == 0 { "Completed" } else { "Error" },
            };
            let _ = ctr.output.send(Output::Ended);
            restart
        };
        tracing::debug!(container = idx, code, restart, "container ended");
        if !restart {
            return Some(code);
        }
        if cancelled_sleep(token, app.config.restart_delay).await {
            return None;
        }
    }
}

/// Runs a program until it ends or the container is told to exit.
#[allow(clippy::too_many_arguments)]
async fn execute(
    app: &Arc<App>,
    key: &Key,
    which: Which,
    idx: usize,
    program: Program,
    env: Vec<(String, String)>,
    host: String,
    kill: Arc<Notify>,
) -> i32 {
    let ctx = RunCtx {
        app,
        key,
        which,
        idx,
    };
    let sandbox = sandbox(&host, &env);
    let script = async {
        if program.understood() {
            program.run(&sandbox, &ctx).await
        } else {
            std::future::pending::<i32>().await
        }
    };
    tokio::pin!(script);
    loop {
        tokio::select! {
            code = &mut script => return code,
            () = kill.notified() => {
                let code = app.lock_store().groups.get_mut(key).and_then(|g| g.ctr_mut(which, idx)).and_then(|c| c.kill_code.take());
                if let Some(code) = code {
                    return code;
                }
            }
        }
    }
}

/// Where a container's program writes: its log.
struct RunCtx<'a> {
    app: &'a Arc<App>,
    key: &'a Key,
    which: Which,
    idx: usize,
}

impl ProgramOutput for RunCtx<'_> {
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

/// The sum of the CPU requests of a group body's containers.
pub(crate) fn requested_cpu(body: &Value) -> f64 {
    body.pointer("/properties/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.pointer("/properties/resources/requests/cpu")?.as_f64())
                .sum()
        })
        .unwrap_or(0.0)
}

/// Whether a group body asks for Spot capacity (`properties.priority`).
pub(crate) fn is_spot(body: &Value) -> bool {
    body.pointer("/properties/priority")
        .and_then(Value::as_str)
        .is_some_and(|p| p.eq_ignore_ascii_case("Spot"))
}
