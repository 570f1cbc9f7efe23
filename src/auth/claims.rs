//! Where a verified token keeps the user id and the roles: `sub` and
//! `roles` by default, or the claims an identity provider uses instead.

use serde_json::{Map, Value};

use super::TokenError;
use crate::domain::{GroupId, UserId, Viewer};

/// A claim named by a setting: a top-level claim (`sub`, `cognito:groups`,
/// `https://example.com/roles`), or else a dotted path into nested objects
/// (`realm_access.roles`).
#[derive(Debug, Clone)]
pub struct ClaimPath(Box<str>);

impl ClaimPath {
    pub fn new(name: &str) -> Self {
        Self(name.into())
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    fn find<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(value) = claims.get(self.name()) {
            return Some(value);
        }
        let mut segments = self.0.split('.');
        let first = claims.get(segments.next()?)?;
        segments.try_fold(first, |value, segment| value.get(segment))
    }
}

/// The claims that name the user, their roles and their groups, and the
/// role of admins.
#[derive(Debug, Clone)]
pub struct ClaimNames {
    pub user: ClaimPath,
    pub roles: ClaimPath,
    pub groups: ClaimPath,
    pub admin_role: String,
}

impl ClaimNames {
    /// The viewer a verified token speaks for: the user claim must be a
    /// valid user id, and the roles claim, when present, an array of strings.
    pub fn viewer(&self, claims: &Map<String, Value>) -> Result<Viewer, TokenError> {
        let id = match self.user.find(claims) {
            Some(Value::String(id)) => UserId::parse(id.clone()).map_err(|_| self.malformed())?,
            _ => return Err(self.malformed()),
        };
        let admin = match self.roles.find(claims) {
            None | Some(Value::Null) => false,
            Some(Value::Array(roles)) => {
                let mut admin = false;
                for role in roles {
                    let role = role.as_str().ok_or_else(|| self.malformed())?;
                    admin |= role == self.admin_role;
                }
                admin
            }
            Some(_) => return Err(self.malformed()),
        };
        let groups = self.groups(claims)?;
        Ok(Viewer::User { id, admin, groups })
    }

    /// The groups the token names: one group id (a string: Auth0
    /// Organizations, Clerk, WorkOS) or an array of them (Keycloak, Okta),
    /// in its order, each once; none without the claim.
    fn groups(&self, claims: &Map<String, Value>) -> Result<Vec<GroupId>, TokenError> {
        let group = |value: &Value| match value {
            Value::String(id) => GroupId::parse(id.clone()).map_err(|_| self.bad_groups()),
            _ => Err(self.bad_groups()),
        };
        match self.groups.find(claims) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(values)) => {
                let mut groups: Vec<GroupId> = Vec::with_capacity(values.len());
                for value in values {
                    let id = group(value)?;
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
                Ok(groups)
            }
            Some(value) => Ok(vec![group(value)?]),
        }
    }

    fn bad_groups(&self) -> TokenError {
        TokenError::BadGroups {
            groups: self.groups.name().to_owned(),
        }
    }

    pub fn malformed(&self) -> TokenError {
        TokenError::BadClaims {
            user: self.user.name().to_owned(),
            roles: self.roles.name().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(user: &str, roles: &str) -> ClaimNames {
        ClaimNames {
            user: ClaimPath::new(user),
            roles: ClaimPath::new(roles),
            groups: ClaimPath::new("org_id"),
            admin_role: "admin".to_owned(),
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    fn admin(viewer: Result<Viewer, TokenError>) -> bool {
        matches!(viewer, Ok(Viewer::User { admin: true, .. }))
    }

    #[test]
    fn roles_are_found_at_the_top_level_or_by_a_dotted_path() {
        let keycloak = claims(json!({ "sub": "a", "realm_access": { "roles": ["admin"] } }));
        assert!(admin(names("sub", "realm_access.roles").viewer(&keycloak)));

        let auth0 = claims(json!({ "sub": "a", "https://example.com/roles": ["admin"] }));
        assert!(admin(
            names("sub", "https://example.com/roles").viewer(&auth0)
        ));

        let cognito = claims(json!({ "sub": "a", "cognito:groups": ["admin"] }));
        assert!(admin(names("sub", "cognito:groups").viewer(&cognito)));
    }

    #[test]
    fn the_user_id_may_come_from_another_claim() {
        let token = claims(json!({ "sub": "x", "email": "ann@example.com" }));
        let viewer = names("email", "roles").viewer(&token).expect("a viewer");
        assert!(
            matches!(viewer, Viewer::User { id, admin: false, .. } if id.as_str() == "ann@example.com")
        );
    }

    #[test]
    fn a_missing_user_claim_or_roles_of_the_wrong_shape_are_refused_naming_the_claims() {
        let names = names("uid", "groups");
        for token in [
            json!({ "sub": "a" }),
            json!({ "uid": 7 }),
            json!({ "uid": "" }),
            json!({ "uid": "a", "groups": "admin" }),
            json!({ "uid": "a", "groups": [1] }),
        ] {
            let error = names.viewer(&claims(token)).expect_err("refused");
            let message = error.to_string();
            assert!(
                message.contains("`uid`") && message.contains("`groups`"),
                "{message}"
            );
        }
    }

    fn groups(names: &ClaimNames, token: Value) -> Result<Vec<String>, TokenError> {
        match names.viewer(&claims(token))? {
            Viewer::User { groups, .. } => Ok(groups
                .iter()
                .map(|group| group.as_str().to_owned())
                .collect()),
            Viewer::Anonymous => Ok(Vec::new()),
        }
    }

    #[test]
    fn groups_come_as_a_string_an_array_or_by_a_dotted_path() {
        let mut names = names("sub", "roles");
        let auth0 = json!({ "sub": "a", "org_id": "org_1" });
        assert_eq!(groups(&names, auth0).expect("groups"), ["org_1"]);
        let none = json!({ "sub": "a" });
        assert!(groups(&names, none).expect("no groups").is_empty());

        names.groups = ClaimPath::new("organization");
        let keycloak = json!({ "sub": "a", "organization": ["acme", "globex", "acme"] });
        assert_eq!(
            groups(&names, keycloak).expect("groups"),
            ["acme", "globex"]
        );

        names.groups = ClaimPath::new("app.teams");
        let nested = json!({ "sub": "a", "app": { "teams": ["t1"] } });
        assert_eq!(groups(&names, nested).expect("groups"), ["t1"]);
    }

    #[test]
    fn groups_of_another_shape_are_refused_naming_the_claim_and_its_setting() {
        let names = names("sub", "roles");
        for token in [
            json!({ "sub": "a", "org_id": 7 }),
            json!({ "sub": "a", "org_id": [1] }),
            json!({ "sub": "a", "org_id": "" }),
            json!({ "sub": "a", "org_id": { "id": "x" } }),
            json!({ "sub": "a", "org_id": "g".repeat(256) }),
        ] {
            let message = groups(&names, token).expect_err("refused").to_string();
            assert!(
                message.contains("`org_id`") && message.contains("JWT_GROUPS_CLAIM"),
                "{message}"
            );
        }
    }
}
