//! moto, an AWS emulator, for the aws-ecs backend's tests: started once per
//! test binary by `hack/moto up` on a free loopback port, set up with an ECS
//! cluster, a VPC, a subnet, a security group and a log group, and stopped
//! when the test binary exits. `hack/setup test` installs it into
//! `~/.cache/skylet/moto-<version>/`; the harness only checks that it is there.
//!
//! ECS Exec: before moto, the harness starts the Session Manager data
//! channel emulator (`skylet-ssm-emulator`, on a thread of its own, with
//! output reordered) and gives moto its URL (`SKYLET_SSM_STREAM_URL`), so
//! the sessions moto's ExecuteCommand answers lead there ([`Moto::data_channel`]).

use std::{path::PathBuf, process::Command, sync::OnceLock};

use crate::hack_dir;

/// A running moto server and what `hack/moto up` created in it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Region (`us-east-1`).
    pub region: String,
    /// Availability zone of the subnet.
    pub zone: String,
    /// ECS cluster name.
    pub cluster: String,
    /// Subnet id.
    pub subnet: String,
    /// Security group id.
    pub security_group: String,
    /// CloudWatch Logs group.
    pub log_group: String,
}

static SHARED: OnceLock<Moto> = OnceLock::new();
static DATA_CHANNEL: OnceLock<skylet_ssm_emulator::Emulator> = OnceLock::new();

/// Panics unless moto is installed where `hack/setup test` puts it
/// (`$MOTO_HOME`, hack/lib.sh): the harness never installs it.
fn assert_installed() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/lib.sh && echo \"$MOTO_HOME\"",
            hack_dir().display()
        ))
        .output()
        .expect("bash runs hack/lib.sh");
    assert!(
        out.status.success(),
        "sourcing hack/lib.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let home = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        home.join(".installed").is_file(),
        "moto is not installed in {}: run hack/setup test",
        home.display()
    );
}

impl Moto {
    /// The server shared by every test of this binary.
    ///
    /// # Panics
    /// If moto is not installed (`hack/setup test`) or cannot be started:
    /// the tests cannot go on.
    pub fn shared() -> &'static Moto {
        SHARED.get_or_init(|| {
            assert_installed();
            let channel = DATA_CHANNEL.get_or_init(|| {
                skylet_ssm_emulator::Emulator::start_in_thread(skylet_ssm_emulator::Options {
                    reorder: true,
                })
                .expect("the data channel emulator starts")
            });
            let name = format!("test-{}", std::process::id());
            let out = Command::new(hack_dir().join("moto"))
                .args(["up", &name, "--owner-pid", &std::process::id().to_string()])
                .env("SKYLET_SSM_STREAM_URL", channel.url())
                .output()
                .expect("hack/moto runs");
            assert!(
                out.status.success(),
                "hack/moto up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "hack/moto up printed no setup ({e}): {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
        })
    }

    /// The Session Manager data channel emulator that the sessions of
    /// moto's ExecuteCommand lead to (started with [`Moto::shared`]).
    ///
    /// # Panics
    /// Before [`Moto::shared`].
    pub fn data_channel(&self) -> &'static skylet_ssm_emulator::Emulator {
        DATA_CHANNEL
            .get()
            .expect("Moto::shared starts the data channel emulator")
    }

    /// An AWS SDK configuration for this server: its region and endpoint,
    /// its static credentials, plain HTTP.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                aws_sdk_ecs::config::Credentials::new("test", "test", None, None, "moto"),
            ))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build()
    }

    /// Flags that point skylet's aws-ecs backend at this server.
    pub fn skylet_args(&self) -> Vec<String> {
        [
            ("--provider", "aws-ecs"),
            ("--ecs-cluster", &self.cluster),
            ("--ecs-region", &self.region),
            ("--ecs-endpoint-url", &self.endpoint),
            ("--ecs-subnets", &self.subnet),
            ("--ecs-security-groups", &self.security_group),
            ("--ecs-zones", &self.zone),
            ("--ecs-log-group", &self.log_group),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v.to_owned()])
        .collect()
    }

    /// Environment for skylet: moto's static credentials.
    pub fn skylet_env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
    }
}
