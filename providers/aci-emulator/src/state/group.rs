//! A container group: its stored body, provisioning and instance state,
//! containers, generation, and how GET, PUT and LIST show it.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::container::{CState, Ctr, Which};
use super::events::{Event, render_events};
use super::requested_cpu;
use crate::App;

/// A container group.
pub(crate) struct Group {
    pub(crate) rg: String,
    pub(crate) name: String,
    /// The cleaned request body (readOnly dropped), secrets included.
    pub(crate) body: Value,
    pub(crate) provisioning: &'static str,
    pub(super) created: Timestamp,
    pub(super) modified: Timestamp,
    pub(super) stopped: bool,
    pub(super) init_failed: bool,
    pub(crate) ip: Option<String>,
    pub(super) principal_id: String,
    pub(crate) init: Vec<Ctr>,
    pub(crate) containers: Vec<Ctr>,
    pub(crate) generation: CancellationToken,
    pub(crate) pending_op: Option<String>,
    pub(super) events: Vec<Event>,
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

    pub(super) fn ctr_mut(&mut self, which: Which, idx: usize) -> Option<&mut Ctr> {
        match which {
            Which::Init => self.init.get_mut(idx),
            Which::Main => self.containers.get_mut(idx),
        }
    }

    pub(super) fn restart_policy(&self) -> &str {
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

    /// The stored body as an object, with `id` and `name` at the top
    /// (what GET shows and what the test controls return start from).
    pub(crate) fn identified(&self, subscription: &str) -> Map<String, Value> {
        let mut v = match &self.body {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        v.insert("id".into(), Value::String(self.id(subscription)));
        v.insert("name".into(), Value::String(self.name.clone()));
        v
    }

    /// The group as GET/PUT (`list == false`) or LIST items show it: write-only
    /// secrets removed (by the spec's `x-ms-secret`, plus secret volume
    /// contents and extensions' protected settings, which ARM hides too).
    pub(crate) fn render(&self, app: &App, list: bool) -> Value {
        let mut v = self.identified(&app.config.subscription_id);
        v.insert(
            "type".into(),
            Value::String("Microsoft.ContainerInstance/containerGroups".into()),
        );
        if !list {
            v.insert("systemData".into(), self.system_data(app));
        }
        if let Some(Value::Object(identity)) = v.get_mut("identity") {
            self.fill_identity(app, identity);
        }
        let props = match v.remove("properties") {
            Some(Value::Object(p)) => p,
            _ => Map::new(),
        };
        let props = self.properties(app, props, list);
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

    /// Who created and last changed the group: the emulator's client.
    fn system_data(&self, app: &App) -> Value {
        json!({
            "createdBy": app.config.client_id,
            "createdByType": "Application",
            "createdAt": self.created.to_string(),
            "lastModifiedBy": app.config.client_id,
            "lastModifiedByType": "Application",
            "lastModifiedAt": self.modified.to_string(),
        })
    }

    /// The ids ARM assigns to the group's managed identities.
    fn fill_identity(&self, app: &App, identity: &mut Map<String, Value>) {
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

    /// `properties` as ARM shows them: provisioning state, defaults, the
    /// IP and FQDN, instance views, and no secret volume contents or
    /// protected settings.
    fn properties(
        &self,
        app: &App,
        mut props: Map<String, Value>,
        list: bool,
    ) -> Map<String, Value> {
        props.insert(
            "provisioningState".into(),
            Value::String(self.provisioning.into()),
        );
        for (key, default) in [
            ("osType", "Linux"),
            ("restartPolicy", "Always"),
            ("sku", "Standard"),
        ] {
            props
                .entry(key)
                .or_insert_with(|| Value::String(default.into()));
        }
        if let Some(Value::Object(ip)) = props.get_mut("ipAddress") {
            self.fill_ip(app, ip);
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
        hide_secrets(&mut props);
        if !list {
            props.insert(
                "instanceView".into(),
                json!({"events": render_events(&self.events), "state": self.state()}),
            );
        }
        props
    }

    /// The address assigned, and the FQDN of a DNS name label.
    fn fill_ip(&self, app: &App, ip: &mut Map<String, Value>) {
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
}

/// Empties secret volumes and drops extensions' protected settings: ARM
/// never returns them.
fn hide_secrets(props: &mut Map<String, Value>) {
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
}

/// A stable UUID-shaped id derived from another (user-assigned identities).
fn derived_uuid(base: &str, n: usize) -> String {
    let tail = format!("{n:012x}");
    match base.rsplit_once('-') {
        Some((head, _)) => format!("{head}-{tail}"),
        None => base.to_owned(),
    }
}
