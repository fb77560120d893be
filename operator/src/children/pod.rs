//! What every runtime pod shares: the container shape, probes and a
//! hardened security context.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{CONFIG_HASH_ANNOTATION, child_meta, child_name, labels, selector};
use crate::crd::WaitingRoom;

/// One runtime role's Deployment, as the role builders describe it.
pub struct RuntimeDeployment {
    pub role: &'static str,
    pub replicas: i32,
    pub image: String,
    pub env: Vec<EnvVar>,
    /// Named container ports.
    pub ports: Vec<(&'static str, i32)>,
    /// The port, by name, that `/readyz` and `/healthz` are asked on.
    pub probe_port: &'static str,
    pub resources: ResourceRequirements,
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// Pod template annotations (config hash and the like).
    pub annotations: BTreeMap<String, String>,
}

fn probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Requests and limits: `cpu`/`memory` pairs.
pub fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(memory.into())),
        ])
    };
    let mut limits = pair(limits);
    // No CPU limit: throttling hurts tail latency more than it protects.
    limits.remove("cpu");
    ResourceRequirements {
        requests: Some(pair(requests)),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

impl RuntimeDeployment {
    pub fn build(self, room: &WaitingRoom) -> Deployment {
        let container = Container {
            name: self.role.into(),
            image: Some(self.image),
            args: Some(vec![self.role.into()]),
            env: Some(self.env),
            ports: Some(
                self.ports
                    .iter()
                    .map(|&(name, port)| ContainerPort {
                        name: Some(name.into()),
                        container_port: port,
                        ..ContainerPort::default()
                    })
                    .collect(),
            ),
            readiness_probe: Some(probe("/readyz", self.probe_port, 5)),
            liveness_probe: Some(probe("/healthz", self.probe_port, 10)),
            resources: Some(self.resources),
            volume_mounts: Some(self.volumes.iter().map(|(_, m)| m.clone()).collect()),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        };
        let spread = |key: &str| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector(room, self.role)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        };
        Deployment {
            metadata: child_meta(room, child_name(room, self.role), self.role),
            spec: Some(DeploymentSpec {
                replicas: Some(self.replicas),
                selector: LabelSelector {
                    match_labels: Some(selector(room, self.role)),
                    ..LabelSelector::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString::Int(0)),
                        max_surge: Some(IntOrString::String("25%".into())),
                    }),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(room, self.role)),
                        annotations: Some(self.annotations),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        volumes: Some(self.volumes.into_iter().map(|(v, _)| v).collect()),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: Some(65532),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                ..SeccompProfile::default()
                            }),
                            ..PodSecurityContext::default()
                        }),
                        termination_grace_period_seconds: Some(30),
                        topology_spread_constraints: Some(vec![
                            spread("kubernetes.io/hostname"),
                            spread("topology.kubernetes.io/zone"),
                        ]),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }
}

/// Pod annotations carrying the config hash, plus `extra`.
pub fn annotations(config_hash: String, extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash)]);
    map.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    map
}
