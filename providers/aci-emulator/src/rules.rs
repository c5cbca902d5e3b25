//! The checks ARM and ACI make beyond the schema, on a container group body
//! that already passed [`crate::spec`] validation. Each failure is a 400 with
//! an ARM-like code:
//!
//! | Code | When |
//! |---|---|
//! | `InvalidContainerGroupName` | not 1-63 of `a-z0-9-`, or starts/ends with `-`, or has `--` |
//! | `LocationRequired` | no `location` |
//! | `LocationNotAvailableForResourceType` | `location` is not the emulator's |
//! | `InvalidTagNameCharacters` | a tag name with `< > % & \ ? /` |
//! | `InvalidTagNameLength` / `InvalidTagValueLength` | empty or > 512 / > 256 characters |
//! | `TooManyTags` | more than 50 tags |
//! | `NoContainersSpecified` | `containers` is empty |
//! | `InvalidContainerName` | a (init) container name breaking the group name rule |
//! | `DuplicateContainerName` | two (init) containers with one name |
//! | `MissingRequiredProperty` | a (init) container without `image` (ACI requires it) |
//! | `ResourceRequestsNotSpecified` | a container without `resources.requests` |
//! | `InvalidResourceRequests` | cpu or memoryInGB not positive |
//! | `InvalidContainerPort` | a port outside 1-65535 |
//! | `InvalidIpAddressPorts` | `ipAddress.ports` empty, out of range, or not exposed by any container |
//! | `InvalidEnvironmentVariable` | an empty or duplicate variable name |
//! | `InvalidVolume` | a duplicate volume name, or not exactly one volume source |
//! | `InvalidVolumeMount` | a mount naming an undeclared volume |

use std::collections::HashSet;

use serde_json::Value;

/// A rule broken: the ARM error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn reject<T>(code: &'static str, message: String) -> Result<T, Rejection> {
    Err(Rejection { code, message })
}

/// The ACI name rule for container groups and containers.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Locations compare like ARM does: case- and space-insensitively.
pub(crate) fn same_location(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    norm(a) == norm(b)
}

fn arr(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Checks a container group PUT body (already schema-valid), rule by rule
/// in the order of the table above.
pub(crate) fn check_group(name: &str, body: &Value, location: &str) -> Result<(), Rejection> {
    check_group_name(name)?;
    check_location(body.get("location").and_then(Value::as_str), location)?;
    check_tags(body.get("tags"))?;
    let props = body.get("properties");
    let containers = arr(props.and_then(|p| p.get("containers")));
    if containers.is_empty() {
        return reject(
            "NoContainersSpecified",
            format!(
                "The container group '{name}' must have at least one container in 'properties.containers'."
            ),
        );
    }
    let volumes = check_volumes(arr(props.and_then(|p| p.get("volumes"))))?;
    let mut names = HashSet::new();
    let mut exposed = HashSet::new();
    let init = arr(props.and_then(|p| p.get("initContainers")));
    for (field, list) in [("initContainers", init), ("containers", containers)] {
        for (i, c) in list.iter().enumerate() {
            let path = format!("$.properties.{field}[{i}]");
            let cname = c.get("name").and_then(Value::as_str).unwrap_or_default();
            check_container_name(&path, cname)?;
            if !names.insert(cname) {
                return reject(
                    "DuplicateContainerName",
                    format!("{path}.name: the container name '{cname}' is used more than once."),
                );
            }
            check_container(&path, c.get("properties"), &volumes)?;
            if field == "containers" {
                exposed.extend(check_app_container(&path, c.get("properties"))?);
            }
        }
    }
    match props.and_then(|p| p.get("ipAddress")) {
        Some(ip) => check_ip_ports(arr(ip.get("ports")), &exposed),
        None => Ok(()),
    }
}

fn check_group_name(name: &str) -> Result<(), Rejection> {
    if valid_name(name) {
        return Ok(());
    }
    reject(
        "InvalidContainerGroupName",
        format!(
            "The container group name '{name}' is invalid. A container group name must be 1 to 63 characters long, contain only lowercase letters, numbers and '-', not start or end with '-' and not contain '--'."
        ),
    )
}

/// A location is required, and only the emulator's is available.
fn check_location(given: Option<&str>, location: &str) -> Result<(), Rejection> {
    match given {
        None => reject(
            "LocationRequired",
            "The location property is required for this definition.".into(),
        ),
        Some(l) if !same_location(l, location) => reject(
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location '{l}' is not available for resource type 'Microsoft.ContainerInstance/containerGroups'. List of available regions for the resource type is '{location}'."
            ),
        ),
        Some(_) => Ok(()),
    }
}

