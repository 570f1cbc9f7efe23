//! The operator's commands on flows and users' data: what `onboarding flows`
//! and `onboarding users` do, over the same service (and, for users' data,
//! the same GraphQL operations) as the API.

use std::path::Path;

use serde_json::{Value, json};

use crate::config::DatabaseArgs;
use crate::db::Db;
use crate::domain::{FlowDeclaration, UserId, Viewer};
use crate::graphql::{self, Operations};
use crate::service::{Flows, Onboarding, Webhooks};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The viewer the command line acts as: an admin, named in logs and events.
const OPERATOR: &str = "command-line";

/// `onboarding flows publish FILE`.
pub async fn publish_flows(file: &Path, database: &DatabaseArgs) -> Result {
    let declarations = read_declarations(file)?;
    // A bad file is refused before the database is opened or migrated.
    for declaration in &declarations {
        declaration.check()?;
    }
    let flows = Flows::new(&migrated(database).await?);
    for (version, created) in flows.publish_all(declarations).await? {
        let what = if created { "published" } else { "unchanged" };
        print(&format!(
            "{}: version {} {what}\n",
            version.flow, version.version
        ))?;
    }
    Ok(())
}

/// `onboarding flows list`.
pub async fn list_flows(database: &DatabaseArgs) -> Result {
    let flows = Flows::new(&migrated(database).await?);
    let published = flows.flows(&operator()?).await?;
    if published.is_empty() {
        eprintln!("No flow is published yet: `onboarding flows publish FILE` publishes some.");
    }
    let rows: Vec<[String; 4]> = published
        .iter()
        .map(|flow| {
            let latest = flow.latest();
            let steps = match latest.steps.len() {
                1 => "1 step".to_owned(),
                n => format!("{n} steps"),
            };
            let version = format!("version {}", latest.version);
            [latest.flow.clone(), version, steps, latest.title.clone()]
        })
        .collect();
    // Columns lined up with spaces, for people: a tab lines up only short keys.
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (key_width, version_width, steps_width) = (width(0), width(1), width(2));
    for [key, version, steps, title] in &rows {
        print(&format!(
            "{key:key_width$}   {version:version_width$}   {steps:steps_width$}   {title}\n"
        ))?;
    }
    Ok(())
}

/// Whose data `onboarding users` and `onboarding groups` export or erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    User,
    Group,
}

impl Whose {
    /// The argument of the API's operations that names them.
    fn argument(self) -> &'static str {
        match self {
            Whose::User => "userId",
            Whose::Group => "groupId",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Whose::User => "user",
            Whose::Group => "group",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Whose::User => "User",
            Whose::Group => "Group",
        }
    }
}

