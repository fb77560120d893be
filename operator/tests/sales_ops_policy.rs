//! The chart's sales-ops admission policy keeps up with the CRD: every spec
//! field is either one the team may change or one the policy holds still.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use kube::CustomResourceExt as _;
use usher_operator::crd::WaitingRoom;

const POLICY: &str = include_str!("../../charts/usher/templates/sales-ops.yaml");

/// What `kubectl usher` changes, and all the team may change.
const CONTROLS: [&str; 5] = [
    "paused",
    "closesAt",
    "sessionDuration",
    "message",
    "admitNext",
];

/// The policy's check that `field` of `object` did not change.
fn unchanged(object: &str, field: &str) -> String {
    let (new, old) = (
        format!("object.{object}.{field}"),
        format!("oldObject.{object}.{field}"),
    );
    format!("(has({new}) ? has({old}) && {new} == {old} : !has({old}))")
}

/// The spec's properties in the CRD, and the required ones.
fn spec_fields() -> (BTreeSet<String>, BTreeSet<String>) {
    let crd = serde_json::to_value(WaitingRoom::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let properties = spec["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let required = spec["required"]
        .as_array()
        .map(|r| r.iter().map(|f| f.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (properties, required)
}

#[test]
fn every_spec_field_is_a_control_or_held_still() {
    let (fields, required) = spec_fields();
    for control in CONTROLS {
        assert!(fields.contains(control), "{control} is not a spec field");
        assert!(
            !POLICY.contains(&format!("object.spec.{control} ")),
            "the policy holds the control {control} still"
        );
    }
    for field in fields.iter().filter(|f| !CONTROLS.contains(&f.as_str())) {
        let optional_check = unchanged("spec", field);
        let required_check = format!("object.spec.{field} == oldObject.spec.{field}");
        let handled = POLICY.contains(&optional_check)
            || (required.contains(field) && POLICY.contains(&required_check));
        assert!(
            handled,
            "spec.{field} is new: add `{optional_check} &&` to the ValidatingAdmissionPolicy \
             in charts/usher/templates/sales-ops.yaml, or make it a control sales operations \
             may change (CONTROLS here, and the policy's message)"
        );
    }
}

#[test]
fn the_policy_names_only_spec_fields_that_exist() {
    let (fields, _) = spec_fields();
    let mentioned: BTreeSet<&str> = POLICY
        .split("oldObject.spec.")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap()
        })
        .collect();
    assert!(!mentioned.is_empty());
    for field in mentioned {
        assert!(
            fields.contains(field),
            "the policy checks spec.{field}, which the CRD lacks"
        );
    }
}

#[test]
fn the_policy_holds_the_metadata_still() {
    for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
        assert!(
            POLICY.contains(&unchanged("metadata", field)),
            "metadata.{field} is not held still"
        );
    }
    assert!(POLICY.contains(
        "message: sales operations may change only paused, closesAt, sessionDuration, message and admitNext\n"
    ));
    assert!(POLICY.contains("validationActions: [Deny]"));
    assert!(POLICY.contains("operations: [UPDATE]"));
}
