//! A container's environment as the kubelet makes it: service links, then
//! `envFrom`, then `env` with `$(VAR)` expansion; and the expansion of
//! `command` and `args`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Service};
use skylet_provider::{PodRef, Value};

use super::build::{Inputs, Kind};
use super::downward::{field_value, resource_value};
use super::{Error, Usage};

/// Expands `$(NAME)` in `command` and `args` with the container's variables,
/// as the kubelet does before it starts a container. Secret-derived values
/// are not substituted: backends keep commands in plain text (an ECS task
/// definition, an ACI container group), so `$(SECRET)` stays as written; a
/// shell can read the variable from the environment instead.
pub(super) fn expand_commands(pod: &mut Pod, env: &BTreeMap<String, Vec<(String, Value)>>) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let all = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in all {
        let Some(vars) = env.get(&c.name) else {
            continue;
        };
        let lookup = |name: &str| {
            vars.iter()
                .rev()
                .find(|(n, v)| n == name && !v.secret)
                .map(|(_, v)| v)
        };
        for words in [c.command.as_mut(), c.args.as_mut()].into_iter().flatten() {
            for w in words.iter_mut() {
                if w.contains("$(") || w.contains("$$") {
                    let (bytes, _) = expand(w, lookup);
                    *w = String::from_utf8_lossy(&bytes).into_owned();
                }
            }
        }
    }
}
/// Variables in order of first definition; defining a name again replaces its
/// value in place.
#[derive(Debug, Default)]
struct EnvList {
    vars: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, name: String, value: Value) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.index.get(name).map(|&i| &self.vars[i].1)
    }
}

/// A container's environment: service links, then `envFrom`, then `env`.
pub(super) fn container_env(
    inputs: &Inputs<'_>,
    container: &Container,
    field: &str,
    services: &[(String, String)],
) -> Result<Vec<(String, Value)>, Error> {
    let mut env = EnvList::default();
    for (name, value) in services {
        env.set(name.clone(), Value::plain(value.clone()));
    }
    for (j, from) in container.env_from.iter().flatten().enumerate() {
        let (kind, name, optional, what) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, &r.name, r.optional, "configMapRef"),
            (None, Some(r)) => (Kind::Secret, &r.name, r.optional, "secretRef"),
            (None, None) => continue,
        };
        let field = format!("{field}.envFrom[{j}].{what}");
        let Some(object) = inputs.object(kind, name, optional, Usage::Env, &field)? else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or_default();
        for (key, data) in &object.entries {
            let var = format!("{prefix}{key}");
            if is_env_name(&var) {
                env.set(var, object.value(data));
            } else {
                tracing::warn!(
                    pod = %PodRef::of(inputs.pod), container = %container.name, %field, variable = %var,
                    "skipping a key that is not a valid environment variable name",
                );
            }
        }
    }
    for (j, var) in container.env.iter().flatten().enumerate() {
        let field = format!("{field}.env[{j}]");
        if let Some(value) = env_value(inputs, container, var, &env, &field)? {
            env.set(var.name.clone(), value);
        }
    }
    Ok(env.vars)
}

/// The value of one `env` entry; `None` when it refers to something missing
/// but optional (the variable is then not set).
fn env_value(
    inputs: &Inputs<'_>,
    container: &Container,
    var: &EnvVar,
    env: &EnvList,
    field: &str,
) -> Result<Option<Value>, Error> {
    if let Some(text) = var.value.as_deref().filter(|v| !v.is_empty()) {
        let (data, secret) = expand(text, |name| env.get(name));
        return Ok(Some(Value {
            data: data.into(),
            secret,
        }));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(Value::plain("")));
    };
    let field = format!("{field}.valueFrom");
    let invalid = |f: &str, problem: String| Error::Invalid {
        usage: Usage::Env,
        field: format!("{field}.{f}"),
        problem,
    };
    if let Some(r) = &from.field_ref {
        return field_value(inputs, r)
            .map(|v| Some(Value::plain(v)))
            .map_err(|p| invalid("fieldRef", p));
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_value(inputs, r, Some(container))
            .map(|v| Some(Value::plain(v)))
            .map_err(|p| invalid("resourceFieldRef", p));
    }
    let (kind, name, key, optional, what) = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(r), _) => (
            Kind::ConfigMap,
            &r.name,
            &r.key,
            r.optional,
            "configMapKeyRef",
        ),
        (None, Some(r)) => (Kind::Secret, &r.name, &r.key, r.optional, "secretKeyRef"),
        (None, None) if from.file_key_ref.is_some() => {
            return Err(Error::Unsupported {
                usage: Usage::Env,
                field: format!("{field}.fileKeyRef"),
                what: "reading environment variables from a file (fileKeyRef)",
            });
        }
        (None, None) => return Ok(Some(Value::plain(""))),
    };
    let field = format!("{field}.{what}");
    let Some(object) = inputs.object(kind, name, optional, Usage::Env, &field)? else {
        return Ok(None);
    };
    match object.entries.get(key.as_str()) {
        Some(data) => Ok(Some(object.value(data))),
        None if optional == Some(true) => Ok(None),
        None => Err(inputs.missing_key(&object, key, Usage::Env, &field)),
    }
}

