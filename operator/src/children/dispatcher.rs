//! The dispatcher Deployment.

use k8s_openapi::api::apps::v1::Deployment;

use super::pod::{RuntimeDeployment, annotations, resources};
use super::{DISPATCHER, Inputs, METRICS_PORT, env};
use crate::crd::WaitingRoom;

/// Dispatchers serve `/metrics`, `/healthz` and `/readyz` on one port.
pub fn deployment(room: &WaitingRoom, inputs: &Inputs) -> Deployment {
    let env = env::role_env(room, METRICS_PORT);
    RuntimeDeployment {
        role: DISPATCHER,
        replicas: inputs.dispatcher_replicas,
        image: inputs.image.clone(),
        env,
        ports: vec![("metrics", METRICS_PORT)],
        probe_port: "metrics",
        resources: resources(("100m", "64Mi"), ("1", "256Mi")),
        volumes: Vec::new(),
        annotations: annotations(env::config_hash(room), &[]),
    }
    .build(room)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn the_dispatcher_runs_as_many_as_the_spec_asks() {
        let room = room(
            serde_json::json!({"capacity": 5, "dispatcher": {"replicas": 2}, "redis": {"url": "redis://r:6379/"}}),
        );
        let deployment = deployment(
            &room,
            &Inputs {
                dispatcher_replicas: room.spec.dispatcher.replicas,
                ..inputs()
            },
        );
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let container = &spec.template.spec.unwrap().containers[0];
        assert_eq!(
            container.args.as_deref(),
            Some(&["dispatcher".to_owned()][..])
        );
        assert!(
            container
                .env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| e.name != "USHER_TOKEN_KEY"),
            "dispatchers need no key"
        );
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some("concert-dispatcher")
        );
        let port = &container.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9090)
        );
        let liveness = container.liveness_probe.as_ref().unwrap();
        assert_eq!(
            liveness.http_get.as_ref().unwrap().port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into())
        );
    }

    #[test]
    fn a_closed_drained_room_runs_no_dispatcher() {
        let stopped = Inputs {
            dispatcher_replicas: 0,
            ..inputs()
        };
        let spec = deployment(&basic(), &stopped).spec.unwrap();
        assert_eq!(spec.replicas, Some(0));
    }
}
