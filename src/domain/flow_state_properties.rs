//! The flow state's invariants over every sequence of operations: each
//! write as the service makes it (a policy published since the user's
//! version first, then the change), publishes of new versions between them,
//! and time passing.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use super::Scope;
use super::flow::{FlowVersion, Reonboarding, StepDeclaration};
use super::flow_state::{EventType, FlowChange, FlowState, FlowStatus};

/// The step keys versions draw from.
const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum Operation {
    Change(FlowChange),
    /// A new version: which of `KEYS` it declares and which are optional.
    Publish {
        policy: Reonboarding,
        declared: [bool; 5],
        optional: [bool; 5],
    },
    Wait(i64),
}

fn a_change() -> impl Strategy<Value = FlowChange> {
    let step = (0..KEYS.len()).prop_map(|index| KEYS[index].to_owned());
    prop_oneof![
        Just(FlowChange::Start),
        (step.clone(), any::<bool>()).prop_map(|(step, with_data)| FlowChange::CompleteStep {
            step,
            data: with_data.then(serde_json::Map::new),
        }),
        step.clone().prop_map(|step| FlowChange::SkipStep { step }),
        step.prop_map(|step| FlowChange::GoToStep { step }),
        Just(FlowChange::Complete),
        Just(FlowChange::Dismiss),
        (1..5_000i64).prop_map(|seconds| FlowChange::Snooze {
            until: start() + TimeDelta::seconds(seconds)
        }),
        Just(FlowChange::Restart),
    ]
}

fn an_operation() -> impl Strategy<Value = Operation> {
    let policy = prop_oneof![
        Just(Reonboarding::Keep),
        Just(Reonboarding::RestartInProgress),
        Just(Reonboarding::RestartAll),
        Just(Reonboarding::NewStepsOnly),
    ];
    prop_oneof![
        6 => a_change().prop_map(Operation::Change),
        1 => (policy, any::<[bool; 5]>(), any::<[bool; 5]>()).prop_map(
            |(policy, declared, optional)| Operation::Publish { policy, declared, optional }
        ),
        1 => (0..3_000i64).prop_map(Operation::Wait),
    ]
}

fn start() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::days(20_000)
}

fn version(
    number: i32,
    declared: [bool; 5],
    optional: [bool; 5],
    policy: Reonboarding,
) -> FlowVersion {
    let mut steps: Vec<StepDeclaration> = KEYS
        .iter()
        .enumerate()
        .filter(|(index, _)| declared[*index])
        .map(|(index, key)| StepDeclaration {
            key: (*key).to_owned(),
            title: key.to_uppercase(),
            optional: optional[index],
        })
        .collect();
    if steps.is_empty() {
        steps.push(StepDeclaration {
            key: "a".to_owned(),
            title: "A".to_owned(),
            optional: false,
        });
    }
    FlowVersion {
        flow: "checklist".to_owned(),
        version: number,
        title: "Set up".to_owned(),
        steps,
        reonboarding: policy,
        scope: Scope::User,
        published_at: start(),
    }
}

/// What must hold of a state as it reads at `now`, on `versions`.
fn check_invariants(state: &FlowState, versions: &[FlowVersion], now: DateTime<Utc>) {
    let read = state.clone().as_of(now);
    assert_eq!(
        read.completed_at.is_some(),
        read.status == FlowStatus::Completed,
        "completedAt is set exactly when COMPLETED: {read:?}"
    );
    assert_eq!(
        read.snoozed_until.is_some(),
        read.status == FlowStatus::Snoozed,
        "snoozedUntil is set exactly when SNOOZED: {read:?}"
    );
    let own = &versions[usize::try_from(read.version - 1).expect("a version from 1")];
    assert!(
        usize::try_from(read.current_step).is_ok_and(|step| step <= own.steps.len()),
        "the current step is within the version: {read:?}"
    );
    for key in read.steps.keys() {
        assert!(
            own.steps.iter().any(|step| &step.key == key),
            "every step done is declared by the state's version: {read:?}"
        );
    }
}

proptest! {
    // A failing sequence is printed, shrunk, rather than saved to a file.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_sequence_of_operations_keeps_the_flow_states_invariants(
        operations in prop::collection::vec(an_operation(), 1..40)
    ) {
        let mut versions = vec![version(1, [true, true, true, false, false], [false, true, false, false, false], Reonboarding::Keep)];
        let mut now = start();
        let mut state = FlowState::new("u", &versions[0], now);
        for operation in operations {
            match operation {
                Operation::Wait(seconds) => now += TimeDelta::seconds(seconds),
                Operation::Publish { policy, declared, optional } => {
                    let number = i32::try_from(versions.len()).expect("few versions") + 1;
                    versions.push(version(number, declared, optional, policy));
                }
                Operation::Change(change) => {
                    now += TimeDelta::milliseconds(1);
                    let mut next = state.clone().as_of(now);
                    let latest = versions.last().expect("a version");
                    let own = versions[usize::try_from(next.version - 1).expect("from 1")].clone();
                    let newer: Vec<FlowVersion> = versions
                        .iter()
                        .filter(|version| version.version > next.version)
                        .cloned()
                        .collect();
                    let mut events: Vec<EventType> =
                        next.reonboard(&own, &newer, now).into_iter().map(|event| event.kind).collect();
                    let before = next.status;
                    let own = &versions[usize::try_from(next.version - 1).expect("from 1")];
                    let Ok(happened) = next.apply(&change, own, latest, now) else {
                        continue;
                    };
                    events.extend(happened.iter().map(|event| event.kind));
                    let completions = events.iter().filter(|kind| **kind == EventType::FlowCompleted).count();
                    let completed_by_a_step = before != FlowStatus::Completed
                        && next.status == FlowStatus::Completed
                        && matches!(change, FlowChange::CompleteStep { .. } | FlowChange::SkipStep { .. });
                    let expected = usize::from(completed_by_a_step || change == FlowChange::Complete);
                    prop_assert_eq!(completions, expected, "FLOW_COMPLETED once when the flow completes: {:?} {:?}", change, events);
                    state = next;
                }
            }
            check_invariants(&state, &versions, now);
        }
    }
}