/// Volume names are unique and each volume has exactly one source;
/// returns the names.
fn check_volumes(volumes: &[Value]) -> Result<HashSet<&str>, Rejection> {
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if !names.insert(vname) {
            return reject(
                "InvalidVolume",
                format!("The volume name '{vname}' is used more than once."),
            );
        }
        let sources = [
            "azureFile",
            "emptyDir",
            "secret",
            "secretReference",
            "gitRepo",
        ]
        .iter()
        .filter(|s| v.get(**s).is_some_and(|x| !x.is_null()))
        .count();
        if sources != 1 {
            return reject(
                "InvalidVolume",
                format!(
                    "$.properties.volumes[{i}]: the volume '{vname}' must have exactly one of azureFile, emptyDir, secret, secretReference or gitRepo."
                ),
            );
        }
    }
    Ok(names)
}

fn check_container_name(path: &str, cname: &str) -> Result<(), Rejection> {
    if valid_name(cname) {
        return Ok(());
    }
    reject(
        "InvalidContainerName",
        format!(
            "{path}.name: the container name '{cname}' is invalid. A container name must be 1 to 63 characters long, contain only lowercase letters, numbers and '-', not start or end with '-' and not contain '--'."
        ),
    )
}

/// What every (init) container needs beyond a unique valid name: an
/// image, valid environment variables, mounts of declared volumes.
fn check_container(
    path: &str,
    cp: Option<&Value>,
    volumes: &HashSet<&str>,
) -> Result<(), Rejection> {
    if cp
        .and_then(|p| p.get("image"))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return reject(
            "MissingRequiredProperty",
            format!("{path}.properties.image: required property is missing"),
        );
    }
    check_env(path, arr(cp.and_then(|p| p.get("environmentVariables"))))?;
    for (j, m) in arr(cp.and_then(|p| p.get("volumeMounts")))
        .iter()
        .enumerate()
    {
        let mname = m.get("name").and_then(Value::as_str).unwrap_or_default();
        if !volumes.contains(mname) {
            return reject(
                "InvalidVolumeMount",
                format!(
                    "{path}.properties.volumeMounts[{j}]: the volume '{mname}' is not declared in properties.volumes."
                ),
            );
        }
    }
    Ok(())
}

/// What an app container needs beyond that: resource requests and valid
/// ports; returns the ports it exposes.
fn check_app_container(path: &str, cp: Option<&Value>) -> Result<Vec<i64>, Rejection> {
    check_resources(path, cp.and_then(|p| p.get("resources")))?;
    let mut exposed = Vec::new();
    for (j, p) in arr(cp.and_then(|p| p.get("ports"))).iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            return reject(
                "InvalidContainerPort",
                format!(
                    "{path}.properties.ports[{j}].port: the port {port} is not between 1 and 65535."
                ),
            );
        }
        exposed.push(port);
    }
    Ok(exposed)
}

/// The group's IP ports: at least one, each exposed by a container.
fn check_ip_ports(ports: &[Value], exposed: &HashSet<i64>) -> Result<(), Rejection> {
    if ports.is_empty() {
        return reject(
            "InvalidIpAddressPorts",
            "$.properties.ipAddress.ports: at least one port is required.".into(),
        );
    }
    for (j, p) in ports.iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) || !exposed.contains(&port) {
            return reject(
                "InvalidIpAddressPorts",
                format!(
                    "$.properties.ipAddress.ports[{j}].port: the port {port} must be between 1 and 65535 and exposed by one of the containers."
                ),
            );
        }
    }
    Ok(())
}

