//! Garbage collection of task definitions and secrets: those a previous
//! run left are discovered once, and any that no live task used for
//! `gc_grace` is removed.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use crate::{
    EcsProvider,
    client::{AwsError, ECS, SECRETS, all_pages, aws},
    state::{Owned, State},
};

impl EcsProvider {
    /// Finds the task definitions and secrets a previous run left, so the
    /// sweep removes those no task uses. Best effort: what cannot be listed
    /// is left alone (and said so), and garbage collection of this run's
    /// own templates goes on regardless.
    pub(crate) async fn discover(&self) {
        let (tds, secrets) = match self.leftovers().await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for task definitions and secrets of previous runs; they are not removed");
                (Vec::new(), Vec::new())
            }
        };
        let mut st = self.state();
        let now = Instant::now();
        for (arn, key) in tds {
            st.owned_tds.entry(arn).or_insert(Owned {
                id: key,
                last_used: now,
            });
        }
        for (key, arn) in secrets {
            st.owned_secrets.entry(key).or_insert(Owned {
                id: arn,
                last_used: now,
            });
        }
        tracing::info!(
            task_definitions = st.owned_tds.len(),
            secrets = st.owned_secrets.len(),
            "known task definitions and secrets"
        );
        st.discovered = true;
    }

    /// Active task definitions (ARN, template key) and secrets (key, ARN)
    /// of this node.
    async fn leftovers(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>), AwsError> {
        let prefix = self.inner.settings.family_prefix.as_str();
        let mut tds = Vec::new();
        for fam in self.families().await? {
            let key = fam.strip_prefix(prefix).unwrap_or(&fam).to_owned();
            tds.extend(
                self.task_definitions(&fam)
                    .await?
                    .into_iter()
                    .map(|a| (a, key.clone())),
            );
        }
        Ok((tds, self.secrets().await?))
    }

    /// The node's active task definition families, all pages.
    async fn families(&self) -> Result<Vec<String>, AwsError> {
        let prefix = self.inner.settings.family_prefix.as_str();
        all_pages(|token| {
            let req = self
                .inner
                .clients
                .ecs
                .list_task_definition_families()
                .family_prefix(prefix)
                .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
                .set_next_token(token);
            async move {
                let r =
                    req.send()
                        .await
                        .map_err(aws(ECS, "ListTaskDefinitionFamilies", self.m()))?;
                let families = r.families().iter().filter(|f| f.starts_with(prefix));
                Ok((
                    families.cloned().collect(),
                    r.next_token().map(str::to_owned),
                ))
            }
        })
        .await
    }

    /// The active task definition ARNs of family `fam`, all pages.
    async fn task_definitions(&self, fam: &str) -> Result<Vec<String>, AwsError> {
        all_pages(|token| {
            let req = self
                .inner
                .clients
                .ecs
                .list_task_definitions()
                .family_prefix(fam)
                .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .set_next_token(token);
            async move {
                let r = req
                    .send()
                    .await
                    .map_err(aws(ECS, "ListTaskDefinitions", self.m()))?;
                Ok((
                    r.task_definition_arns().to_vec(),
                    r.next_token().map(str::to_owned),
                ))
            }
        })
        .await
    }

    /// The node's secrets (template key, ARN), all pages.
    async fn secrets(&self) -> Result<Vec<(String, String)>, AwsError> {
        let prefix = self.inner.secret_prefix.as_str();
        all_pages(|token| {
            let req = self
                .inner
                .clients
                .secrets
                .list_secrets()
                .filters(
                    aws_sdk_secretsmanager::types::Filter::builder()
                        .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                        .values(prefix)
                        .build(),
                )
                .set_next_token(token);
            async move {
                let r = req
                    .send()
                    .await
                    .map_err(aws(SECRETS, "ListSecrets", self.m()))?;
                let secrets = r.secret_list().iter().filter_map(|s| {
                    let key = s.name()?.strip_prefix(prefix)?;
                    Some((key.to_owned(), s.arn()?.to_owned()))
                });
                Ok((secrets.collect(), r.next_token().map(str::to_owned)))
            }
        })
        .await
    }

    /// Deregisters and deletes the task definitions, deletes the secrets;
    /// failures are logged, not returned.
    pub(crate) async fn remove_garbage(&self, g: Garbage) {
        let c = &self.inner.clients;
        for arn in &g.tds {
            tracing::info!(task_definition = %arn, "deregistering an unused task definition");
            if let Err(e) = c
                .ecs
                .deregister_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(aws(ECS, "DeregisterTaskDefinition", self.m()))
            {
                tracing::warn!(task_definition = %arn, error = %e, "cannot deregister");
            }
        }
        for chunk in g.tds.chunks(10) {
            let r = c
                .ecs
                .delete_task_definitions()
                .set_task_definitions(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws(ECS, "DeleteTaskDefinitions", self.m()));
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot delete deregistered task definitions (they stay INACTIVE)");
            }
        }
        for arn in &g.secrets {
            tracing::info!(secret = %arn, "deleting an unused secret");
            let r = c
                .secrets
                .delete_secret()
                .secret_id(arn)
                .force_delete_without_recovery(true)
                .send()
                .await
                .map_err(aws(SECRETS, "DeleteSecret", self.m()));
            match r {
                Ok(_) => {}
                Err(e) if e.is("ResourceNotFoundException") => {}
                Err(e) => tracing::warn!(secret = %arn, error = %e, "cannot delete secret"),
            }
        }
    }
}

