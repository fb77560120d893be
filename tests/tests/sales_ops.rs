//! The sales-operations role on a real API server: `kubectl usher` run as a
//! member of the group (impersonation) changes the live controls and
//! nothing else; RBAC and the chart's admission policy refuse the rest.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use usher_e2e::{Cluster, eventually, repo, workspace_bin};

const NS: &str = "tickets";
const ROOM: &str = "concert";
const GROUP: &str = "usher:sales-ops";
const POLICY_MESSAGE: &str =
    "sales operations may change only paused, closesAt, sessionDuration, message and admitNext";

fn room_manifest(name: &str) -> String {
    format!(
        r#"apiVersion: usher.dev/v1alpha1
kind: WaitingRoom
metadata: {{name: {name}}}
spec:
  capacity: 500
  sessionDuration: 10m
  paused: false
  redis: {{url: "redis://redis:6379/", onDelete: Delete}}
  broker: {{minReplicas: 1, maxReplicas: 6, connectionsPerReplica: 200}}
"#
    )
}

/// `kubectl usher args...` with `kubeconfig`: `Ok(stdout)`, or the one-line
/// error of a run that exited with 1.
fn usher(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(workspace_bin("kubectl-usher"))
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    Err(stderr.trim_end().to_string())
}

fn usher_ok(kubeconfig: &Path, args: &[&str]) -> String {
    usher(kubeconfig, args).unwrap_or_else(|e| panic!("kubectl usher {args:?}: {e}"))
}

fn room(cluster: &Cluster) -> Value {
    cluster.get(NS, &format!("waitingroom/{ROOM}"))
}

/// `kubectl usher args...` fails with a message containing `expected` and
/// leaves the room as it was.
fn refused(cluster: &Cluster, kubeconfig: &Path, args: &[&str], expected: &str) {
    let before = room(cluster);
    let error = usher(kubeconfig, args).expect_err(&format!("{args:?} succeeded"));
    assert!(error.contains(expected), "{args:?}: {error}");
    assert_eq!(room(cluster), before, "{args:?} changed the room");
}

