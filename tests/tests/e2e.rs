//! End-to-end tests on a real local control plane: the operator, run with
//! only the chart's ServiceAccount permissions, against a real Redis; the
//! runtime processes started from the pod templates it writes.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use usher_e2e::{Cluster, Process, eventually, repo, workspace_bin};
use usher_runtime::queue::{RedisStore, Store};
use usher_runtime::testing::{RedisServer, free_port};

const NS: &str = "tickets";
const ROOM: &str = "concert";

#[test]
fn a_deployment_gets_ready_pods_on_the_fake_nodes() {
    let cluster = Cluster::up("smoke");
    let nodes = cluster.get("default", "nodes");
    assert_eq!(nodes["items"].as_array().unwrap().len(), 3);
    cluster.kubectl_ok(&["-n", "default", "get", "serviceaccount", "default"]);
    cluster.kubectl_ok(&[
        "-n",
        "default",
        "create",
        "deployment",
        "smoke",
        "--image=example/smoke:1",
        "--replicas=2",
    ]);
    cluster.kubectl_ok(&[
        "-n",
        "default",
        "rollout",
        "status",
        "deployment/smoke",
        "--timeout=60s",
    ]);
    let pods = cluster.get("default", "pods");
    let ready = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count();
    assert_eq!(ready, 2);
}

fn room_manifest(redis_url: &str, capacity: u32, paused: bool) -> String {
    format!(
        r#"apiVersion: usher.dev/v1alpha1
kind: WaitingRoom
metadata: {{name: {ROOM}}}
spec:
  capacity: {capacity}
  sessionDuration: 10m
  paused: {paused}
  redis: {{url: "{redis_url}", onDelete: Delete}}
  broker: {{minReplicas: 1, maxReplicas: 6, connectionsPerReplica: 200}}
  # Every test visitor comes from 127.0.0.1, and is a plain HTTP client
  # rather than a browser that solves a proof of work.
  bots: {{perAddress: {{joinsPerMinute: 0, liveSessions: 0}}, proofOfWork: {{difficulty: 0}}}}
"#
    )
}