/// What to remove in AWS.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Garbage {
    /// Task definition ARNs.
    pub(crate) tds: Vec<String>,
    /// Secret ARNs.
    pub(crate) secrets: Vec<String>,
}

/// Task definitions no live task uses for `grace`, and secrets of templates
/// that have no task definition left; removed from the state (the caller
/// deletes them in AWS).
pub(crate) fn collect_garbage(st: &mut State, grace: Duration) -> Garbage {
    let now = Instant::now();
    let used: HashSet<&str> = st
        .tasks
        .values()
        .filter(|e| !e.stopped)
        .map(|e| e.td_arn.as_str())
        .collect();
    let mut g = Garbage::default();
    let mut dead = Vec::new();
    for (arn, o) in &mut st.owned_tds {
        if used.contains(arn.as_str()) {
            o.last_used = now;
        } else if now.duration_since(o.last_used) > grace {
            dead.push(arn.clone());
        }
    }
    for arn in dead {
        st.owned_tds.remove(&arn);
        st.templates.retain(|_, t| t.td_arn != arn);
        g.tds.push(arn);
    }
    let live_keys: HashSet<String> = st.owned_tds.values().map(|o| o.id.clone()).collect();
    let mut dead = Vec::new();
    for (key, o) in &mut st.owned_secrets {
        // a template's registry-credentials secrets live as long as it
        if live_keys.contains(crate::templates::template_of(key)) {
            o.last_used = now;
        } else if now.duration_since(o.last_used) > grace {
            dead.push(key.clone());
        }
    }
    for key in dead {
        if let Some(o) = st.owned_secrets.remove(&key) {
            st.templates.remove(&key);
            g.secrets.push(o.id);
        }
    }
    g.tds.sort();
    g.secrets.sort();
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Template, tests::entry};
    #[test]
    fn garbage_is_what_no_live_task_used_for_the_grace_period() {
        let mut st = State::default();
        let old = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .unwrap();
        st.owned_tds.insert(
            "td-used".into(),
            Owned {
                id: "k1".into(),
                last_used: old,
            },
        );
        st.owned_tds.insert(
            "td-unused".into(),
            Owned {
                id: "k2".into(),
                last_used: old,
            },
        );
        st.owned_tds.insert(
            "td-new".into(),
            Owned {
                id: "k3".into(),
                last_used: Instant::now(),
            },
        );
        st.owned_secrets.insert(
            "k1".into(),
            Owned {
                id: "sec1".into(),
                last_used: old,
            },
        );
        st.owned_secrets.insert(
            "k2".into(),
            Owned {
                id: "sec2".into(),
                last_used: old,
            },
        );
        // registry credentials live and die with their template
        for (key, id) in [("k1-pull-0", "pull1"), ("k2-pull-0", "pull2")] {
            st.owned_secrets.insert(
                key.into(),
                Owned {
                    id: id.into(),
                    last_used: old,
                },
            );
        }
        st.templates.insert(
            "k2".into(),
            Template {
                td_arn: "td-unused".into(),
            },
        );
        st.tasks
            .insert("t".into(), entry("a", "td-used", false, None));
        st.tasks
            .insert("s".into(), entry("b", "td-unused", true, None));
        let g = collect_garbage(&mut st, Duration::from_secs(30));
        assert_eq!(
            g,
            Garbage {
                tds: vec!["td-unused".into()],
                secrets: vec!["pull2".into(), "sec2".into()]
            }
        );
        assert!(st.templates.is_empty(), "a removed template is not reused");
        assert!(st.owned_tds.contains_key("td-used") && st.owned_tds.contains_key("td-new"));
        assert_eq!(
            collect_garbage(&mut st, Duration::from_secs(30)),
            Garbage::default(),
            "nothing twice"
        );
    }
}