/// `onboarding users export USER` and `onboarding groups export GROUP`: the
/// API's `exportUserData` or `exportGroupData`, as one JSON document with
/// the whole history. The events are read and written out a page at a
/// time, so that a history of any length takes bounded memory.
pub async fn export(whose: Whose, id: &str, database: &DatabaseArgs) -> Result {
    const STATE: &str = "id userId groupId flow version status currentStepIndex currentStep \
        steps { key title optional status completedAt skippedAt data } doneSteps totalSteps \
        startedAt completedAt dismissedAt snoozedUntil revision createdAt updatedAt";
    const EVENT: &str = "id userId groupId flow version type step actor requestId at data";
    let (argument, name) = (whose.argument(), whose.name());
    let export = format!(
        "query Export(${argument}: String!) {{ export{name}Data({argument}: ${argument}) {{ \
         {argument} flowStates {{ {STATE} }} events {{ {EVENT} }} \
         eventsPageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let older = format!(
        "query Older(${argument}: String!, $after: String) {{ \
         export{name}Data({argument}: ${argument}, after: $after) {{ \
         events {{ {EVENT} }} eventsPageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let operator = Operator::open(database).await?;
    let exported = operator.run(&export, json!({ argument: id })).await;
    let data = match exported {
        Ok(mut data) => data[format!("export{name}Data")].take(),
        Err(error) => {
            operator.close().await;
            return Err(error);
        }
    };
    let written = async {
        print(&format!(
            "{{\n  \"{argument}\": {},\n  \"flowStates\": {},\n  \"events\": [",
            data[argument], data["flowStates"]
        ))?;
        let mut first = true;
        let mut write_events = |events: &mut dyn Iterator<Item = &Value>| -> Result {
            for event in events {
                let separator = if first { "\n    " } else { ",\n    " };
                first = false;
                print(&format!("{separator}{event}"))?;
            }
            Ok(())
        };
        write_events(&mut data["events"].as_array().into_iter().flatten())?;
        let mut page = data["eventsPageInfo"].clone();
        while page["hasNextPage"] == true {
            let variables = json!({ argument: id, "after": page["endCursor"] });
            let mut older = operator.run(&older, variables).await?;
            let older = older[format!("export{name}Data")].take();
            write_events(&mut older["events"].as_array().into_iter().flatten())?;
            page = older["eventsPageInfo"].clone();
        }
        print("\n  ]\n}\n")
    }
    .await;
    operator.close().await;
    written
}

/// `onboarding users delete USER` and `onboarding groups delete GROUP`: the
/// API's `deleteUserData` or `deleteGroupData`.
pub async fn delete(whose: Whose, id: &str, database: &DatabaseArgs) -> Result {
    let (argument, name) = (whose.argument(), whose.name());
    let delete = format!(
        "mutation Delete(${argument}: String!) {{ delete{name}Data({argument}: ${argument}) {{ \
         {argument} flowStates events idempotencyKeys }} }}"
    );
    let operator = Operator::open(database).await?;
    let data = operator.run(&delete, json!({ argument: id })).await;
    operator.close().await;
    let data = data?;
    let deleted = &data[format!("delete{name}Data")];
    let count = |field: &str, what: &str| {
        let n = deleted[field].as_i64().unwrap_or_default();
        format!("{n} {what}{}", if n == 1 { "" } else { "s" })
    };
    print(&format!(
        "Erased {} {}: {}, {}, {}.\n",
        whose.noun(),
        deleted[argument].as_str().unwrap_or(id),
        count("flowStates", "flow state"),
        count("events", "event"),
        count("idempotencyKeys", "idempotency key")
    ))
}

/// An endpoint `onboarding webhooks add` registers.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<String>,
    pub flows: Vec<String>,
    pub description: Option<String>,
}

/// `onboarding webhooks add URL`: the API's `createWebhookEndpoint`; prints
/// the id and the secret, which is shown this once.
pub async fn add_webhook(
    endpoint: NewEndpoint,
    allow_private: bool,
    database: &DatabaseArgs,
) -> Result {
    const CREATE: &str = "mutation Create($input: WebhookEndpointInput!) { \
        createWebhookEndpoint(input: $input) { endpoint { id url } secret } }";
    let input = json!({
        "url": endpoint.url,
        "description": endpoint.description,
        "eventTypes": endpoint.event_types,
        "flows": endpoint.flows,
    });
    let operator = Operator::open_allowing(database, allow_private).await?;
    let created = operator.run(CREATE, json!({ "input": input })).await;
    operator.close().await;
    let created = &created?["createWebhookEndpoint"];
    print(&format!(
        "id: {}\nurl: {}\nsecret: {}\n",
        text(&created["endpoint"]["id"]),
        text(&created["endpoint"]["url"]),
        text(&created["secret"])
    ))?;
    eprintln!(
        "The secret is shown this once: give it to the receiver, which verifies every message \
         with it (Standard Webhooks). `rotateWebhookSecret` makes a new one."
    );
    Ok(())
}

