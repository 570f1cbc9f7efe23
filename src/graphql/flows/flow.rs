//! Published flows and their versions, and the declaration to publish.

use async_graphql::{InputObject, Object, SimpleObject};

use super::enums::{FlowScope, ReonboardingPolicy};
use crate::domain::{self, FlowDeclaration, StepDeclaration};
use crate::graphql::scalars::DateTime;

/// One step of a flow's version.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "FlowStep", serial)]
pub struct FlowStep {
    /// Stable key: what clients pass to completeStep and the like.
    key: String,
    /// What the user sees.
    title: String,
    /// An optional step is not needed for the flow to complete.
    optional: bool,
}

impl From<&StepDeclaration> for FlowStep {
    fn from(step: &StepDeclaration) -> Self {
        Self {
            key: step.key.clone(),
            title: step.title.clone(),
            optional: step.optional,
        }
    }
}

/// One published version of a flow; versions never change.
pub struct FlowVersion(domain::FlowVersion);

/// One published version of a flow; versions never change.
#[Object(name = "FlowVersion", serial)]
impl FlowVersion {
    /// From 1, one up at each publish that changed the title or the steps.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// The flow's title in this version.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// The steps, in order.
    async fn steps(&self) -> Vec<FlowStep> {
        self.0.steps.iter().map(FlowStep::from).collect()
    }

    /// What publishing this version did to users already in the flow.
    async fn reonboarding(&self) -> ReonboardingPolicy {
        self.0.reonboarding.into()
    }

    /// When this version was published.
    async fn published_at(&self) -> DateTime {
        DateTime(self.0.published_at)
    }
}

/// A published flow: its latest version, and every version.
pub struct Flow(pub(super) domain::Flow);

/// A published flow: its latest version, and every version.
#[Object(name = "Flow", serial)]
impl Flow {
    /// The flow's key, e.g. `welcome-tour`.
    async fn key(&self) -> &str {
        self.0.key()
    }

    /// The latest version's title.
    async fn title(&self) -> &str {
        &self.0.latest().title
    }

    /// Whose progress the flow keeps: each user's, or each group's. Fixed
    /// when the flow was first published.
    async fn scope(&self) -> FlowScope {
        self.0.scope().into()
    }

    /// The latest version's number.
    async fn version(&self) -> i32 {
        self.0.latest().version
    }

    /// The latest version's steps, in order.
    async fn steps(&self) -> Vec<FlowStep> {
        self.0.latest().steps.iter().map(FlowStep::from).collect()
    }

    /// When the latest version was published.
    async fn published_at(&self) -> DateTime {
        DateTime(self.0.latest().published_at)
    }

    /// Every version, oldest first.
    async fn versions(&self) -> Vec<FlowVersion> {
        self.0.versions.iter().cloned().map(FlowVersion).collect()
    }
}

/// One step of a declaration.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "FlowStepInput")]
pub struct FlowStepInput {
    /// `[a-z0-9][a-z0-9_-]{0,63}`, unique in the flow.
    key: String,
    /// What the user sees.
    title: String,
    /// An optional step is not needed for the flow to complete.
    #[graphql(default_with = "Some(false)")]
    optional: Option<bool>,
}

/// A flow declaration to publish.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "PublishFlowInput")]
pub struct PublishFlowInput {
    /// `[a-z0-9][a-z0-9_-]{0,63}`.
    key: String,
    /// The flow's title.
    title: String,
    /// 1 to 100 steps, in order.
    steps: Vec<FlowStepInput>,
    /// What a new version does to users already in the flow.
    #[graphql(default_with = "Some(ReonboardingPolicy::Keep)")]
    reonboarding: Option<ReonboardingPolicy>,
    /// USER when the flow is first published; left out later, the scope stays as it is.
    scope: Option<FlowScope>,
}

impl From<PublishFlowInput> for FlowDeclaration {
    fn from(input: PublishFlowInput) -> Self {
        Self {
            key: input.key,
            title: input.title,
            steps: input
                .steps
                .into_iter()
                .map(|step| StepDeclaration {
                    key: step.key,
                    title: step.title,
                    optional: step.optional.unwrap_or(false),
                })
                .collect(),
            reonboarding: input.reonboarding.unwrap_or_default().into(),
            scope: input.scope.map(Into::into),
        }
    }
}
