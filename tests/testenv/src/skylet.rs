//! A skylet process for tests: runs the real binary against a control plane
//! under the ClusterRole from deploy/manifests/rbac.yaml, with the simulated
//! backend keeping its state in a file (so restarts can adopt pods).

use std::{
    io::{Read, Seek},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{ControlPlane, repo_root};

/// The user skylet runs as in tests.
pub const SKYLET_USER: &str = "skylet-test";

/// A running skylet.
pub struct Skylet {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Node name.
    pub node: String,
    /// Kubelet API port on 127.0.0.1.
    pub port: u16,
    /// Metrics port on 127.0.0.1.
    pub metrics_port: u16,
    /// The simulated backend's state file.
    pub state_file: PathBuf,
    /// Where its log goes.
    pub log: PathBuf,
    /// While this file exists the simulated backend is unreachable.
    pub outage_file: PathBuf,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1 (there is a small race until it is bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The first of `n` free loopback ports in a row, and one more free port
/// outside them. Each is held while the others are sought, so none is
/// another's; a port may still be taken between this and skylet's bind, but
/// not one that was busy already (a fleet's second node once failed on a
/// port+1 some connection held).
fn free_ports_in_a_row(n: usize) -> (u16, u16) {
    for _ in 0..100 {
        let Ok(first) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(base) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        let rest: Option<Vec<_>> = (1..n)
            .map(|i| {
                let port = u16::try_from(usize::from(base) + i).ok()?;
                std::net::TcpListener::bind(("127.0.0.1", port)).ok()
            })
            .collect();
        if rest.is_some() {
            return (base, free_port());
        }
    }
    panic!("no {n} free loopback ports in a row in 100 tries");
}

/// Per control plane: the kubeconfig of the skylet user, made once after
/// applying the RBAC manifest.
static SETUP: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn setup(cp: &ControlPlane) -> PathBuf {
    setup_user(cp, SKYLET_USER)
}

/// As [`setup`], for `user` (bound to the same ClusterRole).
fn setup_user(cp: &ControlPlane, user: &str) -> PathBuf {
    let mut done = SETUP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = format!("{}/{user}", cp.name);
    if let Some((_, kc)) = done.iter().find(|(n, _)| *n == key) {
        return kc.clone();
    }
    let rbac = repo_root().join("deploy/manifests/rbac.yaml");
    let ok = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(&rbac)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kubectl apply {} failed", rbac.display());
    let _ = cp
        .kubectl()
        .args([
            "create",
            "clusterrolebinding",
            user,
            "--clusterrole=skylet",
            &format!("--user={user}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let kc = cp.kubeconfig_for(user, &[]).expect("kubeconfig for skylet");
    done.push((key, kc.clone()));
    kc
}

impl Skylet {
    /// Starts skylet `bin` as node `node` (labelled `skylet-test=<node>`) with
    /// extra `args`.
    pub fn start(cp: &ControlPlane, bin: &Path, node: &str, args: &[&str]) -> Skylet {
        Self::start_with_env(cp, bin, node, args, &[])
    }

    /// As [`Skylet::start`], with extra environment variables.
    pub fn start_with_env(
        cp: &ControlPlane,
        bin: &Path,
        node: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Skylet {
        Self::start_as(cp, bin, node, args, env, SKYLET_USER)
    }

    /// As [`Skylet::start_with_env`], authenticated as `user` (bound to
    /// the ClusterRole of deploy/manifests/rbac.yaml like [`SKYLET_USER`]),
    /// for a test that restricts that user further.
    pub fn start_as(
        cp: &ControlPlane,
        bin: &Path,
        node: &str,
        args: &[&str],
        env: &[(&str, &str)],
        user: &str,
    ) -> Skylet {
        let kubeconfig = setup_user(cp, user);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let metrics_port = free_port();
        let ca = cp.dir().join("pki/ca.crt");
        let mut all: Vec<String> = vec![
            "--node-name".into(),
            node.into(),
            "--node-label".into(),
            format!("skylet-test={node}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--client-ca-file".into(),
            ca.display().to_string(),
            "--mock-state-file".into(),
            dir.path().join("mock-state.json").display().to_string(),
            "--sweep-interval".into(),
            "2".into(),
            "--mock-unreachable-file".into(),
            dir.path().join("outage").display().to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let mut s = Skylet {
            child: None,
            bin: bin.to_owned(),
            args: all,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            node: node.into(),
            port,
            metrics_port,
            state_file: dir.path().join("mock-state.json"),
            log: dir.path().join("skylet.log"),
            outage_file: dir.path().join("outage"),
            kubeconfig,
            _dir: dir,
        };
        s.spawn();
        s
    }

    /// Starts skylet `bin` with a config file listing backends (a fleet):
    /// `backends` is the YAML of the `backends:` list, where `{dir}` stands
    /// for a directory of this skylet's own (for the simulated backends'
    /// state, outage and usage files), and `extra` more top-level keys
    /// (`failover: ...`). Each backend gets its own kubelet API port, the
    /// first one [`Skylet::port`] and the others after it.
    pub fn start_fleet(cp: &ControlPlane, bin: &Path, backends: &str, extra: &str) -> Skylet {
        Self::start_fleet_with_env(cp, bin, backends, extra, &[])
    }

    /// As [`Skylet::start_fleet`], with extra environment variables (cloud
    /// credentials).
    pub fn start_fleet_with_env(
        cp: &ControlPlane,
        bin: &Path,
        backends: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Skylet {
        let kubeconfig = setup(cp);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let config = dir.path().join("skylet.yaml");
        let yaml = format!(
            "backends:\n{}\n{}\n",
            backends.replace("{dir}", &d),
            extra.replace("{dir}", &d)
        );
        std::fs::write(&config, yaml).expect("config file");
        // the nodes listen on ports in a row (the first backend's, + 1 for
        // the second...): a run of free ones, the metrics port outside it
        let backends_count = backends.lines().filter(|l| l.starts_with("- ")).count();
        let (port, metrics_port) = free_ports_in_a_row(backends_count.max(1));
        let ca = cp.dir().join("pki/ca.crt");
        let args: Vec<String> = vec![
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--client-ca-file".into(),
            ca.display().to_string(),
            "--sweep-interval".into(),
            "2".into(),
        ];
        let mut s = Skylet {
            child: None,
            bin: bin.to_owned(),
            args,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            node: "fleet".into(),
            port,
            metrics_port,
            state_file: dir.path().join("mock-state.json"),
            log: dir.path().join("skylet.log"),
            outage_file: dir.path().join("outage"),
            kubeconfig,
            _dir: dir,
        };
        s.spawn();
        s
    }

    /// The kubeconfig it runs with (its user's, unless the environment
    /// gave another).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory `{dir}` of [`Skylet::start_fleet`].
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // the caller's environment wins (a KUBECONFIG through a proxy)
        let child = Command::new(&self.bin)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("SKYLET_TEST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("skylet binary starts");
        self.child = Some(child);
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..300 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same arguments and backend state.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again after [`Skylet::stop`] or [`Skylet::kill`] (or
    /// after it exited by itself).
    pub fn start_again(&mut self) {
        if let Some(child) = self.child.as_mut() {
            assert!(
                child.try_wait().ok().flatten().is_some(),
                "skylet is still running"
            );
            self.child = None;
        }
        self.spawn();
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Its resident set size and open file descriptors now (from /proc).
    pub fn rss_and_fds(&self) -> Option<(u64, usize)> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        Some((kib * 1024, fds))
    }

    /// Makes the simulated backend unreachable (`true`) or reachable again.
    pub fn set_backend_outage(&self, down: bool) {
        if down {
            std::fs::write(&self.outage_file, b"down").expect("outage file");
        } else {
            let _ = std::fs::remove_file(&self.outage_file);
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.rewind();
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The simulated backend's state file, parsed (empty if none yet).
    pub fn backend_state(&self) -> serde_json::Value {
        std::fs::read(&self.state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({"creates": 0, "pods": []}))
    }

    /// UIDs of the pods of namespace `ns` the simulated backend holds, sorted.
    pub fn backend_uids(&self, ns: &str) -> Vec<String> {
        let mut v: Vec<String> = self.backend_state()["pods"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["namespace"] == ns)
                    .filter_map(|p| p["uid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// How many pods the simulated backend was asked to create, all runs together.
    pub fn backend_creates(&self) -> u64 {
        self.backend_state()["creates"].as_u64().unwrap_or(0)
    }
}

impl Drop for Skylet {
    fn drop(&mut self) {
        self.kill();
        // SKYLET_TEST_LOG_DIR keeps every skylet's whole log (`<node>-<port>.log`)
        if let Some(dir) = std::env::var_os("SKYLET_TEST_LOG_DIR") {
            let to = Path::new(&dir).join(format!("{}-{}.log", self.node, self.port));
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&self.log, to);
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- skylet {} log (last 60 lines) ----", self.node);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
