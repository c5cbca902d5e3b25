//! Templates: the task definition of a plan, registered once per template,
//! with the Secrets Manager secret holding its secret values.

use aws_sdk_ecs::types::{Compatibility, NetworkMode, Tag};
use skylet_provider::{ProviderError, Result};

use crate::{
    EcsProvider,
    client::{ECS, SECRETS, aws},
    names,
    translate::{self, Plan},
};

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
            Some(payload) => Some(self.put_secret(&plan.key, payload).await?),
            None => None,
        };
        let arn = self
            .register_task_definition(plan, secret_arn.as_deref())
            .await?;
        tracing::info!(family = %plan.family, task_definition = %arn, "registered a task definition");
        self.state().remember_template(&plan.key, &arn, secret_arn);
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
    ) -> Result<String> {
        let task = &plan.task;
        let defs = task
            .container_definitions(secret_arn)
            .map_err(ProviderError::transient)?;
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

    /// Stores a template's secret values; returns the secret's ARN.
    async fn put_secret(&self, key: &str, payload: &translate::SecretPayload) -> Result<String> {
        let name = format!("{}{key}", self.inner.secret_prefix);
        let c = &self.inner.clients.secrets;
        let r = c
            .create_secret()
            .name(&name)
            .description("Secret values of pods run by skylet; removed when no task uses them")
            .secret_string(payload.to_json())
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(names::TAG_NODE)
                    .value(&self.inner.config.node_name)
                    .build(),
            )
            .send()
            .await
            .map_err(aws(SECRETS, "CreateSecret", self.m()));
        match r {
            Ok(out) => Ok(out.arn().unwrap_or_default().to_owned()),
            Err(e) if e.is("ResourceExistsException") => {
                let out = c
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(payload.to_json())
                    .send()
                    .await
                    .map_err(aws(SECRETS, "PutSecretValue", self.m()))?;
                Ok(out.arn().unwrap_or_default().to_owned())
            }
            Err(e) => Err(e.into()),
        }
    }
}