/// The `USHER_*` environment a Deployment's pods get (plain values only).
fn pod_env(cluster: &Cluster, deployment: &str) -> HashMap<String, String> {
    let object = cluster.get(NS, &format!("deployment/{deployment}"));
    object["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Plays the kubelet for one runtime role: runs `usher <role>` with the
/// environment of the role's pod template, on a local port.
struct RuntimePods {
    _dispatcher: Process,
    _broker: Process,
    base: String,
}

fn start_runtime(cluster: &Cluster, key_file: &std::path::Path) -> RuntimePods {
    // The pod's own metrics address (port 9090) would clash between brokers
    // on this one host, and with the dispatcher.
    let broker_metrics_port = free_port();
    let spawn = |role: &str, port: u16| {
        let mut env = pod_env(cluster, &format!("{ROOM}-{role}"));
        env.insert("USHER_LISTEN".into(), format!("127.0.0.1:{port}"));
        env.insert("USHER_LOG".into(), "warn".into());
        if role == "broker" {
            env.insert("USHER_TOKEN_KEY".into(), key_file.display().to_string());
            if env.contains_key("USHER_TOKEN_RETIRED_KEYS") {
                env.insert(
                    "USHER_TOKEN_RETIRED_KEYS".into(),
                    retired_path(key_file).display().to_string(),
                );
            }
            assert!(env.contains_key("USHER_CHECKOUT_KEY"));
            env.insert(
                "USHER_CHECKOUT_KEY".into(),
                checkout_path(key_file).display().to_string(),
            );
            env.insert("USHER_BROKER_ID".into(), "e2e-broker".into());
            env.insert(
                "USHER_METRICS_LISTEN".into(),
                format!("127.0.0.1:{broker_metrics_port}"),
            );
        }
        Process(
            Command::new(workspace_bin("usher"))
                .arg(role)
                .envs(env)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let (broker_port, dispatcher_port) = (free_port(), free_port());
    let pods = RuntimePods {
        _dispatcher: spawn("dispatcher", dispatcher_port),
        _broker: spawn("broker", broker_port),
        base: format!("http://127.0.0.1:{broker_port}"),
    };
    for port in [broker_port, dispatcher_port] {
        eventually(Duration::from_secs(20), "runtime pod ready", || {
            let ok = Command::new("curl")
                .args(["-sf", &format!("http://127.0.0.1:{port}/readyz")])
                .output()
                .ok()?
                .status
                .success();
            ok.then_some(())
        });
    }
    let metrics = Command::new("curl")
        .args([
            "-sf",
            &format!("http://127.0.0.1:{broker_metrics_port}/metrics"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&metrics.stdout).contains("usher_connections"),
        "the broker serves no metrics on its metrics port"
    );
    pods
}

/// A JSON merge patch of the room, as `kubectl usher` makes them.
fn patch(cluster: &Cluster, json: &str) {
    cluster.kubectl_ok(&[
        "-n",
        NS,
        "patch",
        "waitingroom",
        ROOM,
        "--type",
        "merge",
        "-p",
        json,
    ]);
}

/// The pod templates of the room's Deployments: a change would roll pods.
fn pod_templates(cluster: &Cluster) -> Vec<Value> {
    ["broker", "dispatcher"]
        .iter()
        .map(|role| {
            cluster.get(NS, &format!("deployment/{ROOM}-{role}"))["spec"]["template"].clone()
        })
        .collect()
}

const PAUSE_TRIES: usize = 20;

/// Resumes, waits for admissions to flow, pauses, and returns the time
/// from the pause's patch to the last admission after it (zero when none
/// came after it).
async fn pause_lag(cluster: &Cluster, store: &RedisStore) -> Duration {
    patch(cluster, r#"{"spec": {"paused": false}}"#);
    let admitted = || futures_lite_block(store.counts()).admitted_total;
    let flowing = admitted();
    eventually(Duration::from_secs(10), "admissions flowing", || {
        (admitted() > flowing + 1).then_some(())
    });
    let mut last = admitted();
    let paused_at = std::time::Instant::now();
    patch(cluster, r#"{"spec": {"paused": true}}"#);
    // Admissions while kubectl ran count as at its end (an upper bound).
    let mut last_seen = paused_at;
    // Quiet for two seconds: the pause has bitten.
    loop {
        let now = admitted();
        if now != last {
            (last, last_seen) = (now, std::time::Instant::now());
        }
        if last_seen.elapsed() >= Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last_seen.saturating_duration_since(paused_at)
}

/// Event streams of many visitors, read in the background: when each got
/// the first `message` event, and whether it ended.
struct Streams {
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ended: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    messages: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Streams {
    fn open(base: &str, visitors: &[Value]) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let mut streams = Streams {
            opened: Default::default(),
            ended: Default::default(),
            messages: Default::default(),
            tasks: Vec::new(),
        };
        let client = reqwest::Client::new();
        streams.tasks = visitors
            .iter()
            .map(|visitor| {
                let url = format!("{base}{}", visitor["eventsUrl"].as_str().unwrap());
                let (client, opened, ended, messages) = (
                    client.clone(),
                    streams.opened.clone(),
                    streams.ended.clone(),
                    streams.messages.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut response) = client.get(url).send().await else {
                        ended.fetch_add(1, Relaxed);
                        return;
                    };
                    opened.fetch_add(1, Relaxed);
                    let (mut text, mut told) = (String::new(), false);
                    while let Ok(Some(chunk)) = response.chunk().await {
                        text.push_str(&String::from_utf8_lossy(&chunk));
                        if !told && text.contains("event: message\n") {
                            told = true;
                            messages.lock().unwrap().push(std::time::Instant::now());
                        }
                        if text.len() > 4096 {
                            text.drain(..text.len() - 64);
                        }
                    }
                    ended.fetch_add(1, Relaxed);
                })
            })
            .collect();
        streams
    }

    fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn ended(&self) -> usize {
        self.ended.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The latest arrival of the message after `since`, once `all` streams
    /// got it.
    fn slowest_message(&self, since: std::time::Instant, all: usize) -> Option<Duration> {
        let arrivals = self.messages.lock().unwrap();
        (arrivals.len() == all).then(|| {
            arrivals
                .iter()
                .map(|at| at.saturating_duration_since(since))
                .max()
                .unwrap_or_default()
        })
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn status(cluster: &Cluster) -> Value {
    cluster.get(NS, &format!("waitingroom/{ROOM}"))["status"].clone()
}

fn condition(status: &Value, kind: &str) -> String {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// The CRD files `tests/cluster/gateway-crds.sh` fetched (once per version).
fn proxy_crds() -> Vec<std::path::PathBuf> {
    let output = Command::new(repo().join("tests/cluster/gateway-crds.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tests/cluster/gateway-crds.sh failed"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(std::path::PathBuf::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_a_sale_from_manifest_to_deletion() {
    let cluster = Cluster::up("operator");
    for ns in ["usher", NS] {
        cluster.kubectl_ok(&["create", "namespace", ns]);
    }
    // The chart: its CRD, then everything else as helm renders it. The
    // operator itself runs below as a local process.
    let crd = repo().join("charts/usher/crds/waitingroom.yaml");
    cluster.kubectl_ok(&["apply", "-f", crd.to_str().unwrap()]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "crd/waitingrooms.usher.dev",
        "--timeout=30s",
    ]);
    cluster
        .apply("usher", &cluster.helm_template("usher", &["replicas=0"]))
        .unwrap();
    // The proxies' own CRDs (Traefik, Envoy Gateway, Gateway API), so that
    // their examples are checked against the real schemas and CEL rules.
    for crd in proxy_crds() {
        let crd = crd.to_str().unwrap();
        // Server-side: client-side apply keeps the whole CRD in an annotation,
        // and the largest exceed its 256 KiB limit.
        cluster.kubectl_ok(&["apply", "--server-side", "-f", crd]);
        cluster.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "-f",
            crd,
            "--timeout=30s",
        ]);
    }
    for example in [
        "waitingroom.yaml",
        "ingress-nginx.yaml",
        "traefik.yaml",
        "envoy-gateway.yaml",
    ] {
        let example =
            std::fs::read_to_string(repo().join("charts/usher/examples").join(example)).unwrap();
        cluster
            .kubectl(
                &["-n", NS, "apply", "--dry-run=server", "-f", "-"],
                Some(&example),
            )
            .unwrap();
    }

    // The API server itself refuses an invalid room, and says why.
    let invalid = room_manifest("redis://127.0.0.1:1/", 0, false)
        .replace("sessionDuration: 10m", "sessionDuration: soon\n  opensAt: \"2026-12-01T10:00:00Z\"\n  closesAt: \"2026-12-01T09:00:00Z\"");
    let refused = cluster.apply(NS, &invalid).unwrap_err();
    assert!(
        refused.contains("spec.capacity") && refused.contains("spec.sessionDuration"),
        "{refused}"
    );
    let crossed = room_manifest("redis://127.0.0.1:1/", 5, false).replace(
        "sessionDuration: 10m",
        "opensAt: \"2026-12-01T10:00:00Z\"\n  closesAt: \"2026-12-01T09:00:00Z\"",
    );
    assert!(
        cluster
            .apply(NS, &crossed)
            .unwrap_err()
            .contains("closesAt must be after opensAt")
    );
    // What the runtime would refuse at start is refused here already.
    for (spoiled, reason) in [
        (
            "sessionDuration: 169h",
            "sessionDuration must be from 1ms to 168h",
        ),
        (
            "sessionDuration: 0s",
            "sessionDuration must be from 1ms to 168h",
        ),
        (
            "sessionDuration: 10m\n  opensAt: \"2026-12-01T10:00:00+02:00\"",
            "spec.opensAt",
        ),
        (
            "sessionDuration: 10m\n  gate: {claimWindow: 500ms}",
            "claimWindow must be from 1s to 1h",
        ),
        (
            "sessionDuration: 10m\n  gate: {claimWindow: 61m}",
            "claimWindow must be from 1s to 1h",
        ),
        (
            "sessionDuration: 10m\n  gate: {maxSessionDuration: 5m}",
            "gate.maxSessionDuration must be at least sessionDuration",
        ),
        (
            "sessionDuration: 10m\n  gate: {waitingPage: \"//evil.example/\"}",
            "spec.gate.waitingPage",
        ),
    ] {
        let manifest = room_manifest("redis://127.0.0.1:1/", 5, false)
            .replace("sessionDuration: 10m", spoiled);
        let refused = cluster.apply(NS, &manifest).unwrap_err();
        assert!(refused.contains(reason), "{spoiled}: {refused}");
    }

    let redis = RedisServer::start();
    let operator_port = free_port();
    let _operator = Process(
        Command::new(workspace_bin("usher-operator"))
            .arg("run")
            .env(
                "KUBECONFIG",
                cluster.kubeconfig_as("system:serviceaccount:usher:usher-operator"),
            )
            .env("POD_NAMESPACE", "usher")
            .env("HOSTNAME", "e2e-operator")
            .env("USHER_LISTEN", format!("127.0.0.1:{operator_port}"))
            .env("USHER_STATUS_INTERVAL", "1s")
            .env("USHER_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cluster
        .apply(NS, &room_manifest(&redis.url(), 50, false))
        .unwrap();

    // Children exist, owned by the room; kwok makes their pods Ready.
    let uid = cluster.get(NS, &format!("waitingroom/{ROOM}"))["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    for child in [
        "deployment/concert-broker",
        "deployment/concert-dispatcher",
        "service/concert-broker",
        "poddisruptionbudget/concert-broker",
        "secret/concert-token-key",
        "secret/concert-checkout-key",
    ] {
        let object = eventually(Duration::from_secs(60), child, || {
            cluster.try_get(NS, child)
        });
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].as_str()),
            (Some("WaitingRoom"), Some(uid.as_str())),
            "{child}"
        );
    }
    for deployment in ["concert-broker", "concert-dispatcher"] {
        cluster.kubectl_ok(&[
            "-n",
            NS,
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "--timeout=60s",
        ]);
    }

    // Play the kubelet for the runtime pods, with the key from the Secret.
    let key_file = std::env::temp_dir().join(format!("usher-e2e-key-{}.pem", std::process::id()));
    write_key(&cluster.get(NS, "secret/concert-token-key"), &key_file);
    write_secret_field(
        &cluster.get(NS, "secret/concert-checkout-key"),
        "key",
        &checkout_path(&key_file),
    );
    let pods = start_runtime(&cluster, &key_file);

    // 1,000 visitors join; some stream.
    let client = reqwest::Client::new();
    let mut joined = Vec::new();
    for _ in 0..1000 {
        let response = client
            .post(format!("{}/v1/rooms/{ROOM}/queue", pods.base))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        joined.push(response.json::<Value>().await.unwrap());
    }
    let mut streams = Vec::new();
    for visitor in joined.iter().rev().take(20) {
        let url = format!("{}{}", pods.base, visitor["eventsUrl"].as_str().unwrap());
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        streams.push(response);
    }

    // The status agrees with Redis, and the room is Ready.
    let store = RedisStore::connect(&redis.url(), ROOM).await.unwrap();
    eventually(Duration::from_secs(30), "status matching Redis", || {
        let counts = futures_lite_block(store.counts());
        let status = status(&cluster);
        (status["waiting"] == counts.waiting
            && status["active"] == counts.active
            && counts.active == 50
            && condition(&status, "Ready") == "True")
            .then_some(())
    });
    let table = cluster.kubectl_ok(&["-n", NS, "get", "wr"]);
    assert!(
        table.contains("WAITING") && table.contains(" 950 ") && table.contains(" 50 "),
        "{table}"
    );
    assert_eq!(
        status(&cluster)["gateUrl"],
        format!("http://{ROOM}-broker.{NS}.svc:8080/v1/rooms/{ROOM}/gate")
    );

    // Brokers follow demand: 950 waiting + 20 connected at 200 each.
    eventually(Duration::from_secs(30), "brokers scaled to 5", || {
        (status(&cluster)["brokers"]["desired"] == 5).then_some(())
    });
    assert_eq!(
        cluster.get(NS, "deployment/concert-broker")["spec"]["replicas"],
        5
    );

    // Hand edits are put back; a deleted key Secret is made again, and the
    // brokers roll to the new key.
    cluster.kubectl_ok(&[
        "-n",
        NS,
        "scale",
        "deployment/concert-broker",
        "--replicas=1",
    ]);
    eventually(Duration::from_secs(30), "the edit undone", || {
        (cluster.get(NS, "deployment/concert-broker")["spec"]["replicas"] == 5).then_some(())
    });
    let digest = |cluster: &Cluster| {
        cluster.get(NS, "deployment/concert-broker")["spec"]["template"]["metadata"]["annotations"]
            ["usher.dev/token-key-digest"]
            .clone()
    };
    let before = digest(&cluster);
    cluster.kubectl_ok(&["-n", NS, "delete", "secret", "concert-token-key"]);
    eventually(Duration::from_secs(30), "a new key rolled out", || {
        cluster
            .kubectl(&["-n", NS, "get", "secret", "concert-token-key"], None)
            .ok()?;
        (digest(&cluster) != before).then_some(())
    });
    write_key(&cluster.get(NS, "secret/concert-token-key"), &key_file);

    // The brokers roll to the new key: play the kubelet again.
    drop(streams);
    drop(pods);
    let pods = start_runtime(&cluster, &key_file);

    // From here on the rules change live, in Redis: no pod rolls, and the
    // streams the brokers hold stay open.
    let templates = pod_templates(&cluster);
    let streams = Streams::open(&pods.base, &joined);
    eventually(Duration::from_secs(30), "1,000 streams open", || {
        (streams.opened() == joined.len()).then_some(())
    });

    // A message reaches every open stream.
    let sent = std::time::Instant::now();
    patch(&cluster, r#"{"spec": {"message": "Doors open at 10"}}"#);
    let slowest = eventually(
        Duration::from_secs(20),
        "the message on every stream",
        || streams.slowest_message(sent, joined.len()),
    );
    println!(
        "the message reached all {} streams within {slowest:?} of the patch",
        joined.len()
    );

    // More capacity: admissions follow.
    patch(&cluster, r#"{"spec": {"capacity": 80}}"#);
    eventually(Duration::from_secs(30), "80 active", || {
        (status(&cluster)["active"] == 80).then_some(())
    });

    // Paused: completed visitors free slots that nobody takes.
    patch(&cluster, r#"{"spec": {"paused": true}}"#);
    eventually(Duration::from_secs(30), "Paused phase", || {
        (status(&cluster)["phase"] == "Paused").then_some(())
    });
    for visitor in &joined[..10] {
        let url = format!(
            "{}/v1/rooms/{ROOM}/sessions/{}/complete?token={}",
            pods.base,
            visitor["sessionId"].as_str().unwrap(),
            visitor["sessionToken"].as_str().unwrap()
        );
        assert_eq!(client.post(url).send().await.unwrap().status(), 200);
    }
    eventually(Duration::from_secs(30), "70 active while paused", || {
        (status(&cluster)["active"] == 70).then_some(())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        futures_lite_block(store.counts()).active,
        70,
        "a paused room admits nobody"
    );

    // Resumed: the free slots fill again.
    patch(&cluster, r#"{"spec": {"paused": false}}"#);
    eventually(Duration::from_secs(30), "80 active again", || {
        (status(&cluster)["active"] == 80).then_some(())
    });
    // Admit the next five now, past a pause, once per request.
    patch(&cluster, r#"{"spec": {"capacity": 85, "paused": true}}"#);
    patch(
        &cluster,
        r#"{"spec": {"admitNext": {"count": 5, "requestId": "e2e-1"}}}"#,
    );
    eventually(Duration::from_secs(30), "five admitted now", || {
        (status(&cluster)["admitNext"] == serde_json::json!({"requestId": "e2e-1", "admitted": 5}))
            .then_some(())
    });
    assert_eq!(futures_lite_block(store.counts()).active, 85);

    // None of it rolled a pod or cut a stream: only the ten completed
    // visitors' streams ended, as their sessions did.
    assert_eq!(
        pod_templates(&cluster),
        templates,
        "a rule change rolled the pods"
    );
    assert_eq!(streams.ended(), 10, "a rule change cut streams");
    drop(streams);
    patch(&cluster, r#"{"spec": {"paused": false}}"#);

    // How long a pause takes to bite: admissions flow (short sessions in a
    // room of two), then the patch; the last admission after it counts.
    patch(
        &cluster,
        r#"{"spec": {"capacity": 2, "sessionDuration": "100ms"}}"#,
    );
    // The sessions admitted so far hold ten minutes: end them.
    for visitor in &joined {
        let url = format!(
            "{}/v1/rooms/{ROOM}/sessions/{}/complete?token={}",
            pods.base,
            visitor["sessionId"].as_str().unwrap(),
            visitor["sessionToken"].as_str().unwrap()
        );
        client.post(url).send().await.unwrap();
    }
    // A line long enough for every try (about 20 admissions each).
    for _ in 0..30 * PAUSE_TRIES {
        let response = client
            .post(format!("{}/v1/rooms/{ROOM}/queue", pods.base))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let mut lags = Vec::new();
    for _ in 0..PAUSE_TRIES {
        lags.push(pause_lag(&cluster, &store).await);
    }
    lags.sort();
    println!(
        "patch paused: true -> last admission over {PAUSE_TRIES} tries: p50 {:?}, p99 {:?}, max {:?}",
        lags[lags.len() / 2],
        lags[(lags.len() * 99).div_ceil(100) - 1],
        lags[lags.len() - 1]
    );
    assert_eq!(
        pod_templates(&cluster),
        templates,
        "a pause rolled the pods"
    );

    lifecycle_of_a_second_room(&cluster, &redis.url());

    // Deleting the room runs the finalizer (its Redis keys go) and the
    // garbage collector removes its children. Its runtime processes, still
    // running meanwhile, do not write the deleted room's rules back.
    cluster.kubectl_ok(&["-n", NS, "delete", "waitingroom", ROOM, "--timeout=60s"]);
    assert_eq!(
        futures_lite_block(store.config()),
        None,
        "the room's Redis keys are deleted"
    );
    // Longer than a dispatcher tick and a readiness probe: each would have
    // written the rules again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        futures_lite_block(store.config()),
        None,
        "the deleted room's processes put its rules back"
    );
    drop(pods);
    eventually(
        Duration::from_secs(60),
        "children garbage-collected",
        || {
            let left = cluster.kubectl_ok(&[
                "-n",
                NS,
                "get",
                "deployments,services,poddisruptionbudgets,secrets",
                "-o",
                "name",
            ]);
            (!left.contains("concert-")).then_some(())
        },
    );
    let _ = std::fs::remove_file(retired_path(&key_file));
    let _ = std::fs::remove_file(checkout_path(&key_file));
    let _ = std::fs::remove_file(key_file);
}

/// Pre-warm and scale-to-zero, on a room nobody joins (no runtime pods
/// needed): warm brokers ahead of the opening, none at all once closed and
/// drained, back when reopened.
fn lifecycle_of_a_second_room(cluster: &Cluster, redis_url: &str) {
    use usher_runtime::clock::{now_ms, rfc3339};
    let manifest = |opens_at: i64, closes_at: i64| {
        format!(
            r#"apiVersion: usher.dev/v1alpha1
kind: WaitingRoom
metadata: {{name: encore}}
spec:
  capacity: 10
  opensAt: "{}"
  closesAt: "{}"
  redis: {{url: "{redis_url}", onDelete: Delete}}
  broker: {{minReplicas: 1, maxReplicas: 4, prewarm: {{replicas: 3, before: 30m}}}}
"#,
            rfc3339(opens_at),
            rfc3339(closes_at)
        )
    };
    // Polled from right after each apply: the operator may not have made
    // the Deployments yet.
    let replicas = |role: &str| {
        cluster
            .try_get(NS, &format!("deployment/encore-{role}"))
            .map_or(Value::Null, |deployment| {
                deployment["spec"]["replicas"].clone()
            })
    };
    let status = || cluster.get(NS, "waitingroom/encore")["status"].clone();
    let minute = 60_000;
    let now = now_ms();
    // Opens in 10 minutes: inside the pre-warm window already.
    cluster
        .apply(NS, &manifest(now + 10 * minute, now + 60 * minute))
        .unwrap();
    eventually(Duration::from_secs(30), "3 pre-warmed brokers", || {
        (replicas("broker") == 3 && replicas("dispatcher") == 1).then_some(())
    });
    // Closed, and nobody in line or active: no runtime pods at all.
    cluster
        .apply(NS, &manifest(now - 60 * minute, now - minute))
        .unwrap();
    eventually(Duration::from_secs(30), "scaled to zero", || {
        (replicas("broker") == 0 && replicas("dispatcher") == 0).then_some(())
    });
    eventually(Duration::from_secs(30), "closed, desired 0", || {
        let status = status();
        (status["phase"] == "Closed" && status["brokers"]["desired"] == 0).then_some(())
    });
    let budget = cluster.get(NS, "poddisruptionbudget/encore-broker");
    assert_eq!(
        budget["spec"]["maxUnavailable"], 1,
        "the budget blocks nothing"
    );
    // Reopened: the pods come back.
    cluster
        .apply(NS, &manifest(now - 60 * minute, now + 60 * minute))
        .unwrap();
    eventually(Duration::from_secs(30), "pods back", || {
        (replicas("broker") == 3 && replicas("dispatcher") == 1).then_some(())
    });
    cluster.kubectl_ok(&["-n", NS, "delete", "waitingroom", "encore", "--timeout=60s"]);
}

/// Where the retired key of `key_file` goes.
fn retired_path(key_file: &std::path::Path) -> std::path::PathBuf {
    key_file.with_extension("retired.pem")
}

/// Where the harness puts the checkout credential of `key_file`'s room.
fn checkout_path(key_file: &std::path::Path) -> std::path::PathBuf {
    key_file.with_extension("checkout")
}

/// Writes the keys of `secret` where the broker process reads them (the
/// kubelet would mount them).
fn write_key(secret: &Value, key_file: &std::path::Path) {
    write_secret_field(secret, "entry.pem", key_file);
    write_secret_field(secret, "retired.pem", &retired_path(key_file));
}

/// Writes `field` of `secret`, if it has it, to `path`.
fn write_secret_field(secret: &Value, field: &str, path: &std::path::Path) {
    use std::io::Write as _;
    let Some(encoded) = secret["data"][field].as_str() else {
        return;
    };
    let mut decode = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    decode
        .stdin
        .take()
        .unwrap()
        .write_all(encoded.as_bytes())
        .unwrap();
    std::fs::write(path, decode.wait_with_output().unwrap().stdout).unwrap();
}

/// Runs a store call from a synchronous polling closure.
fn futures_lite_block<T>(future: impl Future<Output = usher_runtime::queue::Result<T>>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future)).unwrap()
}
