//! A plan in the SDK's types: container definitions, volumes and ephemeral
//! storage for RegisterTaskDefinition, container overrides for RunTask.

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, ContainerOverride,
    ContainerRestartPolicy, EphemeralStorage, HealthCheck, KeyValuePair, LogConfiguration,
    LogDriver, MountPoint, PortMapping, Secret, TransportProtocol, Volume,
};

use super::{ContainerSpec, Plan, TaskSpec};

impl TaskSpec {
    /// The container definitions for RegisterTaskDefinition; `secret_arn` is
    /// the ARN of the template's secret (required when a container has
    /// secrets).
    ///
    /// # Errors
    /// A message when a secret is referenced without an ARN, or a builder
    /// refuses a value.
    pub fn container_definitions(
        &self,
        secret_arn: Option<&str>,
    ) -> Result<Vec<ContainerDefinition>, String> {
        self.containers
            .iter()
            .map(|c| c.definition(&self.log, secret_arn))
            .collect()
    }

    /// The task volumes.
    pub fn task_volumes(&self) -> Vec<Volume> {
        self.volumes
            .iter()
            .map(|v| Volume::builder().name(v).build())
            .collect()
    }

    /// Ephemeral storage, when more than the included 20 GiB.
    pub fn ephemeral_storage(&self) -> Option<EphemeralStorage> {
        self.ephemeral_gib.map(|g| {
            EphemeralStorage::builder()
                .size_in_gib(i32::try_from(g).unwrap_or(200))
                .build()
        })
    }
}

fn kv(pairs: &[(String, String)]) -> Vec<KeyValuePair> {
    pairs
        .iter()
        .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
        .collect()
}

impl ContainerSpec {
    /// The container definition; `log` is the awslogs group, region and
    /// stream prefix.
    fn definition(
        &self,
        log: &(String, String, String),
        secret_arn: Option<&str>,
    ) -> Result<ContainerDefinition, String> {
        let secrets = self.secret_refs(secret_arn)?;
        let depends = self.dependencies()?;
        let logc = awslogs(log)?;
        let restart = self.restart_policy()?;
        let health = self.health_check()?;
        Ok(ContainerDefinition::builder()
            .name(&self.name)
            .image(&self.image)
            .essential(self.essential)
            .set_entry_point(self.entry_point.clone())
            .set_command(self.command.clone())
            .set_working_directory(self.working_dir.clone())
            .set_user(self.user.clone())
            .set_environment(Some(kv(&self.environment)))
            .set_secrets((!secrets.is_empty()).then_some(secrets))
            .set_port_mappings(Some(
                self.ports
                    .iter()
                    .map(|(p, proto)| {
                        PortMapping::builder()
                            .container_port(i32::from(*p))
                            .protocol(TransportProtocol::from(*proto))
                            .build()
                    })
                    .collect(),
            ))
            .set_mount_points(Some(
                self.mounts
                    .iter()
                    .map(|(v, p, ro)| MountPoint::builder().source_volume(v).container_path(p).read_only(*ro).build())
                    .collect(),
            ))
            .set_depends_on((!depends.is_empty()).then_some(depends))
            .set_cpu(self.cpu.map(|c| i32::try_from(c).unwrap_or(i32::MAX)))
            .set_memory(self.memory.map(|m| i32::try_from(m).unwrap_or(i32::MAX)))
            // ECS wants a hard limit strictly above the reservation; with
            // both equal (request = limit) the limit alone says it
            .set_memory_reservation(match self.memory {
                Some(m) if self.memory_reservation >= m => None,
                _ => Some(i32::try_from(self.memory_reservation).unwrap_or(i32::MAX)),
            })
            .stop_timeout(i32::try_from(self.stop_timeout).unwrap_or(120))
            .readonly_root_filesystem(self.readonly_root)
            .set_restart_policy(restart)
            .set_health_check(health)
            .interactive(self.interactive)
            .pseudo_terminal(self.tty)
            .log_configuration(logc)
            .build())
    }

    /// `secrets[]`: each a key of the template's secret `secret_arn`.
    fn secret_refs(&self, secret_arn: Option<&str>) -> Result<Vec<Secret>, String> {
        self.secrets
            .iter()
            .map(|(name, key)| {
                let arn = secret_arn.ok_or_else(|| {
                    format!(
                        "container {} references a secret but none was created",
                        self.name
                    )
                })?;
                Secret::builder()
                    .name(name)
                    .value_from(format!("{arn}:{key}::"))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// `dependsOn[]`.
    fn dependencies(&self) -> Result<Vec<ContainerDependency>, String> {
        self.depends_on
            .iter()
            .map(|(c, cond)| {
                ContainerDependency::builder()
                    .container_name(c)
                    .condition(ContainerCondition::from(*cond))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// The health check, from the container's exec probes.
    fn health_check(&self) -> Result<Option<HealthCheck>, String> {
        self.health_check
            .as_ref()
            .map(|h| {
                HealthCheck::builder()
                    .set_command(Some(h.command.clone()))
                    .interval(h.interval)
                    .timeout(h.timeout)
                    .retries(h.retries)
                    .start_period(h.start_period)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .transpose()
    }

    /// The restart policy, if the container restarts.
    fn restart_policy(&self) -> Result<Option<ContainerRestartPolicy>, String> {
        self.restart
            .as_ref()
            .map(|ignored| {
                ContainerRestartPolicy::builder()
                    .enabled(true)
                    .set_ignored_exit_codes((!ignored.is_empty()).then(|| ignored.clone()))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .transpose()
    }
}

impl Plan {
    /// The RunTask container overrides (per-pod environment).
    pub fn container_overrides(&self) -> Vec<ContainerOverride> {
        self.overrides
            .iter()
            .map(|(name, env)| {
                ContainerOverride::builder()
                    .name(name)
                    .set_environment(Some(kv(env)))
                    .build()
            })
            .collect()
    }
}

/// The awslogs configuration: group, region and stream prefix.
fn awslogs(log: &(String, String, String)) -> Result<LogConfiguration, String> {
    LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", &log.0)
        .options("awslogs-region", &log.1)
        .options("awslogs-stream-prefix", &log.2)
        .build()
        .map_err(|e| e.to_string())
}
