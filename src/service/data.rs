//! A user's and a group's data as a whole: everything kept about them, for
//! the person who asks for their data and the team that leaves, and its
//! erasure.

use crate::db::{Erased, ErasedGroup};
use crate::domain::{GroupId, Result, Scope, Subject, UserId, Viewer};

use super::flows::{EventPage, FlowStateView, Flows, MAX_PAGE, admin, events_of, viewer_id};

/// Most events an export holds, as many as a page of `flowEvents`: the
/// newest; the rest page on through `flowEvents`, or come from the command
/// line's streamed export. A history grows without bound; an answer may not.
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
    /// Every flow state and event of the user (the user, or an admin).
    pub async fn export(&self, viewer: &Viewer, user_id: Option<String>) -> Result<UserData> {
        let user_id = viewer.acting_on(user_id)?;
        self.export_user(&user_id).await
    }

    /// Every flow state of `user_id`, and the newest events, those the user
    /// made in groups' states among them, for the command line.
    pub async fn export_user(&self, user_id: &UserId) -> Result<UserData> {
        let subject = Subject::User(user_id.clone());
        let flow_states = self.stored_states_of(&subject, Scope::User).await?;
        let limit = MAX_EXPORT_EVENTS + 1;
        let mut events = self
            .store
            .events(user_id.as_str(), Scope::User, None, None, limit)
            .await?;
        let made_in_groups = self.store.group_events_by(user_id.as_str(), limit).await?;
        events.extend(events_of(Scope::Group, made_in_groups));
        events.sort_by_key(|event| std::cmp::Reverse(event.id));
        Ok(UserData {
            user_id: user_id.as_str().to_owned(),
            flow_states,
            events: EventPage::of(events, MAX_EXPORT_EVENTS),
        })
    }

    /// Every flow state and event of the group (its members, or an admin).
    pub async fn export_group(&self, viewer: &Viewer, group_id: String) -> Result<GroupData> {
        let group = viewer.group(Some(group_id), String::new)?;
        let user = viewer.acting_on(None)?;
        self.export_group_data(Subject::Group { group, user }).await
    }

    /// Every flow state of the group `subject` names, and the newest
    /// events, for the API and the command line.
    pub async fn export_group_data(&self, subject: Subject) -> Result<GroupData> {
        let flow_states = self.stored_states_of(&subject, Scope::Group).await?;
        let events = self
            .store
            .events(
                subject.key(),
                Scope::Group,
                None,
                None,
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
