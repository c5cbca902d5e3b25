//! ECS on moto: the tasks the node started, found by `startedBy` and told
//! apart by their `skylet.io/pod-uid` tag; listings paginate (100 a page).

use aws_sdk_ecs::types::{DesiredStatus, Task, TaskField};

use super::skylet_bin;
use crate::{
    ControlPlane, Moto, Skylet,
    k8s::{sample, scrape},
    proxy::{Api, FaultProxy, Faults, Upstream},
    suite::{BackendUnderTest, BehindProxy, Instance},
};

/// ECS on the test binary's moto.
pub struct Ecs {
    moto: &'static Moto,
    ecs: aws_sdk_ecs::Client,
}

impl std::fmt::Debug for Ecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecs")
            .field("endpoint", &self.moto.endpoint)
            .finish_non_exhaustive()
    }
}

fn tag<'a>(t: &'a Task, key: &str) -> Option<&'a str> {
    t.tags()
        .iter()
        .find(|x| x.key() == Some(key))
        .and_then(|x| x.value())
}

fn instance(t: &Task) -> Instance {
    let tag = |k| tag(t, k).unwrap_or_default().to_owned();
    Instance {
        uid: tag("skylet.io/pod-uid"),
        namespace: tag("skylet.io/pod-namespace"),
        name: tag("skylet.io/pod-name"),
        ip: None,
    }
}

impl Ecs {
    /// The tasks `node` started with desired status `desired`, described
    /// with their tags.
    async fn tasks(&self, node: &str, desired: DesiredStatus) -> Vec<Task> {
        let mut arns = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let r = self
                .ecs
                .list_tasks()
                .cluster(&self.moto.cluster)
                .started_by(skylet_ecs::names::started_by(node))
                .desired_status(desired.clone())
                .set_next_token(next.take())
                .send()
                .await
                .expect("moto ListTasks");
            arns.extend(r.task_arns().iter().cloned());
            match r.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let r = self
                .ecs
                .describe_tasks()
                .cluster(&self.moto.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .expect("moto DescribeTasks");
            out.extend(r.tasks().iter().cloned());
        }
        out
    }

    /// skylet's flags for this moto, its ECS endpoint replaced by `endpoint`.
    fn args(&self, endpoint: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut args = self.moto.skylet_args();
        if let Some(e) = endpoint
            && let Some(i) = args.iter().position(|a| a == "--ecs-endpoint-url")
        {
            args[i + 1] = e.to_owned();
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    fn start_skylet(&self, cp: &ControlPlane, node: &str, args: &[String]) -> Skylet {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Skylet::start_with_env(cp, &skylet_bin(), node, &args, &self.moto.skylet_env())
    }
}

impl BackendUnderTest for Ecs {
    const PROVIDER: &'static str = "aws-ecs";
    const SHORT: &'static str = "ecs";
    const READY: bool = false;

    async fn start() -> Self {
        let moto = Moto::shared();
        let shared = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(moto.region.clone()))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                aws_sdk_ecs::config::Credentials::new("test", "test", None, None, "moto"),
            ))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Self {
            moto,
            ecs: aws_sdk_ecs::Client::new(&shared),
        }
    }

    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        self.start_skylet(cp, node, &self.args(None, extra))
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        vec![("topology.kubernetes.io/region", self.moto.region.clone())]
    }

    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        self.tasks(&s.node, DesiredStatus::Running)
            .await
            .iter()
            .map(instance)
            .collect()
    }

    /// Running and stopped tasks (moto keeps STOPPED ones).
    async fn instances_ever(&self, s: &Skylet) -> Vec<Instance> {
        let mut v = self.instances(s).await;
        v.extend(
            self.tasks(&s.node, DesiredStatus::Stopped)
                .await
                .iter()
                .map(instance),
        );
        v
    }

    async fn creates(&self, s: &Skylet) -> u64 {
        let calls = sample(
            &scrape(s),
            &[
                "skylet_backend_api_calls_total",
                "service=\"ecs\"",
                "operation=\"RunTask\"",
            ],
        );
        calls as u64
    }

    fn make_unsupported(&self, pod: &mut serde_json::Value) -> &'static str {
        pod["spec"]["hostNetwork"] = serde_json::json!(true);
        "hostNetwork"
    }
}

impl BehindProxy for Ecs {
    const API: Api = Api::Ecs;

    fn proxy(&self, faults: Faults) -> FaultProxy {
        let upstream = Upstream::http(&self.moto.endpoint).expect("moto's endpoint");
        FaultProxy::start(Api::Ecs, upstream, false, None, faults).expect("a fault proxy")
    }

    fn skylet_through(
        &self,
        cp: &ControlPlane,
        node: &str,
        proxy: &FaultProxy,
        extra: &[&str],
    ) -> Skylet {
        self.start_skylet(cp, node, &self.args(Some(&proxy.url()), extra))
    }
}
