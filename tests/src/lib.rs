//! The harness for end-to-end tests: a real local control plane
//! (`tests/cluster/cluster`), `kubectl` and `helm` against it, and the
//! workspace's own binaries run as local processes.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of this workspace (`usher`, `usher-operator`, `kubectl-usher`),
/// built by `cargo test --workspace --all-targets`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A local control plane, stopped when dropped (also when a test panics).
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    /// Starts a control plane of its own in a fresh directory.
    pub fn up(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("usher-e2e-{name}-{}", std::process::id()));
        let script = repo().join("tests/cluster/cluster");
        let _ = Command::new(&script)
            .arg("down")
            .env("USHER_CLUSTER_DIR", &dir)
            .status();
        let status = Command::new(&script)
            .arg("up")
            .env("USHER_CLUSTER_DIR", &dir)
            .status()
            .unwrap();
        let cluster = Cluster {
            bin: PathBuf::from(
                std::fs::read_to_string(dir.join("bin"))
                    .unwrap_or_default()
                    .trim(),
            ),
            dir,
        };
        assert!(
            status.success(),
            "the control plane did not come up; logs in {}",
            cluster.dir.display()
        );
        cluster
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A kubeconfig that acts as `user` (impersonation by the admin).
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let admin = std::fs::read_to_string(self.kubeconfig()).unwrap();
        let path = self
            .dir
            .join(format!("{}.kubeconfig", user.replace(':', "-")));
        let impersonating =
            admin.replacen("client-key: ", &format!("as: \"{user}\", client-key: "), 1);
        std::fs::write(&path, impersonating).unwrap();
        path
    }

    /// A kubeconfig that acts as `user`, a member of `group` (impersonation
    /// by the admin).
    pub fn kubeconfig_as_member(&self, user: &str, group: &str) -> PathBuf {
        let admin = std::fs::read_to_string(self.kubeconfig()).unwrap();
        let path = self.dir.join(format!(
            "{}-{}.kubeconfig",
            user.replace(':', "-"),
            group.replace(':', "-")
        ));
        let impersonating = admin.replacen(
            "client-key: ",
            &format!("as: \"{user}\", as-groups: [\"{group}\"], client-key: "),
            1,
        );
        std::fs::write(&path, impersonating).unwrap();
        path
    }

    /// Runs `kubectl args...`; `Ok(stdout)` or `Err(stderr)`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        self.kubectl_with(&self.kubeconfig(), args, stdin)
    }

    /// Runs `kubectl args...` with another kubeconfig (e.g. one from
    /// [`Cluster::kubeconfig_as_member`]); `Ok(stdout)` or `Err(stderr)`.
    pub fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// `kubectl` that must succeed.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl(args, None)
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"))
    }

    /// An object as JSON, or `None` while it cannot be read (not created
    /// yet): for polling what a controller is about to make.
    pub fn try_get(&self, namespace: &str, what: &str) -> Option<Value> {
        let json = self
            .kubectl(&["-n", namespace, "get", what, "-o", "json"], None)
            .ok()?;
        serde_json::from_str(&json).ok()
    }

    /// An object as JSON.
    pub fn get(&self, namespace: &str, what: &str) -> Value {
        serde_json::from_str(&self.kubectl_ok(&["-n", namespace, "get", what, "-o", "json"]))
            .unwrap()
    }

    pub fn apply(&self, namespace: &str, manifest: &str) -> Result<String, String> {
        self.kubectl(&["-n", namespace, "apply", "-f", "-"], Some(manifest))
    }

    /// The chart rendered by helm (built from its Go module).
    pub fn helm_template(&self, namespace: &str, sets: &[&str]) -> String {
        let mut cmd = Command::new(self.bin.join("helm"));
        cmd.args(["template", "usher"])
            .arg(repo().join("charts/usher"))
            .args(["--namespace", namespace]);
        for set in sets {
            cmd.args(["--set", set]);
        }
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/cluster/cluster"))
            .arg("down")
            .env("USHER_CLUSTER_DIR", &self.dir)
            .status();
    }
}

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
