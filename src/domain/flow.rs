//! Flows: the onboarding experiences a product declares (a welcome tour, a
//! setup checklist, a "what's new" tour), their versions, and the rules a
//! declaration must meet.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Error, Result, Scope, check_text};

/// The built-in flow whose state is the original onboarding state.
pub const ONBOARDING: &str = "onboarding";
/// Most steps in one flow.
pub const MAX_STEPS: usize = 100;
/// Largest declaration, as JSON: below the request body's 64 KiB, so that
/// the API reaches it and answers with this limit.
pub const MAX_DECLARATION_BYTES: usize = 48 * 1024;
/// Longest flow or step key.
const MAX_KEY_BYTES: usize = 64;
/// Longest flow or step title.
const MAX_TITLE_CHARS: usize = 200;

/// Checks a flow or step key: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn check_key(what: &str, key: &str) -> Result<()> {
    let mut bytes = key.bytes();
    let valid = key.len() <= MAX_KEY_BYTES
        && matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    if valid {
        return Ok(());
    }
    Err(Error::BadUserInput(format!(
        "{what} `{key}` is not a valid key: use 1 to {MAX_KEY_BYTES} characters of a-z, 0-9, `_` \
         and `-`, starting with a letter or a digit (e.g. `welcome-tour`)."
    )))
}

/// One step of a declared flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDeclaration {
    pub key: String,
    pub title: String,
    #[serde(default)]
    pub optional: bool,
}

/// What publishing a new version does to users already in the flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reonboarding {
    /// They stay on the version they are on.
    #[default]
    Keep,
    /// Those in progress start again on the new version.
    RestartInProgress,
    /// Everyone starts again on the new version.
    RestartAll,
    /// Those who completed it go through the steps the new version added,
    /// their earlier completions carried over by step key.
    NewStepsOnly,
}

impl Reonboarding {
    pub fn as_str(self) -> &'static str {
        match self {
            Reonboarding::Keep => "KEEP",
            Reonboarding::RestartInProgress => "RESTART_IN_PROGRESS",
            Reonboarding::RestartAll => "RESTART_ALL",
            Reonboarding::NewStepsOnly => "NEW_STEPS_ONLY",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Reonboarding::Keep,
            Reonboarding::RestartInProgress,
            Reonboarding::RestartAll,
            Reonboarding::NewStepsOnly,
        ]
        .into_iter()
        .find(|policy| policy.as_str() == text)
    }
}

/// A flow as an admin or a deploy publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDeclaration {
    pub key: String,
    pub title: String,
    pub steps: Vec<StepDeclaration>,
    #[serde(default)]
    pub reonboarding: Reonboarding,
    /// Fixed when the flow is first published; left out, USER then and
    /// unchanged later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

impl FlowDeclaration {
    /// The scope a version published from this declaration has, after
    /// `latest`: the flow's scope since its first publish, which a
    /// declaration may repeat but not change.
    pub fn scope_after(&self, latest: Option<&FlowVersion>) -> Result<Scope> {
        match (latest, self.scope) {
            (None, scope) => Ok(scope.unwrap_or_default()),
            (Some(latest), Some(scope)) if scope != latest.scope => {
                Err(Error::BadUserInput(format!(
                    "Flow `{}` was first published with scope {}, which is fixed: it cannot be \
                     published as {}. Leave `scope` out, or declare it {}.",
                    self.key,
                    latest.scope.as_str(),
                    scope.as_str(),
                    latest.scope.as_str()
                )))
            }
            (Some(latest), _) => Ok(latest.scope),
        }
    }

    /// Checks every rule a declaration must meet, naming the first it breaks.
    pub fn check(&self) -> Result<()> {
        let refuse = |message: String| Err(Error::BadUserInput(message));
        check_key("The flow key", &self.key)?;
        if self.key == ONBOARDING && self.scope == Some(Scope::Group) {
            return refuse(format!(
                "Flow `{ONBOARDING}` is each user's own onboarding (scope USER): it cannot be \
                 published as GROUP."
            ));
        }
        check_title(&format!("Flow `{}`", self.key), &self.title)?;
        if self.steps.is_empty() {
            return refuse(format!(
                "Flow `{}` declares no steps: give at least one.",
                self.key
            ));
        }
        if self.steps.len() > MAX_STEPS {
            return refuse(format!(
                "Flow `{}` declares {} steps; at most {MAX_STEPS} are allowed.",
                self.key,
                self.steps.len()
            ));
        }
        for (index, step) in self.steps.iter().enumerate() {
            check_key("The step key", &step.key)?;
            check_title(&format!("Step `{}`", step.key), &step.title)?;
            if self.steps[..index]
                .iter()
                .any(|earlier| earlier.key == step.key)
            {
                return refuse(format!(
                    "Flow `{}` declares the step `{}` twice: step keys must be unique.",
                    self.key, step.key
                ));
            }
        }
        let size = serde_json::to_vec(self).map_or(usize::MAX, |json| json.len());
        if size > MAX_DECLARATION_BYTES {
            return refuse(format!(
                "Flow `{}` is {size} bytes as JSON; a declaration may be at most {} KiB.",
                self.key,
                MAX_DECLARATION_BYTES / 1024
            ));
        }
        Ok(())
    }
}