fn check_tags(tags: Option<&Value>) -> Result<(), Rejection> {
    let Some(tags) = tags.and_then(Value::as_object) else {
        return Ok(());
    };
    if tags.len() > 50 {
        return reject(
            "TooManyTags",
            format!("{} tags were given; at most 50 are allowed.", tags.len()),
        );
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 512 {
            return reject(
                "InvalidTagNameLength",
                format!("The tag name '{k}' must be 1 to 512 characters long."),
            );
        }
        if k.chars().any(|c| "<>%&\\?/".contains(c)) {
            return reject(
                "InvalidTagNameCharacters",
                format!(
                    "The tag names '{k}' have reserved characters '<,>,%,&,\\,?,/' or control characters."
                ),
            );
        }
        if v.as_str().is_some_and(|v| v.chars().count() > 256) {
            return reject(
                "InvalidTagValueLength",
                format!("The value of the tag '{k}' is longer than 256 characters."),
            );
        }
    }
    Ok(())
}

fn check_env(path: &str, vars: &[Value]) -> Result<(), Rejection> {
    let mut seen = HashSet::new();
    for (j, v) in vars.iter().enumerate() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            return reject(
                "InvalidEnvironmentVariable",
                format!(
                    "{path}.properties.environmentVariables[{j}].name: an environment variable name must not be empty."
                ),
            );
        }
        if !seen.insert(name) {
            return reject(
                "InvalidEnvironmentVariable",
                format!(
                    "{path}.properties.environmentVariables[{j}].name: the variable '{name}' is set more than once."
                ),
            );
        }
    }
    Ok(())
}

fn check_resources(path: &str, resources: Option<&Value>) -> Result<(), Rejection> {
    let Some(requests) = resources.and_then(|r| r.get("requests")) else {
        return reject(
            "ResourceRequestsNotSpecified",
            format!(
                "{path}.properties.resources.requests: the container must request cpu and memoryInGB."
            ),
        );
    };
    for field in ["cpu", "memoryInGB"] {
        let n = requests.get(field).and_then(Value::as_f64).unwrap_or(0.0);
        if n.is_nan() || n <= 0.0 {
            return reject(
                "InvalidResourceRequests",
                format!("{path}.properties.resources.requests.{field}: must be greater than 0."),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({
            "location": "westeurope",
            "tags": {"skylet-pod-uid": "u"},
            "properties": {
                "containers": [{"name": "app", "properties": {"image": "nginx", "ports": [{"port": 80}], "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}}}}],
                "ipAddress": {"type": "Public", "ports": [{"port": 80}]},
                "osType": "Linux"
            }
        })
    }

    #[test]
    fn names() {
        for ok in ["a", "a-b", "abc123", &"a".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn accepts_valid_and_rejects_each_rule() {
        assert_eq!(check_group("g", &body(), "West Europe"), Ok(()));
        let code = |name: &str, f: &dyn Fn(&mut Value)| {
            let mut b = body();
            f(&mut b);
            check_group(name, &b, "westeurope").unwrap_err().code
        };
        assert_eq!(code("G", &|_| {}), "InvalidContainerGroupName");
        assert_eq!(
            code("g", &|b| b["location"] = json!("eastus")),
            "LocationNotAvailableForResourceType"
        );
        assert_eq!(
            code("g", &|b| b["tags"] = json!({"a/b": "x"})),
            "InvalidTagNameCharacters"
        );
        assert_eq!(
            code("g", &|b| b["properties"]["containers"] = json!([])),
            "NoContainersSpecified"
        );
        assert_eq!(
            code("g", &|b| b["properties"]["containers"][0]["name"] =
                json!("App")),
            "InvalidContainerName"
        );
        assert_eq!(
            code(
                "g",
                &|b| b["properties"]["containers"][0]["properties"]["resources"] = json!({})
            ),
            "ResourceRequestsNotSpecified"
        );
        assert_eq!(
            code("g", &|b| b["properties"]["ipAddress"]["ports"][0]["port"] =
                json!(81)),
            "InvalidIpAddressPorts"
        );
        assert_eq!(
            code(
                "g",
                &|b| b["properties"]["containers"][0]["properties"]["volumeMounts"] =
                    json!([{"name": "v", "mountPath": "/v"}])
            ),
            "InvalidVolumeMount"
        );
        assert_eq!(
            code(
                "g",
                &|b| b["properties"]["containers"][0]["properties"]["environmentVariables"] =
                    json!([{"name": ""}])
            ),
            "InvalidEnvironmentVariable"
        );
        assert_eq!(
            code("g", &|b| {
                let c = b["properties"]["containers"][0].clone();
                b["properties"]["containers"] = json!([c.clone(), c]);
            }),
            "DuplicateContainerName"
        );
    }
}
