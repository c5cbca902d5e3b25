//! Templates: the task definition of a plan, registered once per template,
//! with the Secrets Manager secrets holding its secret values and its
//! registry credentials (`repositoryCredentials`, from image pull Secrets).

use aws_sdk_ecs::types::{Compatibility, NetworkMode, RepositoryCredentials, Tag};
use skylet_provider::{ProviderError, Result};

use crate::{
    EcsProvider,
    client::{ECS, SECRETS, aws},
    names,
    translate::Plan,
};

/// The tag of a registry-credentials secret that names its pull Secret
/// (`namespace/name`).
const TAG_PULL_SECRET: &str = "skylet.io/pull-secret";

/// The key (name below the node's prefix) of a template's `n`th
/// registry-credentials secret.
fn pull_key(template: &str, n: usize) -> String {
    format!("{template}-pull-{n}")
}

/// The template a secret's key belongs to (itself, or the template of a
/// registry-credentials secret).
pub(crate) fn template_of(key: &str) -> &str {
    key.split_once("-pull-").map_or(key, |(t, _)| t)
}

impl EcsProvider {
    /// The task definition ARN for a plan: cached, or registered now (with
    /// its secret).
    pub(crate) async fn ensure_template(&self, plan: &Plan) -> Result<String> {
        if let Some(arn) = self.state().template(&plan.key) {
            return Ok(arn);
        }
        let _g = self.inner.register.lock().await;
        if let Some(arn) = self.state().template(&plan.key) {
            return Ok(arn);
        }
        let secret_arn = match &plan.secret {
            Some(payload) => Some(self.put_secret(&plan.key, &payload.to_json(), &[]).await?),
            None => None,
        };
        let mut pull_arns = Vec::new();
        for (i, p) in plan.pull.iter().enumerate() {
            let key = pull_key(&plan.key, i);
            let tags = [(TAG_PULL_SECRET, p.source.as_str())];
            let arn = self.put_secret(&key, &p.payload.as_str(), &tags).await?;
            pull_arns.push((key, arn));
        }
        let arn = self
            .register_task_definition(plan, secret_arn.as_deref(), &pull_arns)
            .await?;
        tracing::info!(family = %plan.family, task_definition = %arn, pull_secrets = pull_arns.len(), "registered a task definition");
        let mut st = self.state();
        st.remember_template(&plan.key, &arn, secret_arn);
        let now = std::time::Instant::now();
        for (key, arn) in pull_arns {
            st.owned_secrets.insert(
                key,
                crate::state::Owned {
                    id: arn,
                    last_used: now,
                },
            );
        }
        Ok(arn)
    }

    /// RegisterTaskDefinition for a plan whose secret (if any) is
    /// `secret_arn`; returns the task definition's ARN.
    ///
    /// # Errors
    /// `TaskDefinitionRejected` ([`ProviderError::InvalidPod`]) when ECS
    /// refuses the definition itself.
    async fn register_task_definition(
        &self,
        plan: &Plan,
        secret_arn: Option<&str>,
        pull_arns: &[(String, String)],
    ) -> Result<String> {
        let task = &plan.task;
        let mut defs = task
            .container_definitions(secret_arn)
            .map_err(ProviderError::transient)?;
        for (p, (_, arn)) in plan.pull.iter().zip(pull_arns) {
            for d in defs.iter_mut().filter(|d| {
                d.name()
                    .is_some_and(|n| p.containers.iter().any(|c| c == n))
            }) {
                d.repository_credentials = RepositoryCredentials::builder()
                    .credentials_parameter(arn)
                    .build()
                    .ok();
            }
        }
        let r = self
            .inner
            .clients
            .ecs
            .register_task_definition()
            .family(&plan.family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu(task.cpu.to_string())
            .memory(task.memory.to_string())
            .set_container_definitions(Some(defs))
            .set_volumes(Some(task.task_volumes()))
            .set_task_role_arn(task.task_role_arn.clone())
            .set_execution_role_arn(task.execution_role_arn.clone())
            .set_ephemeral_storage(task.ephemeral_storage())
            .tags(
                Tag::builder()
                    .key(names::TAG_NODE)
                    .value(&self.inner.config.node_name)
                    .build(),
            )
            .send()
            .await
            .map_err(aws(ECS, "RegisterTaskDefinition", self.m()));
        match r {
            Ok(out) => Ok(out
                .task_definition()
                .and_then(|t| t.task_definition_arn())
                .unwrap_or_default()
                .to_owned()),
            // ECS refuses the definition itself: the pod cannot run here as is.
            // (ClientException stays transient: it is as often skylet's
            // configuration, e.g. a missing execution role, as the pod.)
            Err(e) if e.is("InvalidParameterException") => Err(ProviderError::invalid(
                "TaskDefinitionRejected",
                format!("ECS refused the pod's task definition: {}", e.message()),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a secret of a template (its secret values, or a registry's
    /// credentials) as `key` under the node's prefix, tagged with the node
    /// and `tags`; returns the secret's ARN. Safe to repeat: an existing
    /// secret gets the value.
    async fn put_secret(&self, key: &str, value: &str, tags: &[(&str, &str)]) -> Result<String> {
        let name = format!("{}{key}", self.inner.secret_prefix);
        let c = &self.inner.clients.secrets;
        let tag = |k: &str, v: &str| {
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        };
        let r = c
            .create_secret()
            .name(&name)
            .description("Secret values of pods run by skylet; removed when no task uses them")
            .secret_string(value)
            .set_tags(Some(
                std::iter::once((names::TAG_NODE, self.inner.config.node_name.as_str()))
                    .chain(tags.iter().copied())
                    .map(|(k, v)| tag(k, v))
                    .collect(),
            ))
            .send()
            .await
            .map_err(aws(SECRETS, "CreateSecret", self.m()));
        match r {
            Ok(out) => Ok(out.arn().unwrap_or_default().to_owned()),
            Err(e) if e.is("ResourceExistsException") => {
                let out = c
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(value)
                    .send()
                    .await
                    .map_err(aws(SECRETS, "PutSecretValue", self.m()))?;
                Ok(out.arn().unwrap_or_default().to_owned())
            }
            Err(e) => Err(e.into()),
        }
    }
}
