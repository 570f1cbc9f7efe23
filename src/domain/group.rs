//! Groups: the teams, workspaces or companies whose members share a GROUP
//! flow's progress, and the rule that decides whose state a request names.

use serde::{Deserialize, Serialize};

use super::{Error, Flow, Result, UserId, Viewer, check_text};

/// Whose progress a flow keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    /// Each user's own.
    #[default]
    User,
    /// Each group's, shared by its members.
    Group,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "USER",
            Scope::Group => "GROUP",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Scope::User, Scope::Group]
            .into_iter()
            .find(|scope| scope.as_str() == text)
    }
}

/// A group id as the identity provider names it in the groups claim:
/// 1 to 255 bytes, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupId(String);

impl GroupId {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(value: String) -> Result<Self> {
        if value.is_empty() || value.len() > Self::MAX_BYTES {
            return Err(Error::BadUserInput(format!(
                "groupId must be 1 to {} bytes long; got {} bytes.",
                Self::MAX_BYTES,
                value.len()
            )));
        }
        check_text("groupId", &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whose state in a flow a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user's own state in a USER flow.
    User(UserId),
    /// A group's state in a GROUP flow, and the user asking for it: the
    /// caller, or the user an admin names.
    Group { group: GroupId, user: UserId },
}

impl Subject {
    /// What the store keeps the state under: the user's id, or the group's.
    /// A flow has one scope, so a user's and a group's states never share
    /// a key and a flow.
    pub fn key(&self) -> &str {
        match self {
            Subject::User(user) => user.as_str(),
            Subject::Group { group, .. } => group.as_str(),
        }
    }

    /// The user asking, or whose own state it is.
    pub fn user_id(&self) -> &str {
        match self {
            Subject::User(user) | Subject::Group { user, .. } => user.as_str(),
        }
    }

    pub fn group_id(&self) -> Option<&str> {
        match self {
            Subject::User(_) => None,
            Subject::Group { group, .. } => Some(group.as_str()),
        }
    }
}

/// Whether a request reads a state or changes it: a group's state takes no
/// `userId` on a write, where the actor is always the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Viewer {
    /// Whose state in `flow` a request names with `user_id` and `group_id`,
    /// by the flow's scope: the user's (the caller's, or another's for an
    /// admin), or a group's the caller belongs to (any group for an admin).
    pub fn subject(
        &self,
        flow: &Flow,
        user_id: Option<String>,
        group_id: Option<String>,
        access: Access,
    ) -> Result<Subject> {
        match flow.scope() {
            Scope::User => {
                if group_id.is_some() {
                    return Err(Error::BadUserInput(format!(
                        "Flow `{}` keeps each user's own progress (scope USER): leave `groupId` \
                         out.",
                        flow.key()
                    )));
                }
                Ok(Subject::User(self.acting_on(user_id)?))
            }
            Scope::Group => {
                if access == Access::Write && user_id.is_some() {
                    return Err(Error::BadUserInput(format!(
                        "Flow `{}` keeps one state per group (scope GROUP), changed by its \
                         members as themselves: leave `userId` out and pass `groupId`.",
                        flow.key()
                    )));
                }
                let user = self.acting_on(user_id)?;
                let group = self.group(group_id, || format!("Flow `{}`", flow.key()))?;
                Ok(Subject::Group { group, user })
            }
        }
    }