#[test]
fn sales_ops_run_the_sale_and_change_nothing_else() {
    let started = Instant::now();
    let cluster = Cluster::up("sales-ops");
    for ns in ["usher", NS] {
        cluster.kubectl_ok(&["create", "namespace", ns]);
    }
    let crd = repo().join("charts/usher/crds/waitingroom.yaml");
    cluster.kubectl_ok(&["apply", "-f", crd.to_str().unwrap()]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "crd/waitingrooms.usher.dev",
        "--timeout=30s",
    ]);
    let chart = cluster.helm_template("usher", &["replicas=0", &format!("salesOps.group={GROUP}")]);
    assert!(chart.contains("kind: ValidatingAdmissionPolicyBinding"));
    cluster.apply("usher", &chart).unwrap();
    cluster.apply(NS, &room_manifest(ROOM)).unwrap();

    let admin = cluster.kubeconfig();
    let alice = cluster.kubeconfig_as_member("alice", GROUP);
    let as_alice = |args: &[&str]| cluster.kubectl_with(&alice, args, None);

    // Policies load a moment after they are created: until then a change
    // of capacity would go through (a dry run changes nothing).
    let denial = eventually(Duration::from_secs(60), "the policy in force", || {
        as_alice(&[
            "-n",
            NS,
            "patch",
            "waitingroom",
            ROOM,
            "--dry-run=server",
            "--type=merge",
            "-p",
            r#"{"spec":{"capacity":9}}"#,
        ])
        .err()
        .filter(|e| e.contains(POLICY_MESSAGE))
    });
    assert!(denial.contains("ValidatingAdmissionPolicy"), "{denial}");

    // The controls, as alice.
    let on = ["-n", NS];
    let run = |args: &[&str]| usher_ok(&alice, &[&on[..], args].concat());
    assert_eq!(
        run(&["pause", ROOM]),
        format!("waitingroom {NS}/{ROOM} patched\n")
    );
    assert_eq!(room(&cluster)["spec"]["paused"], true);
    run(&["resume", ROOM]);
    assert_eq!(room(&cluster)["spec"]["paused"], false);

    run(&["admit", ROOM, "25"]);
    let first = room(&cluster)["spec"]["admitNext"].clone();
    assert_eq!(first["count"], 25);
    let id = first["requestId"].as_str().unwrap();
    assert!(
        id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)),
        "{id}"
    );
    run(&["admit", ROOM, "25"]);
    let second = room(&cluster)["spec"]["admitNext"].clone();
    assert_eq!(second["count"], 25);
    assert_ne!(second["requestId"], first["requestId"], "a new request");

    // A message starting with a dash is text, not a flag.
    run(&["message", ROOM, "- Doors open at 10:00, stay on this page"]);
    assert_eq!(
        room(&cluster)["spec"]["message"],
        "- Doors open at 10:00, stay on this page"
    );
    run(&["message", ROOM, "--clear"]);
    assert!(room(&cluster)["spec"].get("message").is_none());

    run(&["session-duration", ROOM, "12m"]);
    assert_eq!(room(&cluster)["spec"]["sessionDuration"], "12m");

    run(&["message", ROOM, "Sold out soon"]);
    run(&["close", ROOM]);
    let closes_at = room(&cluster)["spec"]["closesAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(closes_at.len(), "2026-12-01T10:00:00Z".len(), "{closes_at}");
    assert!(closes_at.ends_with('Z'), "{closes_at}");

    // The namespace and the context from the kubeconfig, and flags after
    // the command.
    let in_tickets = alice.with_extension("tickets.kubeconfig");
    let config = std::fs::read_to_string(&alice).unwrap();
    std::fs::write(
        &in_tickets,
        config.replacen("context: {", &format!("context: {{namespace: {NS}, "), 1),
    )
    .unwrap();
    let status = usher_ok(&in_tickets, &["status", ROOM, "--context", "usher-test"]);
    for line in [
        "phase:         -\n".to_string(),
        "paused:        false\n".to_string(),
        format!("closesAt:      {closes_at}\n"),
        "message:       Sold out soon\n".to_string(),
    ] {
        assert!(status.contains(&line), "{line:?} in:\n{status}");
    }
    for item in ["waiting:", "active:", "admittedTotal:", "brokers:"] {
        assert!(status.contains(item), "{item} in:\n{status}");
    }
    assert_eq!(
        usher_ok(&alice, &["status", ROOM, "--namespace", NS]),
        status
    );
    refused(
        &cluster,
        &in_tickets,
        &["pause", ROOM, "--context", "elsewhere"],
        "elsewhere",
    );

    // Refused locally, and the room stays as it was.
    refused(
        &cluster,
        &alice,
        &["-n", NS, "admit", ROOM, "0"],
        "from 1 to 100000",
    );
    refused(
        &cluster,
        &alice,
        &["-n", NS, "admit", ROOM, "-3"],
        "from 1 to 100000",
    );
    refused(
        &cluster,
        &alice,
        &["-n", NS, "admit", ROOM, "100001"],
        "from 1 to 100000",
    );
    refused(
        &cluster,
        &alice,
        &["-n", NS, "message", ROOM, &"x".repeat(501)],
        "at most 500",
    );
    refused(
        &cluster,
        &alice,
        &["-n", NS, "session-duration", ROOM, "ten minutes"],
        "not a session duration",
    );
    refused(
        &cluster,
        &alice,
        &["-n", NS, "pause", "nosuch"],
        &format!("waitingroom {NS}/nosuch not found"),
    );
    refused(
        &cluster,
        &alice,
        &["-n", NS, "status", "nosuch"],
        &format!("waitingroom {NS}/nosuch not found"),
    );
    // The API server's schema refuses bad counts and long messages too.
    let before = room(&cluster);
    for (patch, expected) in [
        (
            r#"{"spec":{"admitNext":{"count":0,"requestId":"x"}}}"#,
            "spec.admitNext.count",
        ),
        (
            r#"{"spec":{"admitNext":{"count":100001,"requestId":"x"}}}"#,
            "spec.admitNext.count",
        ),
        (
            &format!(r#"{{"spec":{{"message":"{}"}}}}"#, "x".repeat(501)),
            "spec.message",
        ),
    ] {
        let error = as_alice(&[
            "-n",
            NS,
            "patch",
            "waitingroom",
            ROOM,
            "--type=merge",
            "-p",
            patch,
        ])
        .expect_err(patch);
        assert!(error.contains(expected), "{patch}: {error}");
    }
    assert_eq!(room(&cluster), before);

    // The policy refuses any other change, with its message; so does the
    // plugin's own refusal path show the API server's message.
    for patch in [
        r#"{"spec":{"capacity":9}}"#,
        r#"{"spec":{"admissionRate":100}}"#,
        r#"{"spec":{"broker":{"maxReplicas":7}}}"#,
        r#"{"spec":{"redis":{"onDelete":"Retain"}}}"#,
        r#"{"spec":{"paused":true,"capacity":9}}"#,
    ] {
        let error = as_alice(&[
            "-n",
            NS,
            "patch",
            "waitingroom",
            ROOM,
            "--type=merge",
            "-p",
            patch,
        ])
        .expect_err(patch);
        assert!(error.contains(POLICY_MESSAGE), "{patch}: {error}");
    }
    for patch in [
        r#"{"metadata":{"labels":{"team":"sales"}}}"#,
        r#"{"metadata":{"annotations":{"note":"x"}}}"#,
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ] {
        let error = as_alice(&[
            "-n",
            NS,
            "patch",
            "waitingroom",
            ROOM,
            "--type=merge",
            "-p",
            patch,
        ])
        .expect_err(patch);
        assert!(
            error.contains("not labels, annotations, finalizers"),
            "{patch}: {error}"
        );
    }
    assert_eq!(room(&cluster), before);

    // RBAC: no delete, no create, no Secrets; events are readable.
    let forbidden = |args: &[&str]| {
        let error = as_alice(args).expect_err(&format!("{args:?}"));
        assert!(error.contains("forbidden"), "{args:?}: {error}");
    };
    forbidden(&["-n", NS, "delete", "waitingroom", ROOM]);
    forbidden(&["-n", NS, "get", "secrets"]);
    forbidden(&["-n", "usher", "get", "secret", "anything"]);
    forbidden(&["-n", NS, "get", "configmaps"]);
    let error = cluster
        .kubectl_with(
            &alice,
            &["-n", NS, "create", "-f", "-"],
            Some(&room_manifest("other")),
        )
        .unwrap_err();
    assert!(error.contains("forbidden"), "{error}");
    forbidden(&[
        "-n",
        NS,
        "patch",
        "waitingroom",
        ROOM,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Open"}}"#,
    ]);
    as_alice(&["-n", NS, "get", "events"]).unwrap();
    as_alice(&["-n", NS, "get", "events.events.k8s.io"]).unwrap();
    assert_eq!(room(&cluster), before);

    // Someone outside the group: the API server's refusal, in one line.
    let bob = cluster.kubeconfig_as("bob");
    refused(&cluster, &bob, &["-n", NS, "pause", ROOM], "forbidden");

    // The admin is not in the group: the policy does not apply.
    usher_ok(&admin, &["-n", NS, "resume", ROOM]);
    cluster.kubectl_ok(&[
        "-n",
        NS,
        "patch",
        "waitingroom",
        ROOM,
        "--type=merge",
        "-p",
        r#"{"spec":{"capacity":700},"metadata":{"labels":{"team":"sales"}}}"#,
    ]);
    let after = room(&cluster);
    assert_eq!(after["spec"]["capacity"], 700);
    assert_eq!(after["metadata"]["labels"]["team"], "sales");

    eprintln!("sales-ops: done in {:.1?}", started.elapsed());
}
