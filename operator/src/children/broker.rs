//! The broker Deployment, its Service and PodDisruptionBudget.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::{RuntimeDeployment, annotations, resources};
use super::secret::{
    CHECKOUT_FILE, CHECKOUT_MOUNT_PATH, KEY_FILE, MOUNT_PATH, RETIRED_FILE, checkout_secret_name,
    secret_name,
};
use super::{BROKER, Inputs, METRICS_PORT, child_meta, child_name, env, selector};
use crate::crd::WaitingRoom;

/// The port brokers serve visitors (HTTP/SSE) and their probes on; their
/// metrics are on [`METRICS_PORT`], out of the visitors' reach.
pub const PORT: i32 = 8080;
/// Pod annotation carrying the entry-token key digest.
pub const KEY_DIGEST_ANNOTATION: &str = "usher.dev/token-key-digest";

/// A Secret mounted read-only at `path`.
fn secret_volume(name: &str, secret: String, path: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
}

/// Where admitted visitors may be sent back to, the entry cookie's domain,
/// where the gate's redirect form sends refused visitors, and whether entry
/// tokens are bound to the browser (on unless turned off).
fn gate_env(room: &WaitingRoom) -> Vec<EnvVar> {
    let Some(gate) = &room.spec.gate else {
        return Vec::new();
    };
    let origins = (!gate.return_origins.is_empty()).then(|| gate.return_origins.join(","));
    let binding_off = (gate.token_binding == Some(false)).then(|| "off".to_owned());
    env::present([
        ("USHER_RETURN_ORIGINS", origins),
        ("USHER_COOKIE_DOMAIN", gate.cookie_domain.clone()),
        ("USHER_WAITING_PAGE", gate.waiting_page.clone()),
        ("USHER_TOKEN_BINDING", binding_off),
    ])
}

/// Which proxies name the visitor, and how IPv6 visitors are counted.
fn address_env(room: &WaitingRoom) -> Vec<EnvVar> {
    let Some(bots) = &room.spec.bots else {
        return Vec::new();
    };
    let trusted = (!bots.trusted_proxies.is_empty()).then(|| bots.trusted_proxies.join(","));
    env::present([
        ("USHER_TRUSTED_PROXIES", trusted),
        ("USHER_IPV6_PREFIX", bots.ipv6_prefix.map(|p| p.to_string())),
    ])
}

/// Where a broker reads the room's invite codes.
const INVITES_MOUNT_PATH: &str = "/etc/usher/invites";
const INVITES_FILE: &str = "codes";

/// The priority lane's invite codes (a Secret key mounted as a file) and
/// the claim of platform users that qualifies.
fn lane_settings(room: &WaitingRoom) -> (Vec<EnvVar>, Vec<(Volume, VolumeMount)>) {
    let Some(lanes) = &room.spec.lanes else {
        return (Vec::new(), Vec::new());
    };
    let mut env = Vec::new();
    let mut volumes = Vec::new();
    if let Some(codes) = &lanes.invite_codes {
        let (mut volume, mount) =
            secret_volume("invite-codes", codes.name.clone(), INVITES_MOUNT_PATH);
        if let Some(source) = volume.secret.as_mut() {
            source.items = Some(vec![KeyToPath {
                key: codes.key.clone(),
                path: INVITES_FILE.into(),
                mode: None,
            }]);
        }
        volumes.push((volume, mount));
        env.push(env::plain(
            "USHER_INVITE_CODES",
            format!("{INVITES_MOUNT_PATH}/{INVITES_FILE}"),
        ));
    }
    if let Some(claim) = &lanes.priority_claim {
        let rule = match claim.values.as_slice() {
            [] => claim.name.clone(),
            values => format!("{}={}", claim.name, values.join(",")),
        };
        env.push(env::plain("USHER_PRIORITY_CLAIM", rule));
    }
    (env, volumes)
}

/// The forward-auth URL of the room for the shop's ingress.
pub fn gate_url(room: &WaitingRoom) -> String {
    format!("{}/gate", endpoint(room))
}