    /// The group `group_id` names, when the caller may act on it; without
    /// one, the caller's only group. `what` names what needs a group, for
    /// the message that asks for one.
    pub fn group(
        &self,
        group_id: Option<String>,
        what: impl FnOnce() -> String,
    ) -> Result<GroupId> {
        let Viewer::User { admin, groups, .. } = self else {
            return Err(Error::Unauthenticated);
        };
        match group_id {
            Some(group_id) => {
                let group = GroupId::parse(group_id)?;
                if *admin || groups.contains(&group) {
                    Ok(group)
                } else {
                    Err(Error::NotMember)
                }
            }
            None => match groups.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(Error::BadUserInput(format!(
                    "{} keeps one state per group: pass `groupId` (your token names no group).",
                    what()
                ))),
                several => {
                    let listed: Vec<String> = several
                        .iter()
                        .map(|group| format!("`{}`", group.as_str()))
                        .collect();
                    Err(Error::BadUserInput(format!(
                        "{} keeps one state per group and your token names several: pass \
                         `groupId`, one of {}.",
                        what(),
                        listed.join(", ")
                    )))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::domain::{FlowVersion, Reonboarding, StepDeclaration};

    fn flow(scope: Scope) -> Flow {
        Flow {
            versions: vec![FlowVersion {
                flow: "setup".to_owned(),
                version: 1,
                title: "Set up".to_owned(),
                steps: vec![StepDeclaration {
                    key: "a".to_owned(),
                    title: "A".to_owned(),
                    optional: false,
                }],
                reonboarding: Reonboarding::Keep,
                scope,
                published_at: DateTime::UNIX_EPOCH,
            }],
        }
    }

    fn member(groups: &[&str], admin: bool) -> Viewer {
        Viewer::User {
            id: UserId::parse("ann".to_owned()).expect("an id"),
            admin,
            groups: groups
                .iter()
                .map(|group| GroupId::parse((*group).to_owned()).expect("a group"))
                .collect(),
        }
    }

    fn code(result: Result<Subject>) -> &'static str {
        result.expect_err("refused").code()
    }

    #[test]
    fn a_token_naming_one_group_needs_no_group_id() {
        let subject = member(&["acme"], false)
            .subject(&flow(Scope::Group), None, None, Access::Write)
            .expect("the group");
        assert_eq!(subject.key(), "acme");
        assert_eq!(subject.user_id(), "ann");
        assert_eq!(subject.group_id(), Some("acme"));
    }

    #[test]
    fn several_groups_or_none_must_name_one_and_are_listed() {
        let error = member(&["acme", "globex"], false)
            .subject(&flow(Scope::Group), None, None, Access::Read)
            .expect_err("ambiguous");
        assert!(error.to_string().contains("`acme`, `globex`"), "{error}");
        assert_eq!(error.code(), "BAD_USER_INPUT");
        let none = member(&[], false).subject(&flow(Scope::Group), None, None, Access::Read);
        assert_eq!(code(none), "BAD_USER_INPUT");
    }

    #[test]
    fn non_members_are_forbidden_and_admins_act_on_any_group() {
        let group = || Some("initech".to_owned());
        let outsider =
            member(&["acme"], false).subject(&flow(Scope::Group), None, group(), Access::Read);
        assert_eq!(code(outsider), "FORBIDDEN");
        let admin = member(&[], true)
            .subject(&flow(Scope::Group), None, group(), Access::Write)
            .expect("any group");
        assert_eq!(admin.key(), "initech");
    }

    #[test]
    fn each_scope_refuses_the_other_scopes_argument() {
        let group_on_user_flow = member(&["acme"], false).subject(
            &flow(Scope::User),
            None,
            Some("acme".to_owned()),
            Access::Read,
        );
        assert_eq!(code(group_on_user_flow), "BAD_USER_INPUT");
        let user_on_group_write = member(&["acme"], true).subject(
            &flow(Scope::Group),
            Some("bob".to_owned()),
            None,
            Access::Write,
        );
        assert_eq!(code(user_on_group_write), "BAD_USER_INPUT");
        let admin_reads_for_bob = member(&["acme"], true)
            .subject(
                &flow(Scope::Group),
                Some("bob".to_owned()),
                None,
                Access::Read,
            )
            .expect("a read for bob");
        assert_eq!(admin_reads_for_bob.user_id(), "bob");
    }

    #[test]
    fn group_ids_are_1_to_255_bytes_without_nul() {
        for bad in [String::new(), "g".repeat(256), "a\0b".to_owned()] {
            let error = GroupId::parse(bad).expect_err("refused");
            assert_eq!(error.code(), "BAD_USER_INPUT");
        }
        assert!(GroupId::parse("g".repeat(255)).is_ok());
    }
}
