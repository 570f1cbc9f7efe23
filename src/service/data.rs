//! A user's and a group's data as a whole: everything kept about them, for
//! the person who asks for their data and the team that leaves, and its
//! erasure.

use crate::db::{Erased, ErasedGroup};
use crate::domain::{GroupId, Result, Scope, Subject, UserId, Viewer};

use super::flows::{EventPage, FlowStateView, Flows, MAX_PAGE, admin, events_of, viewer_id};

/// Most events an export holds, as many as a page of `flowEvents`: the
/// newest; the rest page on through the export's `after`, or come from the
/// command line's streamed export. A history grows without bound; an
/// answer may not.
pub const MAX_EXPORT_EVENTS: i64 = MAX_PAGE;

/// Everything the service keeps about one user: every state, and the
/// newest events, up to `MAX_EXPORT_EVENTS`, the events of groups' states
/// the user made among them.
#[derive(Debug, Clone)]
pub struct UserData {
    pub user_id: String,
    pub flow_states: Vec<FlowStateView>,
    pub events: EventPage,
}

/// Everything the service keeps about one group: its state in every GROUP
/// flow it has one in, and the newest events, up to `MAX_EXPORT_EVENTS`.
#[derive(Debug, Clone)]
pub struct GroupData {
    pub group_id: String,
    pub flow_states: Vec<FlowStateView>,
    pub events: EventPage,
}

impl Flows {
    /// Every flow state and event of the user (the user, or an admin): the
    /// newest events, or with `after` those older than it.
    pub async fn export(
        &self,
        viewer: &Viewer,
        user_id: Option<String>,
        after: Option<i64>,
    ) -> Result<UserData> {
        let user_id = viewer.acting_on(user_id)?;
        self.export_user(&user_id, after).await
    }

    /// Every flow state of `user_id`, and the events of the user's data,
    /// those the user made in groups' states among them.
    pub async fn export_user(&self, user_id: &UserId, after: Option<i64>) -> Result<UserData> {
        let subject = Subject::User(user_id.clone());
        let flow_states = self.stored_states_of(&subject, Scope::User).await?;
        let events = self
            .store
            .user_data_events(user_id.as_str(), after, MAX_EXPORT_EVENTS + 1)
            .await?;
        Ok(UserData {
            user_id: user_id.as_str().to_owned(),
            flow_states,
            events: EventPage::of(events, MAX_EXPORT_EVENTS),
        })
    }

    /// Every flow state and event of the group (its members, or an admin):
    /// the newest events, or with `after` those older than it.
    pub async fn export_group(
        &self,
        viewer: &Viewer,
        group_id: String,
        after: Option<i64>,
    ) -> Result<GroupData> {
        let group = viewer.group(Some(group_id), String::new)?;
        let user = viewer.acting_on(None)?;
        self.export_group_data(Subject::Group { group, user }, after)
            .await
    }

    /// Every flow state of the group `subject` names, and its events.
    pub async fn export_group_data(
        &self,
        subject: Subject,
        after: Option<i64>,
    ) -> Result<GroupData> {
        let flow_states = self.stored_states_of(&subject, Scope::Group).await?;
        let events = self
            .store
            .events(
                subject.key(),
                Scope::Group,
                None,
                after,
                MAX_EXPORT_EVENTS + 1,
            )
            .await?;
        Ok(GroupData {
            group_id: subject.key().to_owned(),
            flow_states,
            events: EventPage::of(events_of(Scope::Group, events), MAX_EXPORT_EVENTS),
        })
    }

    /// Erases every row of the user (admins only).
    pub async fn erase(&self, viewer: &Viewer, user_id: String) -> Result<Erased> {
        admin(viewer, "erase users' data")?;
        let user_id = UserId::parse(user_id)?;
        self.erase_user(&user_id, viewer_id(viewer).unwrap_or("?"))
            .await
    }

    /// Erases every row of `user_id`; `by` is who asked, for the log.
    pub async fn erase_user(&self, user_id: &UserId, by: &str) -> Result<Erased> {
        let erased = self.store.erase(user_id.as_str()).await?;
        tracing::info!(
            user_id = user_id.as_str(),
            by,
            flow_states = erased.flow_states,
            events = erased.events,
            idempotency_keys = erased.idempotency_keys,
            events_anonymized = erased.events_anonymized,
            group_events_anonymized = erased.group_events_anonymized,
            "user data erased"
        );
        Ok(erased)
    }

    /// Erases every row of the group (admins only).
    pub async fn erase_group(&self, viewer: &Viewer, group_id: String) -> Result<ErasedGroup> {
        admin(viewer, "erase groups' data")?;
        let group_id = GroupId::parse(group_id)?;
        self.erase_group_data(&group_id, viewer_id(viewer).unwrap_or("?"))
            .await
    }

    /// Erases every state, event and idempotency record of `group_id`; `by`
    /// is who asked, for the log.
    pub async fn erase_group_data(&self, group_id: &GroupId, by: &str) -> Result<ErasedGroup> {
        let erased = self.store.erase_group(group_id.as_str()).await?;
        tracing::info!(
            group_id = group_id.as_str(),
            by,
            flow_states = erased.flow_states,
            events = erased.events,
            idempotency_keys = erased.idempotency_keys,
            "group data erased"
        );
        Ok(erased)
    }
}