/// `onboarding webhooks list`: id, state, URL, and what each delivers.
pub async fn list_webhooks(database: &DatabaseArgs) -> Result {
    const LIST: &str = "{ webhookEndpoints { id url enabled disabledReason eventTypes flows } }";
    let operator = Operator::open(database).await?;
    let listed = operator.run(LIST, json!({})).await;
    operator.close().await;
    let listed = listed?;
    let endpoints = listed["webhookEndpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if endpoints.is_empty() {
        eprintln!("No webhook endpoint is registered: `onboarding webhooks add URL` adds one.");
    }
    let every = |list: &Value, what: &str| match list.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(text).collect::<Vec<_>>().join(","),
        _ => format!("every {what}"),
    };
    for endpoint in &endpoints {
        let state = match endpoint["enabled"].as_bool() {
            Some(true) => "enabled".to_owned(),
            _ => format!("disabled ({})", text(&endpoint["disabledReason"])),
        };
        print(&format!(
            "{}   {}   {}   types: {}   flows: {}\n",
            text(&endpoint["id"]),
            text(&endpoint["url"]),
            state,
            every(&endpoint["eventTypes"], "type"),
            every(&endpoint["flows"], "flow"),
        ))?;
    }
    Ok(())
}

/// `onboarding webhooks remove ID`: the API's `deleteWebhookEndpoint`.
pub async fn remove_webhook(id: &str, database: &DatabaseArgs) -> Result {
    const DELETE: &str = "mutation Delete($id: ID!) { deleteWebhookEndpoint(id: $id) }";
    let operator = Operator::open(database).await?;
    let deleted = operator.run(DELETE, json!({ "id": id })).await;
    operator.close().await;
    deleted?;
    print(&format!(
        "Removed webhook endpoint {id} and its messages.\n"
    ))
}

/// A JSON string as it reads, without quotes.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Writes to stdout; a reader that went away (`| head`) is no error.
fn print(text: &str) -> Result {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// Declarations from a JSON file: one object, or an array of them.
fn read_declarations(file: &Path) -> Result<Vec<FlowDeclaration>> {
    let shown = file.display();
    let text =
        std::fs::read_to_string(file).map_err(|error| format!("cannot read {shown}: {error}"))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|error| format!("{shown} is not JSON: {error}"))?;
    let declarations = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(
                format!("{shown} must hold a declaration object or an array of them").into(),
            );
        }
    };
    declarations
        .into_iter()
        .enumerate()
        .map(|(index, declaration)| {
            serde_json::from_value(declaration).map_err(|error| {
                format!(
                    "declaration {} of {shown}: {error}; a declaration is {{\"key\": ..., \
                     \"title\": ..., \"steps\": [{{\"key\": ..., \"title\": ..., \"optional\": \
                     false}}], \"reonboarding\": \"KEEP\", \"scope\": \"USER\"}}",
                    index + 1
                )
                .into()
            })
        })
        .collect()
}

/// The API's schema over the database, run as the operator: an admin.
struct Operator {
    db: Db,
    schema: graphql::OnboardingSchema,
    viewer: Viewer,
}

impl Operator {
    async fn open(database: &DatabaseArgs) -> Result<Self> {
        Self::open_allowing(database, false).await
    }

    /// `allow_private` as WEBHOOK_ALLOW_PRIVATE says for the server.
    async fn open_allowing(database: &DatabaseArgs, allow_private: bool) -> Result<Self> {
        let db = migrated(database).await?;
        let flows = Flows::new(&db);
        let schema = graphql::schema(Some(Operations {
            onboarding: Onboarding::new(db.clone()),
            webhooks: Webhooks::new(&flows, allow_private),
            flows,
        }));
        Ok(Self {
            db,
            schema,
            viewer: operator()?,
        })
    }

    /// Runs one operation, returning its `data`, or its first error.
    async fn run(&self, document: &str, variables: Value) -> Result<Value> {
        let request = async_graphql::Request::new(document)
            .variables(async_graphql::Variables::from_json(variables))
            .data(self.viewer.clone());
        let response = self.schema.execute(request).await;
        if let Some(error) = response.errors.first() {
            return Err(error.message.clone().into());
        }
        Ok(response.data.into_json()?)
    }

    async fn close(self) {
        self.db.close().await;
    }
}

async fn migrated(database: &DatabaseArgs) -> Result<Db> {
    let db = Db::connect(database).await?;
    db.migrate().await?;
    Ok(db)
}

fn operator() -> Result<Viewer> {
    Ok(Viewer::User {
        id: UserId::parse(OPERATOR.to_owned())?,
        admin: true,
        groups: Vec::new(),
    })
}