fn check_title(what: &str, title: &str) -> Result<()> {
    check_text(&format!("{what}'s title"), title)?;
    let length = title.chars().count();
    if title.trim().is_empty() || length > MAX_TITLE_CHARS {
        return Err(Error::BadUserInput(format!(
            "{what} needs a title of 1 to {MAX_TITLE_CHARS} characters."
        )));
    }
    Ok(())
}

/// One published version of a flow. Versions never change once published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowVersion {
    pub flow: String,
    /// From 1; the built-in `onboarding` flow is version 0 until published.
    pub version: i32,
    pub title: String,
    pub steps: Vec<StepDeclaration>,
    pub reonboarding: Reonboarding,
    /// The flow's scope; every version of a flow has the same.
    pub scope: Scope,
    pub published_at: DateTime<Utc>,
}

impl FlowVersion {
    /// The `onboarding` flow before any declaration: no declared steps, its
    /// current step the original integer.
    pub fn undeclared_onboarding() -> Self {
        Self {
            flow: ONBOARDING.to_owned(),
            version: 0,
            title: "Onboarding".to_owned(),
            steps: Vec::new(),
            reonboarding: Reonboarding::Keep,
            scope: Scope::User,
            published_at: DateTime::UNIX_EPOCH,
        }
    }

    /// Whether publishing `declaration` would repeat this version.
    pub fn declares_the_same(&self, declaration: &FlowDeclaration) -> bool {
        self.title == declaration.title && self.steps == declaration.steps
    }

    /// The index of step `key`, or an error listing the valid keys.
    pub fn step_index(&self, key: &str) -> Result<usize> {
        self.steps
            .iter()
            .position(|step| step.key == key)
            .ok_or_else(|| {
                let valid: Vec<String> = self
                    .steps
                    .iter()
                    .map(|step| format!("`{}`", step.key))
                    .collect();
                let valid = if valid.is_empty() {
                    "it declares no steps".to_owned()
                } else {
                    format!("its steps are {}", valid.join(", "))
                };
                Error::BadUserInput(format!(
                    "Flow `{}` (version {}) has no step `{key}`: {valid}.",
                    self.flow, self.version
                ))
            })
    }
}

/// A published flow: every version, oldest first, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub versions: Vec<FlowVersion>,
}

impl Flow {
    pub fn key(&self) -> &str {
        &self.latest().flow
    }

    pub fn latest(&self) -> &FlowVersion {
        self.versions
            .last()
            .expect("a published flow has a version")
    }

    pub fn scope(&self) -> Scope {
        self.latest().scope
    }

    pub fn version(&self, version: i32) -> Option<&FlowVersion> {
        self.versions.iter().find(|each| each.version == version)
    }
}

/// The error for a flow that was never published.
pub fn unknown_flow(key: &str) -> Error {
    Error::BadUserInput(format!(
        "There is no flow `{key}`: publish it first (publishFlow, or `onboarding flows publish`)."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration(steps: &[&str]) -> FlowDeclaration {
        FlowDeclaration {
            key: "checklist".to_owned(),
            title: "Set up".to_owned(),
            steps: steps
                .iter()
                .map(|key| StepDeclaration {
                    key: (*key).to_owned(),
                    title: format!("Step {key}"),
                    optional: false,
                })
                .collect(),
            reonboarding: Reonboarding::Keep,
            scope: None,
        }
    }

    #[test]
    fn keys_are_lowercase_letters_digits_dashes_and_underscores() {
        for key in ["a", "0", "welcome-tour", "step_2", &"k".repeat(64)] {
            assert!(check_key("key", key).is_ok(), "{key}");
        }
        for key in ["", "-a", "_a", "A", "a b", "a.b", "é", &"k".repeat(65)] {
            assert!(check_key("key", key).is_err(), "{key}");
        }
    }

    #[test]
    fn a_declaration_needs_unique_steps_within_bounds() {
        assert!(declaration(&["a", "b"]).check().is_ok());
        let message = |declaration: FlowDeclaration| declaration.check().unwrap_err().to_string();
        assert!(message(declaration(&[])).contains("no steps"));
        assert!(message(declaration(&["a", "b", "a"])).contains("`a` twice"));
        assert!(message(declaration(&["a", "Bad"])).contains("`Bad`"));
        let many: Vec<String> = (0..=MAX_STEPS).map(|n| format!("s{n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(message(declaration(&many)).contains("at most 100"));
    }

    #[test]
    fn an_unknown_step_lists_the_valid_ones() {
        let version = FlowVersion {
            flow: "checklist".to_owned(),
            version: 1,
            title: "Set up".to_owned(),
            steps: declaration(&["profile", "invite"]).steps,
            reonboarding: Reonboarding::Keep,
            scope: Scope::User,
            published_at: Utc::now(),
        };
        let message = version.step_index("billing").unwrap_err().to_string();
        assert!(message.contains("`profile`, `invite`"), "{message}");
        assert_eq!(version.step_index("invite").ok(), Some(1));
    }
}