pub fn deployment(room: &WaitingRoom, inputs: &Inputs) -> Deployment {
    let mut env = env::role_env(room, PORT);
    env.push(env::listen("USHER_METRICS_LISTEN", METRICS_PORT));
    env.push(EnvVar {
        name: "USHER_TOKEN_KEY".into(),
        value: Some(format!("{MOUNT_PATH}/{KEY_FILE}")),
        value_from: None,
    });
    if inputs.retired_key {
        env.push(EnvVar {
            name: "USHER_TOKEN_RETIRED_KEYS".into(),
            value: Some(format!("{MOUNT_PATH}/{RETIRED_FILE}")),
            value_from: None,
        });
    }
    env.push(EnvVar {
        name: "USHER_BROKER_ID".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
    });
    env.push(EnvVar {
        name: "USHER_CHECKOUT_KEY".into(),
        value: Some(format!("{CHECKOUT_MOUNT_PATH}/{CHECKOUT_FILE}")),
        value_from: None,
    });
    env.extend(gate_env(room));
    env.extend(address_env(room));
    let (lane_env, lane_volumes) = lane_settings(room);
    env.extend(lane_env);
    env.extend(env::human_check_env(room));
    RuntimeDeployment {
        role: BROKER,
        replicas: inputs.broker_replicas,
        image: inputs.image.clone(),
        env,
        ports: vec![("http", PORT), ("metrics", METRICS_PORT)],
        probe_port: "http",
        // About 3 KiB per stream: 20,000 streams fit well inside 512 MiB.
        resources: room
            .spec
            .broker
            .resources
            .clone()
            .unwrap_or_else(|| resources(("500m", "256Mi"), ("2", "1Gi"))),
        volumes: vec![
            secret_volume("token-key", secret_name(room), MOUNT_PATH),
            secret_volume(
                "checkout-key",
                checkout_secret_name(room),
                CHECKOUT_MOUNT_PATH,
            ),
        ]
        .into_iter()
        .chain(lane_volumes)
        .collect(),
        annotations: annotations(
            env::config_hash(room),
            &[(KEY_DIGEST_ANNOTATION, inputs.token_key_digest.clone())],
        ),
    }
    .build(room)
}