/// Whether `name` is a valid environment variable name: printable ASCII
/// except `=` (the API server's rule since RelaxedEnvironmentVariableValidation).
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// Expands `$(NAME)` like the kubelet (third_party/forked/golang/expansion):
/// a defined `NAME` is replaced by its value, an undefined one is left as is,
/// `$$` is a literal `$` (so `$$(NAME)` gives `$(NAME)`), and an unterminated
/// `$(` or a `$` before anything else is copied. Returns the bytes and whether
/// a secret value went into them.
fn expand<'v>(input: &str, lookup: impl Fn(&str) -> Option<&'v Value>) -> (Vec<u8>, bool) {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut secret = false;
    let mut i = 0;
    while i < bytes.len() {
        let (b, next) = (bytes[i], bytes.get(i + 1).copied());
        match (b, next) {
            (b'$', Some(b'$')) => {
                out.push(b'$');
                i += 2;
            }
            (b'$', Some(b'(')) => match bytes[i + 2..].iter().position(|&c| c == b')') {
                Some(len) => {
                    let end = i + 2 + len;
                    match lookup(&input[i + 2..end]) {
                        Some(v) => {
                            out.extend_from_slice(&v.data);
                            secret |= v.secret;
                        }
                        None => out.extend_from_slice(&bytes[i..=end]),
                    }
                    i = end + 1;
                }
                None => {
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
            },
            (b'$', Some(c)) => {
                out.extend_from_slice(&[b'$', c]);
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    (out, secret)
}

/// Service-link variables, as the kubelet's `getServiceEnvVarMap`: the
/// `kubernetes` service of namespace `default` always (it is how in-cluster
/// clients find the API server, so `enableServiceLinks: false` keeps it), and
/// with links enabled every service of the pod's namespace with a cluster IP,
/// which wins over the former on a name clash. Ordered by service name.
pub(super) fn service_env(
    links: bool,
    namespace_services: &[Service],
    default_services: &[Service],
) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<&str, &Service> = BTreeMap::new();
    if let Some(master) = default_services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("kubernetes") && cluster_ip(s).is_some())
    {
        by_name.insert("kubernetes", master);
    }
    if links {
        for s in namespace_services
            .iter()
            .filter(|s| cluster_ip(s).is_some())
        {
            by_name.insert(s.metadata.name.as_deref().unwrap_or_default(), s);
        }
    }
    by_name
        .into_iter()
        .flat_map(|(name, s)| service_vars(name, s))
        .collect()
}

fn cluster_ip(s: &Service) -> Option<&str> {
    s.spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// The variables of one service (envvars.FromServices).
fn service_vars(name: &str, s: &Service) -> Vec<(String, String)> {
    let prefix = env_var_name(name);
    let ip = cluster_ip(s).unwrap_or_default();
    let ports = s
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let mut vars = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_owned())];
    let Some(first) = ports.first() else {
        return vars;
    };
    vars.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    for p in ports {
        if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            vars.push((
                format!("{prefix}_SERVICE_PORT_{}", env_var_name(port_name)),
                p.port.to_string(),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let protocol = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let url = format!("{lower}://{ip}:{}", p.port);
        if i == 0 {
            vars.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{upper}", p.port);
        vars.push((pp.clone(), url));
        vars.push((format!("{pp}_PROTO"), lower));
        vars.push((format!("{pp}_PORT"), p.port.to_string()));
        vars.push((format!("{pp}_ADDR"), ip.to_owned()));
    }
    vars
}

/// A service or port name as a variable name: upper case, `-` and `.` as `_`,
/// `_` before a leading digit.
fn env_var_name(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c == '-' || c == '.' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    if upper.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{upper}")
    } else {
        upper
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::super::fixtures::*;
    use super::super::{Error, resolve};
    use super::*;

    #[tokio::test]
    async fn env_from_with_prefix_then_env_overrides_and_expands() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "app"},
             "data": {"A": "1", "B": "two", "x=y": "not a variable"}},
        ]));
        let pod = env_pod(
            json!([{"configMapRef": {"name": "app"}, "prefix": "APP_"}]),
            json!([
                {"name": "APP_A", "value": "override-$(APP_B)"},
                {"name": "C", "value": "$$(APP_A) $(UNDEFINED) $(APP_A) $(D) cost$$5 $x $("},
                {"name": "D", "value": "late"},
                {"name": "E"},
            ]),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(
            env(&resolved, "app"),
            pairs(&[
                ("APP_A", "override-two"),
                ("APP_B", "two"),
                ("C", "$(APP_A) $(UNDEFINED) override-two $(D) cost$5 $x $("),
                ("D", "late"),
                ("E", ""),
            ])
        );
        assert!(!secret_flag(&resolved, "app", "APP_B"));
        assert_eq!(resolved.refresh_at, None);
    }

    #[tokio::test]
    async fn secret_values_and_their_expansions_are_secret() {
        let fake = Fake::new(json!([
            {"kind": "Secret", "metadata": {"namespace": "shop", "name": "creds"},
             "stringData": {"password": "hunter2", "user": "bob"}},
        ]));
        let pod = env_pod(
            json!([{"secretRef": {"name": "creds"}, "prefix": "DB_"}]),
            json!([
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "URL", "value": "postgres://$(DB_user):$(PW)@db"},
                {"name": "PLAIN", "value": "$(NOPE)"},
            ]),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(
            env(&resolved, "app"),
            pairs(&[
                ("DB_password", "hunter2"),
                ("DB_user", "bob"),
                ("PW", "hunter2"),
                ("URL", "postgres://bob:hunter2@db"),
                ("PLAIN", "$(NOPE)"),
            ])
        );
        for name in ["DB_password", "DB_user", "PW", "URL"] {
            assert!(secret_flag(&resolved, "app", name), "{name} must be secret");
        }
        assert!(!secret_flag(&resolved, "app", "PLAIN"));
        assert!(!format!("{resolved:?}").contains("hunter2"));
        // only get was needed, once
        assert_eq!(fake.calls(), ["secret shop/creds"]);
    }

    #[tokio::test]
    async fn optional_missing_references_are_skipped() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "app"}, "data": {"A": "1"}},
        ]));
        let pod = env_pod(
            json!([
                {"configMapRef": {"name": "nope", "optional": true}},
                {"secretRef": {"name": "nope", "optional": true}},
            ]),
            json!([
                {"name": "X", "value": "kept"},
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "missing", "optional": true}}},
                {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "Z", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
            ]),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(env(&resolved, "app"), pairs(&[("X", "kept")]));
    }

    #[tokio::test]
    async fn missing_required_config_map_or_key_is_a_retriable_error() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "app"}, "data": {"A": "1"}},
        ]));
        let pod = env_pod(
            json!([]),
            json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}}}]),
        );
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(matches!(err, Error::MissingObject { .. }), "{err:?}");
        assert!(err.retriable());
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert_eq!(
            err.to_string(),
            "spec.containers[0].env[0].valueFrom.configMapKeyRef: ConfigMap shop/settings not found; \
             create it in namespace shop, or set `optional: true` on the reference"
        );

        let pod = env_pod(
            json!([]),
            json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "b"}}}]),
        );
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(err.retriable());
        assert!(
            err.to_string()
                .contains("ConfigMap shop/app has no key \"b\"; add the key"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn service_links_with_named_ports() {
        let fake = Fake::new(json!([
            {"kind": "Service", "metadata": {"namespace": "shop", "name": "db-main"},
             "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "pg", "port": 5432, "protocol": "TCP"},
                {"name": "metrics", "port": 9187, "protocol": "UDP"}]}},
            {"kind": "Service", "metadata": {"namespace": "shop", "name": "headless"},
             "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
            {"kind": "Service", "metadata": {"namespace": "default", "name": "kubernetes"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
            {"kind": "Service", "metadata": {"namespace": "default", "name": "elsewhere"},
             "spec": {"clusterIP": "10.96.0.99", "ports": [{"port": 80}]}},
        ]));
        let spec = |links: Option<bool>| {
            json!({"enableServiceLinks": links, "containers": [{"name": "app", "env": [
                {"name": "DB", "value": "$(DB_MAIN_SERVICE_HOST):$(DB_MAIN_SERVICE_PORT_PG)"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": "8443"},
            ]}]})
        };
        let resolved = resolve_with(&fake, &pod(spec(None))).await.unwrap();
        let kubernetes = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "8443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ];
        let db = [
            ("DB_MAIN_SERVICE_HOST", "10.96.0.10"),
            ("DB_MAIN_SERVICE_PORT", "5432"),
            ("DB_MAIN_SERVICE_PORT_PG", "5432"),
            ("DB_MAIN_SERVICE_PORT_METRICS", "9187"),
            ("DB_MAIN_PORT", "tcp://10.96.0.10:5432"),
            ("DB_MAIN_PORT_5432_TCP", "tcp://10.96.0.10:5432"),
            ("DB_MAIN_PORT_5432_TCP_PROTO", "tcp"),
            ("DB_MAIN_PORT_5432_TCP_PORT", "5432"),
            ("DB_MAIN_PORT_5432_TCP_ADDR", "10.96.0.10"),
            ("DB_MAIN_PORT_9187_UDP", "udp://10.96.0.10:9187"),
            ("DB_MAIN_PORT_9187_UDP_PROTO", "udp"),
            ("DB_MAIN_PORT_9187_UDP_PORT", "9187"),
            ("DB_MAIN_PORT_9187_UDP_ADDR", "10.96.0.10"),
        ];
        let expected: Vec<_> = db
            .iter()
            .chain(&kubernetes)
            .chain(&[("DB", "10.96.0.10:5432")])
            .copied()
            .collect();
        assert_eq!(env(&resolved, "app"), pairs(&expected));

        // disabled: only the API server's service, which the kubelet always sets
        let resolved = resolve_with(&fake, &pod(spec(Some(false)))).await.unwrap();
        let expected: Vec<_> = kubernetes
            .iter()
            .chain(&[("DB", "$(DB_MAIN_SERVICE_HOST):$(DB_MAIN_SERVICE_PORT_PG)")])
            .copied()
            .collect();
        assert_eq!(env(&resolved, "app"), pairs(&expected));
    }

    #[test]
    fn expansion_edge_cases() {
        let vars = EnvList::default();
        let run = |s: &str| String::from_utf8(expand(s, |n| vars.get(n)).0).unwrap();
        assert_eq!(run("$"), "$");
        assert_eq!(run("a$"), "a$");
        assert_eq!(run("$$$"), "$$");
        assert_eq!(run("$$(X)"), "$(X)");
        assert_eq!(run("$(X"), "$(X");
        assert_eq!(run("é$é"), "é$é");
    }

    #[test]
    fn variable_names() {
        assert_eq!(env_var_name("9-lives.svc"), "_9_LIVES_SVC");
        assert!(
            is_env_name("my.var-1 x")
                && !is_env_name("a=b")
                && !is_env_name("")
                && !is_env_name("é")
        );
    }

    #[tokio::test]
    async fn command_and_args_are_expanded_but_never_with_secrets() {
        let source = Fake::new(json!([
            {"kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}, "stringData": {"pw": "hunter2"}}
        ]));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{
                "name": "c",
                "command": ["sh", "-c", "echo $(GREETING) $(PW) $$(GREETING) $(NOPE)"],
                "args": ["$(GREETING)"],
                "env": [{"name": "GREETING", "value": "hi"},
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}]
            }]}
        }))
        .unwrap();
        let r = resolve(&source, &node(), &pod).await.unwrap();
        let c = &r.pod.pod.spec.unwrap().containers[0];
        assert_eq!(
            c.command.as_ref().unwrap()[2],
            "echo hi $(PW) $(GREETING) $(NOPE)"
        );
        assert_eq!(c.args.as_ref().unwrap()[0], "hi");
    }
}
