//! Test support for skylet: a real Kubernetes control plane on loopback.
//!
//! [`ControlPlane::shared`] gives every test in a test binary the same control
//! plane: the one named by `SKYLET_TEST_CLUSTER` (already started with
//! `hack/cluster up NAME`, as `hack/test` does), or else one it starts itself
//! with `hack/cluster up` and that is torn down when the test binary exits.
//! [`ControlPlane::start`] starts a private one (a second cluster, or a test that
//! stops the apiserver).
//!
//! Nothing here is a fake: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler v1.36.3 are the real binaries built by `hack/tools/build.sh`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

pub mod backends;
pub mod crash;
pub mod faults;
pub mod fleet;
pub mod k8s;
pub mod kwok;
mod moto;
pub mod node;
pub mod proxy;
mod skylet;
pub mod soak;
pub mod suite;
pub mod tty;
pub use moto::Moto;
pub use skylet::{SKYLET_USER, Skylet, free_port};

/// Why a control plane or a client could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `hack/cluster` failed; its stderr says why.
    #[error("hack/cluster {args} failed ({status}): {stderr}")]
    Cluster {
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// The script could not be run at all.
    #[error("failed to run hack/cluster")]
    Spawn(#[source] std::io::Error),
    /// The kubeconfig it wrote could not be loaded.
    #[error("failed to load kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    /// A client could not be built from it.
    #[error("failed to build a client")]
    Client(#[source] kube::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository's `hack/` directory.
pub fn hack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory that holds the pinned Kubernetes binaries (`kubectl` among them).
pub fn k8s_bin() -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/lib.sh && echo $K8S_BIN",
            hack_dir().display()
        ))
        .output()
        .expect("bash runs hack/lib.sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A running control plane started by `hack/cluster`.
#[derive(Debug)]
pub struct ControlPlane {
    /// The instance name given to `hack/cluster`.
    pub name: String,
    /// The admin kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
    /// Whether dropping this value tears the control plane down.
    owned: bool,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane shared by every test in this binary (see the crate docs).
    ///
    /// # Panics
    /// If no control plane can be started: a test cannot go on without one.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| {
            init_tracing();
            let cp = match std::env::var("SKYLET_TEST_CLUSTER") {
                Ok(name) if !name.is_empty() => Self::up(&name, false),
                _ => Self::up(&format!("test-{}", std::process::id()), false),
            };
            cp.unwrap_or_else(|e| panic!("no control plane for the tests: {e}"))
        })
    }

    /// Starts a control plane of its own, torn down when the value is dropped
    /// (or, at the latest, when the test binary exits).
    pub fn start(name: &str) -> Result<ControlPlane> {
        init_tracing();
        Self::up(&format!("{name}-{}", std::process::id()), true)
    }

    fn up(name: &str, owned: bool) -> Result<ControlPlane> {
        let start = Instant::now();
        let pid = std::process::id().to_string();
        let out = cluster(&["up", name, "--owner-pid", &pid])?;
        let kubeconfig = PathBuf::from(out.trim());
        tracing::info!(name, elapsed = ?start.elapsed(), "control plane ready");
        Ok(ControlPlane {
            name: name.to_owned(),
            kubeconfig,
            owned,
        })
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// A client that authenticates with a client certificate for `user` in `groups`
    /// (no rights beyond what RBAC gives those names).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client> {
        client_from(&self.kubeconfig_for(user, groups)?).await
    }

    /// Writes a kubeconfig for `user` in `groups` and returns its path.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let mut args = vec!["user", &self.name, user];
        args.extend_from_slice(groups);
        Ok(PathBuf::from(cluster(&args)?.trim()))
    }

    /// `kubectl` v1.36.3 pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(k8s_bin().join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// The directory holding this instance's PKI, kubeconfigs and logs.
    pub fn dir(&self) -> PathBuf {
        self.kubeconfig
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Adds metrics-server (`kubectl top`) to this control plane, once.
    pub fn ensure_metrics_server(&self) -> Result<()> {
        static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let mut done = DONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !done.contains(&self.name) {
            cluster(&["metrics-server", &self.name])?;
            done.push(self.name.clone());
        }
        Ok(())
    }

    /// Stops one component (`kube-apiserver`, `etcd`, ...).
    pub fn stop_component(&self, component: &str) -> Result<()> {
        cluster(&["stop", &self.name, component]).map(|_| ())
    }

    /// Starts a stopped component again (waits for the apiserver's /readyz).
    pub fn start_component(&self, component: &str) -> Result<()> {
        cluster(&["start", &self.name, component]).map(|_| ())
    }

    /// The PID of one of its components (`etcd`, `kube-apiserver`, ...).
    pub fn pid(&self, component: &str) -> Option<u32> {
        let pids = std::fs::read_to_string(self.dir().join("pids")).ok()?;
        pids.lines().rev().find_map(|l| {
            let (pid, comp) = l.split_once(' ')?;
            (comp == component).then(|| pid.parse().ok()).flatten()
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.owned {
            let _ = cluster(&["down", &self.name]);
        }
    }
}

fn cluster(args: &[&str]) -> Result<String> {
    let out = Command::new(hack_dir().join("cluster"))
        .args(args)
        .output()
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(Error::Cluster {
            args: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<Client> {
    install_crypto();
    let kc = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.into(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.into(),
            source,
        })?;
    Client::try_from(config).map_err(Error::Client)
}

/// Installs the process-wide rustls provider once.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// `<base>-<suffix>`, fresh in every run, so that tests can run again on a
/// control plane that is kept up.
pub fn unique_name(base: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!(
        "{base}-{}{}",
        micros % 1_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout`
/// with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