pub fn service(room: &WaitingRoom) -> Service {
    Service {
        metadata: child_meta(room, child_name(room, BROKER), BROKER),
        spec: Some(ServiceSpec {
            selector: Some(selector(room, BROKER)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: PORT,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Voluntary disruptions (node drains) take one broker at a time.
pub fn disruption_budget(room: &WaitingRoom) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: child_meta(room, child_name(room, BROKER), BROKER),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(room, BROKER)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The room's URL inside the cluster.
pub fn endpoint(room: &WaitingRoom) -> String {
    let namespace = room.metadata.namespace.as_deref().unwrap_or("default");
    format!(
        "http://{}.{namespace}.svc:{PORT}/v1/rooms/{}",
        child_name(room, BROKER),
        room.event_id()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures::*;
    use super::*;

    fn env_value(env: &[EnvVar], name: &str) -> Option<String> {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn address_and_lane_settings_reach_the_brokers() {
        let room = super::super::fixtures::room(serde_json::json!({
            "capacity": 500, "redis": {"url": "redis://redis:6379/"},
            "bots": {"trustedProxies": ["10.0.0.0/8", "fd00::/8"], "ipv6Prefix": 56},
            "lanes": {
                "inviteCodes": {"name": "presale", "key": "codes.txt"},
                "priorityClaim": {"name": "tier", "values": ["fanclub", "gold"]}
            }
        }));
        let deployment = deployment(&room, &inputs());
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let env = container.env.as_ref().unwrap();
        let get = |name: &str| env_value(env, name);
        assert_eq!(
            get("USHER_TRUSTED_PROXIES").as_deref(),
            Some("10.0.0.0/8,fd00::/8")
        );
        assert_eq!(get("USHER_IPV6_PREFIX").as_deref(), Some("56"));
        assert_eq!(
            get("USHER_PRIORITY_CLAIM").as_deref(),
            Some("tier=fanclub,gold")
        );
        assert_eq!(
            get("USHER_INVITE_CODES").as_deref(),
            Some("/etc/usher/invites/codes")
        );
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "invite-codes")
            .unwrap();
        let source = volume.secret.unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("presale"));
        assert_eq!(source.items.unwrap()[0].key, "codes.txt");
        assert!(
            container
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/etc/usher/invites")
        );
        // Without them, nothing is added.
        let plain = deployment_env(&basic());
        assert!(!plain.iter().any(|e| e.name.contains("PROXIES")
            || e.name.contains("INVITE")
            || e.name.contains("CLAIM")));
    }

    fn deployment_env(room: &WaitingRoom) -> Vec<EnvVar> {
        let deployment = deployment(room, &inputs());
        deployment.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
    }

    #[test]
    fn the_gate_settings_reach_the_brokers() {
        let mut room = basic();
        room.spec.gate = Some(crate::crd::GateSpec {
            return_origins: vec![
                "https://shop.example".into(),
                "https://m.shop.example".into(),
            ],
            cookie_domain: Some("shop.example".into()),
            waiting_page: Some("https://queue.shop.example/".into()),
            ..Default::default()
        });
        let deployment = deployment(&room, &inputs());
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let get = |name: &str| env_value(&env, name);
        assert_eq!(
            get("USHER_RETURN_ORIGINS").as_deref(),
            Some("https://shop.example,https://m.shop.example")
        );
        assert_eq!(get("USHER_COOKIE_DOMAIN").as_deref(), Some("shop.example"));
        assert_eq!(
            get("USHER_WAITING_PAGE").as_deref(),
            Some("https://queue.shop.example/")
        );
        assert_eq!(
            gate_url(&room),
            "http://concert-broker.tickets.svc:8080/v1/rooms/concert/gate"
        );
        // Token binding is on unless the spec turns it off.
        assert_eq!(get("USHER_TOKEN_BINDING"), None);
        room.spec.gate.as_mut().unwrap().token_binding = Some(false);
        let unbound = super::deployment(&room, &inputs());
        let pod = unbound.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        assert_eq!(
            env_value(&env, "USHER_TOKEN_BINDING").as_deref(),
            Some("off")
        );
    }

    #[test]
    fn the_broker_deployment_runs_the_broker_with_its_key_and_probes() {
        let room = basic();
        let deployment = deployment(&room, &inputs());
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(deployment.metadata.name.as_deref(), Some("concert-broker"));
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.args.as_deref(), Some(&["broker".to_owned()][..]));
        assert_eq!(container.image.as_deref(), Some("usher:test"));
        let env = container.env.as_ref().unwrap();
        let get = |name: &str| env_value(env, name);
        assert_eq!(
            get("USHER_TOKEN_KEY").as_deref(),
            Some("/etc/usher/keys/entry.pem")
        );
        assert_eq!(get("USHER_LISTEN").as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(get("USHER_METRICS_LISTEN").as_deref(), Some("0.0.0.0:9090"));
        let ports: Vec<_> = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(ports, [("http", 8080), ("metrics", 9090)]);
        let readiness = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        // The probes ask the visitors' port: that is the one that must answer.
        assert_eq!(readiness.port, IntOrString::String("http".into()));
        let secrets: Vec<_> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.secret.as_ref().unwrap().secret_name.as_deref().unwrap())
            .collect();
        assert_eq!(secrets, ["concert-token-key", "concert-checkout-key"]);
        assert_eq!(
            get("USHER_CHECKOUT_KEY").as_deref(),
            Some("/etc/usher/checkout/key")
        );
        assert_eq!(get("USHER_RETURN_ORIGINS"), None);
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        assert_eq!(pod.topology_spread_constraints.as_ref().unwrap().len(), 2);
        // The selector matches the pod labels.
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(labels.get(k), Some(v));
        }
    }

    #[test]
    fn a_new_key_or_a_new_redis_rolls_the_pods_and_rules_or_scaling_do_not() {
        let annotations = |room: &WaitingRoom, inputs: &Inputs| {
            deployment(room, inputs)
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()
        };
        let base = annotations(&basic(), &inputs());
        let rekeyed = annotations(
            &basic(),
            &Inputs {
                token_key_digest: "new".into(),
                ..inputs()
            },
        );
        assert_ne!(base, rekeyed);
        let mut moved = basic();
        moved.spec.redis.url = Some("redis://elsewhere:6379/".into());
        assert_ne!(base, annotations(&moved, &inputs()));
        // Rules live in Redis: a pause changes no pod.
        let mut paused_room = basic();
        paused_room.spec.paused = true;
        paused_room.spec.capacity = 9;
        let whole = |room: &WaitingRoom| deployment(room, &inputs()).spec.unwrap().template;
        assert_eq!(whole(&basic()), whole(&paused_room));
        assert_eq!(
            base,
            annotations(
                &basic(),
                &Inputs {
                    broker_replicas: 9,
                    ..inputs()
                }
            )
        );
    }

    #[test]
    fn a_retired_key_is_handed_to_the_brokers_only_when_there_is_one() {
        let has = |inputs: &Inputs| {
            let deployment = deployment(&basic(), inputs);
            let env = deployment.spec.unwrap().template.spec.unwrap().containers[0]
                .env
                .clone()
                .unwrap();
            env.iter().any(|e| e.name == "USHER_TOKEN_RETIRED_KEYS")
        };
        assert!(!has(&inputs()));
        assert!(has(&Inputs {
            retired_key: true,
            ..inputs()
        }));
    }

    #[test]
    fn service_budget_and_endpoint_point_at_the_brokers() {
        let room = basic();
        let service = service(&room);
        assert_eq!(
            service.spec.as_ref().unwrap().selector,
            Some(selector(&room, BROKER))
        );
        // Visitors reach the brokers' HTTP port only, never their metrics.
        let ports = service.spec.unwrap().ports.unwrap();
        assert_eq!(
            ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            [8080],
            "{ports:?}"
        );
        assert_eq!(
            disruption_budget(&room).spec.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
        assert_eq!(
            endpoint(&room),
            "http://concert-broker.tickets.svc:8080/v1/rooms/concert"
        );
    }
}
