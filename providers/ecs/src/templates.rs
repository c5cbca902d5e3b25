//! Templates: the task definition of a plan, registered once per template,
//! with the Secrets Manager secret holding its secret values.

use std::time::Instant;

use aws_sdk_ecs::types::{Compatibility, NetworkMode, Tag};
use skylet_provider::{ProviderError, Result};

use crate::{
    EcsProvider,
    client::{ECS, SECRETS, aws},
    names,
    state::{Owned, State, Template},
    translate::{self, Plan},
};

impl EcsProvider {
    /// The task definition ARN for a plan: cached, or registered now (with
    /// its secret).
    pub(crate) async fn ensure_template(&self, plan: &Plan) -> Result<String> {
        let cached = |st: &mut State| {
            let arn = st.templates.get(&plan.key).map(|t| t.td_arn.clone())?;
            if let Some(o) = st.owned_tds.get_mut(&arn) {
                o.last_used = Instant::now();
            }
            Some(arn)
        };
        if let Some(arn) = cached(&mut self.state()) {
            return Ok(arn);
        }
        let _g = self.inner.register.lock().await;
        if let Some(arn) = cached(&mut self.state()) {
            return Ok(arn);
        }
        let secret_arn = match &plan.secret {
            Some(payload) => Some(self.put_secret(&plan.key, payload).await?),
            None => None,
        };
        let c = &self.inner.clients;
        let task = &plan.task;
        let defs = task
            .container_definitions(secret_arn.as_deref())
            .map_err(ProviderError::transient)?;
        let r = c
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
        let arn = match r {
            Ok(out) => out
                .task_definition()
                .and_then(|t| t.task_definition_arn())
                .unwrap_or_default()
                .to_owned(),
            // ECS refuses the definition itself: the pod cannot run here as is.
            // (ClientException stays transient: it is as often skylet's
            // configuration, e.g. a missing execution role, as the pod.)
            Err(e) if e.is("InvalidParameterException") => {
                return Err(ProviderError::invalid(
                    "TaskDefinitionRejected",
                    format!("ECS refused the pod's task definition: {}", e.message()),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(family = %plan.family, task_definition = %arn, "registered a task definition");
        let mut st = self.state();
        let now = Instant::now();
        st.templates.insert(
            plan.key.clone(),
            Template {
                td_arn: arn.clone(),
            },
        );
        st.owned_tds.insert(
            arn.clone(),
            Owned {
                id: plan.key.clone(),
                last_used: now,
            },
        );
        if let Some(s) = secret_arn {
            st.owned_secrets.insert(
                plan.key.clone(),
                Owned {
                    id: s,
                    last_used: now,
                },
            );
        }
        Ok(arn)
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
