//! The flow operations: publishing declarations, reading and changing a
//! user's state in a flow, its history, and a user's data as a whole. Each
//! checks who asks, then leaves the rules to the domain and the SQL to the
//! store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use crate::db::{Db, Decide, FlowStore, FlowWrite, Idempotency, Provenance};
use crate::domain::{
    Access, Error, Flow, FlowChange, FlowDeclaration, FlowEvent, FlowState, FlowVersion, GroupId,
    Happened, ONBOARDING, Result, Scope, Subject, UserId, Viewer, check_key, check_text, now,
    unknown_flow,
};

/// How long the published flows are read from memory before the database
/// is asked again: publishing on another replica shows within this.
const CATALOG_TTL: Duration = Duration::from_secs(1);
/// Idempotency keys are kept at least a day.
const KEEP_KEYS: TimeDelta = TimeDelta::hours(25);
/// Most events one page holds.
pub const MAX_PAGE: i64 = 100;

/// A state together with the version of the flow it is on, which gives its
/// steps their titles and order, and whose state it is.
#[derive(Debug, Clone)]
pub struct FlowStateView {
    pub state: FlowState,
    /// The user's own state, or a group's and the user asking for it.
    pub subject: Subject,
    flow: Arc<Flow>,
    /// Where the state's version is in `flow.versions`.
    index: usize,
}

impl FlowStateView {
    /// The state as it reads at `now`, on its version of `flow`.
    fn new(
        flow: &Arc<Flow>,
        state: FlowState,
        subject: &Subject,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let index = flow
            .versions
            .iter()
            .position(|version| version.version == state.version)
            .ok_or_else(|| unknown_version(flow, state.version))?;
        Ok(Self {
            state: state.as_of(now),
            subject: subject.clone(),
            flow: Arc::clone(flow),
            index,
        })
    }

    /// The version of the flow the state is on: its steps' titles and order.
    pub fn version(&self) -> &FlowVersion {
        &self.flow.versions[self.index]
    }
}

/// One page of events, newest first.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<FlowEvent>,
    pub has_next_page: bool,
}

impl EventPage {
    /// The first `size` of `events`, read with one more to tell whether
    /// more follow.
    pub(super) fn of(mut events: Vec<FlowEvent>, size: i64) -> Self {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let has_next_page = events.len() > size;
        events.truncate(size);
        Self {
            events,
            has_next_page,
        }
    }
}

/// What a write request carries besides the change.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub expected_revision: Option<i64>,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
}

/// Every flow a state can be in, as last read: the published ones, and
/// `onboarding` with its undeclared version 0 first.
#[derive(Debug)]
struct Catalog {
    flows: BTreeMap<String, Arc<Flow>>,
    read_at: Instant,
}

impl Catalog {
    /// The flows as published: without `onboarding`'s version 0, and without
    /// `onboarding` until it is published.
    fn published(&self) -> impl Iterator<Item = Flow> + '_ {
        self.flows.values().filter_map(|flow| {
            let versions: Vec<FlowVersion> = flow
                .versions
                .iter()
                .filter(|version| version.version > 0)
                .cloned()
                .collect();
            (!versions.is_empty()).then_some(Flow { versions })
        })
    }
}

/// The step keys of each version, by flow and version.
pub type VersionSteps = std::collections::HashMap<(String, i32), Vec<String>>;

/// The flow operations.
#[derive(Debug, Clone)]
pub struct Flows {
    pub(super) store: FlowStore,
    catalog: Arc<RwLock<Option<Arc<Catalog>>>>,
    /// Held while the catalog is read from the database: one read at a
    /// time, whose result every caller waiting for it shares.
    reading_catalog: Arc<tokio::sync::Mutex<()>>,
}

impl Flows {
    pub fn new(db: &Db) -> Self {
        Self {
            store: db.flows().clone(),
            catalog: Arc::default(),
            reading_catalog: Arc::default(),
        }
    }

    /// Forgets expired idempotency keys once an hour, while the server runs.
    pub fn forget_expired_keys(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut hourly = tokio::time::interval(Duration::from_secs(60 * 60));
            loop {
                hourly.tick().await;
                match store.forget_keys_before(now() - KEEP_KEYS).await {
                    Ok(0) => {}
                    Ok(forgotten) => tracing::info!(forgotten, "expired idempotency keys removed"),
                    Err(error) => tracing::warn!(%error, "cannot remove expired idempotency keys"),
                }
            }
        })
    }

    /// Every published flow, by key.
    pub async fn flows(&self, viewer: &Viewer) -> Result<Vec<Flow>> {
        signed_in(viewer)?;
        Ok(self.catalog().await?.published().collect())
    }

    /// The published flow `key`, if any.
    pub async fn flow(&self, viewer: &Viewer, key: &str) -> Result<Option<Flow>> {
        signed_in(viewer)?;
        Ok(self
            .catalog()
            .await?
            .published()
            .find(|flow| flow.key() == key))
    }

    /// The keys of the published flows.
    pub async fn published_keys(&self) -> Result<Vec<String>> {
        Ok(self
            .catalog()
            .await?
            .published()
            .map(|flow| flow.key().to_owned())
            .collect())
    }

    /// The keys of the published flows, read from the database now.
    pub async fn published_keys_now(&self) -> Result<Vec<String>> {
        Ok(self
            .catalog_read_after(Instant::now())
            .await?
            .published()
            .map(|flow| flow.key().to_owned())
            .collect())
    }

    /// The step keys of every version of every flow, by flow and version,
    /// `onboarding`'s undeclared version 0 among them; read again from the
    /// database when `reread`.
    pub async fn version_steps(&self, reread: bool) -> Result<VersionSteps> {
        let catalog = if reread {
            self.catalog_read_after(Instant::now()).await?
        } else {
            self.catalog().await?
        };
        Ok(catalog
            .flows
            .values()
            .flat_map(|flow| flow.versions.iter())
            .map(|version| {
                let keys = version.steps.iter().map(|step| step.key.clone()).collect();
                ((version.flow.clone(), version.version), keys)
            })
            .collect())
    }

    /// Publishes one declaration (admins only).
    pub async fn publish(&self, viewer: &Viewer, declaration: FlowDeclaration) -> Result<Flow> {
        admin(viewer, "publish flows")?;
        let key = declaration.key.clone();
        let published = self.publish_all(vec![declaration]).await?;
        if let Some((version, true)) = published.first() {
            tracing::info!(flow = %key, version = version.version, actor = ?viewer_id(viewer), "flow published");
        }
        self.reread(&key).await?;
        self.catalog()
            .await?
            .published()
            .find(|flow| flow.key() == key)
            .ok_or_else(|| Error::Internal("a published flow is missing".into()))
    }

    /// Publishes every declaration that changed, all or none, as a deploy
    /// does from a file: each flow's latest version and whether it is new.
    pub async fn publish_all(
        &self,
        declarations: Vec<FlowDeclaration>,
    ) -> Result<Vec<(FlowVersion, bool)>> {
        for declaration in &declarations {
            declaration.check()?;
        }
        let published = self.store.publish(declarations, now()).await?;
        // This replica's requests see the new versions at once; should the
        // read fail, they see them within `CATALOG_TTL`.
        if let Err(error) = self.catalog_read_after(Instant::now()).await {
            tracing::warn!(%error, "cannot read the flows again after publishing");
        }
        Ok(published)
    }

    /// The user's or the group's state in `flow`, created on first access.
    pub async fn state(
        &self,
        viewer: &Viewer,
        flow: &str,
        user_id: Option<String>,
        group_id: Option<String>,
    ) -> Result<FlowStateView> {
        signed_in(viewer)?;
        let flow = self.published(flow).await?;
        let subject = viewer.subject(&flow, user_id, group_id, Access::Read)?;
        self.state_now(&flow, &subject, now()).await
    }

    /// The subject's state in `flow`, stored on first access.
    pub(super) async fn state_now(
        &self,
        flow: &Arc<Flow>,
        subject: &Subject,
        now: DateTime<Utc>,
    ) -> Result<FlowStateView> {
        let state = match self.store.state(subject.key(), flow.key()).await? {
            Some(state) => state,
            None => {
                let fresh = FlowState::new(subject.key(), flow.latest(), now);
                self.store.create(fresh).await?
            }
        };
        let flow = self.with_version(Arc::clone(flow), state.version).await?;
        current(&flow, state, subject, now)
    }

    /// The user's state in every published USER flow, or with `group_id`
    /// the group's in every GROUP flow; untouched flows read NOT_STARTED
    /// and are not stored.
    pub async fn states(
        &self,
        viewer: &Viewer,
        user_id: Option<String>,
        group_id: Option<String>,
    ) -> Result<Vec<FlowStateView>> {
        let user = viewer.acting_on(user_id)?;
        let (subject, scope) = match group_id {
            None => (Subject::User(user), Scope::User),
            Some(group_id) => {
                let group = viewer.group(Some(group_id), String::new)?;
                (Subject::Group { group, user }, Scope::Group)
            }
        };
        self.states_of(&subject, scope).await
    }

    /// The state of `subject` in every published flow of `scope`.
    pub(super) async fn states_of(
        &self,
        subject: &Subject,
        scope: Scope,
    ) -> Result<Vec<FlowStateView>> {
        let mut stored: BTreeMap<String, FlowState> = self
            .store
            .states(subject.key())
            .await?
            .into_iter()
            .map(|state| (state.flow.clone(), state))
            .collect();
        let catalog = self.catalog_of(stored.values()).await?;
        let now = now();
        let mut views = Vec::with_capacity(catalog.flows.len());
        for flow in catalog.flows.values().filter(|flow| flow.scope() == scope) {
            let view = match stored.remove(flow.key()) {
                Some(state) => current(flow, state, subject, now)?,
                None => {
                    let fresh = FlowState::new(subject.key(), flow.latest(), now);
                    FlowStateView::new(flow, fresh, subject, now)?
                }
            };
            views.push(view);
        }
        Ok(views)
    }

    /// The stored states of `subject` in the flows of `scope`.
    pub(super) async fn stored_states_of(
        &self,
        subject: &Subject,
        scope: Scope,
    ) -> Result<Vec<FlowStateView>> {
        let stored = self.store.states(subject.key()).await?;
        let catalog = self.catalog_of(stored.iter()).await?;
        let now = now();
        stored
            .into_iter()
            .filter_map(|state| {
                let flow = catalog.flows.get(&state.flow)?;
                (flow.scope() == scope).then(|| current(flow, state, subject, now))
            })
            .collect()
    }

    /// `state`, as stored and read for `viewer`: the state a CONFLICT
    /// carries, as a read would give it.
    pub async fn view_of(&self, viewer: &Viewer, state: FlowState) -> Result<FlowStateView> {
        let flow = self.published(&state.flow).await?;
        let flow = self.with_version(flow, state.version).await?;
        let user = viewer.acting_on(None)?;
        let subject = match flow.scope() {
            Scope::User => Subject::User(UserId::parse(state.user_id.clone())?),
            Scope::Group => Subject::Group {
                group: GroupId::parse(state.user_id.clone())?,
                user,
            },
        };
        current(&flow, state, &subject, now())
    }

    /// Applies `change` to the user's state in `flow`, in one transaction
    /// with its event.
    #[allow(clippy::too_many_arguments)]
    pub async fn change(
        &self,
        viewer: &Viewer,
        flow: &str,
        user_id: Option<String>,
        group_id: Option<String>,
        change: FlowChange,
        options: WriteOptions,
    ) -> Result<FlowStateView> {
        signed_in(viewer)?;
        let now = now();
        change.check(now)?;
        let mut flow = self.published(flow).await?;
        let subject = viewer.subject(&flow, user_id, group_id, Access::Write)?;
        let idempotency = options
            .idempotency_key
            .as_ref()
            .map(|key| {
                let caller = viewer.id().unwrap_or_default();
                idempotency(
                    key,
                    caller,
                    &change,
                    flow.key(),
                    &subject,
                    options.expected_revision,
                )
            })
            .transpose()?;
        let provenance = provenance(viewer, options.request_id);
        let write = |flow: &Arc<Flow>| FlowWrite {
            fresh: FlowState::new(subject.key(), flow.latest(), now),
            provenance: provenance.clone(),
            idempotency: idempotency.clone(),
            now,
            decide: decide(
                Arc::clone(flow),
                change.clone(),
                options.expected_revision,
                now,
            ),
        };
        let written = match self.store.write(write(&flow)).await {
            // Stored by a replica that has read a version this one has not.
            Err(error) if is_unknown_version(&error) => {
                flow = self.reread(flow.key()).await?;
                self.store.write(write(&flow)).await
            }
            written => written,
        }?;
        // A retry's first answer may be on a version published since.
        let flow = self.with_version(flow, written.version).await?;
        FlowStateView::new(&flow, written, &subject, now)
    }

    /// The events of the user's states, or of a group's, newest first,
    /// `first` at a time after the cursor. A GROUP flow, or `group_id`,
    /// names a group's; else they are the user's in every USER flow.
    pub async fn events(
        &self,
        viewer: &Viewer,
        flow: Option<&str>,
        user_id: Option<String>,
        group_id: Option<String>,
        first: i64,
        after: Option<i64>,
    ) -> Result<EventPage> {
        signed_in(viewer)?;
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(Error::BadUserInput(format!(
                "`first` must be 1 to {MAX_PAGE}; got {first}."
            )));
        }
        let subject = match flow {
            Some(flow) => {
                let flow = self.published(flow).await?;
                viewer.subject(&flow, user_id, group_id, Access::Read)?
            }
            None => {
                let user = viewer.acting_on(user_id)?;
                match group_id {
                    None => Subject::User(user),
                    Some(group_id) => Subject::Group {
                        group: viewer.group(Some(group_id), String::new)?,
                        user,
                    },
                }
            }
        };
        let scope = scope_of(&subject);
        let events = self
            .store
            .events(subject.key(), scope, flow, after, first + 1)
            .await?;
        Ok(EventPage::of(events_of(scope, events), first))
    }

    /// The flow `key` a state can be in, or an error naming it. A key this
    /// replica does not know is looked up, and when another replica has
    /// published it since, the flows are read again: an unknown key costs
    /// one indexed read, like any other request.
    pub(super) async fn published(&self, key: &str) -> Result<Arc<Flow>> {
        check_key("The flow key", key)?;
        if let Some(flow) = self.catalog().await?.flows.get(key) {
            return Ok(Arc::clone(flow));
        }
        if !self.store.is_published(key).await? {
            return Err(unknown_flow(key));
        }
        self.reread(key).await
    }

    /// The flow `key` as the database has it now.
    async fn reread(&self, key: &str) -> Result<Arc<Flow>> {
        let catalog = self.catalog_read_after(Instant::now()).await?;
        catalog
            .flows
            .get(key)
            .cloned()
            .ok_or_else(|| unknown_flow(key))
    }

    /// `flow`, read again when it lacks `version`: a state stored by a
    /// replica that has read a newer version than this one.
    pub(super) async fn with_version(&self, flow: Arc<Flow>, version: i32) -> Result<Arc<Flow>> {
        if flow.version(version).is_some() {
            return Ok(flow);
        }
        let reread = self.reread(flow.key()).await?;
        match reread.version(version) {
            Some(_) => Ok(reread),
            None => Err(unknown_version(&reread, version)),
        }
    }

    /// The catalog, read again when it lacks the flow or version of one of
    /// `states`.
    async fn catalog_of(
        &self,
        mut states: impl Iterator<Item = &FlowState>,
    ) -> Result<Arc<Catalog>> {
        let catalog = self.catalog().await?;
        let known = |state: &FlowState| {
            catalog
                .flows
                .get(&state.flow)
                .is_some_and(|flow| flow.version(state.version).is_some())
        };
        if states.all(known) {
            return Ok(catalog);
        }
        self.catalog_read_after(Instant::now()).await
    }

    /// The catalog as last read, when read within `CATALOG_TTL`.
    async fn catalog(&self) -> Result<Arc<Catalog>> {
        match self.cached_catalog() {
            Some(catalog) if catalog.read_at.elapsed() < CATALOG_TTL => Ok(catalog),
            _ => {
                let oldest = Instant::now().checked_sub(CATALOG_TTL);
                self.catalog_read_after(oldest.unwrap_or_else(Instant::now))
                    .await
            }
        }
    }

    /// A catalog read from the database after `after`: the one another
    /// caller just read, or one read now. Reads happen one at a time, so
    /// callers that find the catalog stale together read it once.
    async fn catalog_read_after(&self, after: Instant) -> Result<Arc<Catalog>> {
        let _one_read_at_a_time = self.reading_catalog.lock().await;
        if let Some(catalog) = self.cached_catalog()
            && catalog.read_at > after
        {
            return Ok(catalog);
        }
        let read_at = Instant::now();
        let mut flows: BTreeMap<String, Flow> = BTreeMap::new();
        flows.insert(
            ONBOARDING.to_owned(),
            Flow {
                versions: vec![FlowVersion::undeclared_onboarding()],
            },
        );
        for version in self.store.versions().await? {
            flows
                .entry(version.flow.clone())
                .or_insert_with(|| Flow {
                    versions: Vec::new(),
                })
                .versions
                .push(version);
        }
        let catalog = Arc::new(Catalog {
            flows: flows
                .into_iter()
                .map(|(key, flow)| (key, Arc::new(flow)))
                .collect(),
            read_at,
        });
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&catalog));
        Ok(catalog)
    }

    fn cached_catalog(&self) -> Option<Arc<Catalog>> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The state as it reads at `now`, on the latest version of `flow` when a
/// re-onboarding policy published since the user's version moves it there.
/// Worked out in memory: a read never writes, and the user's next write
/// stores the policy's effect with its REONBOARDED event.
pub(super) fn current(
    flow: &Arc<Flow>,
    state: FlowState,
    subject: &Subject,
    now: DateTime<Utc>,
) -> Result<FlowStateView> {
    let mut state = state.as_of(now);
    reonboarded(flow, &mut state, now)?;
    FlowStateView::new(flow, state, subject, now)
}

fn scope_of(subject: &Subject) -> Scope {
    match subject {
        Subject::User(_) => Scope::User,
        Subject::Group { .. } => Scope::Group,
    }
}

/// `events` as read from states of `scope`.
pub(super) fn events_of(scope: Scope, events: Vec<FlowEvent>) -> Vec<FlowEvent> {
    match scope {
        Scope::User => events,
        Scope::Group => events.into_iter().map(FlowEvent::of_group).collect(),
    }
}

/// What a write of `change` decides, given the state it locked: fails on a
/// stale `expectedRevision`; applies first any re-onboarding policy
/// published since the user's last write, then the change.
fn decide(
    flow: Arc<Flow>,
    change: FlowChange,
    expected_revision: Option<i64>,
    now: DateTime<Utc>,
) -> Decide {
    Box::new(move |stored: &FlowState| {
        stored.check_revision(expected_revision)?;
        let mut next = stored.clone().as_of(now);
        let mut happenings: Vec<Happened> =
            reonboarded(&flow, &mut next, now)?.into_iter().collect();
        let version = version_of(&flow, next.version)?;
        happenings.extend(next.apply(&change, version, flow.latest(), now)?);
        Ok(Some((next, happenings)))
    })
}

/// A state on a version this replica has not read yet.
#[derive(Debug, thiserror::Error)]
#[error("flow {flow} has no version {version} in this replica's catalog")]
struct UnknownVersion {
    flow: String,
    version: i32,
}

fn unknown_version(flow: &Flow, version: i32) -> Error {
    Error::Internal(Box::new(UnknownVersion {
        flow: flow.key().to_owned(),
        version,
    }))
}

fn is_unknown_version(error: &Error) -> bool {
    matches!(error, Error::Internal(source) if source.is::<UnknownVersion>())
}

/// Applies, once, the re-onboarding policies of the versions published
/// since the state's; the event when it moved the state.
fn reonboarded(flow: &Flow, state: &mut FlowState, now: DateTime<Utc>) -> Result<Option<Happened>> {
    if state.version >= flow.latest().version {
        return Ok(None);
    }
    let current = version_of(flow, state.version)?.clone();
    let newer: Vec<FlowVersion> = flow
        .versions
        .iter()
        .filter(|version| version.version > state.version)
        .cloned()
        .collect();
    Ok(state.reonboard(&current, &newer, now))
}

fn version_of(flow: &Flow, version: i32) -> Result<&FlowVersion> {
    flow.version(version)
        .ok_or_else(|| unknown_version(flow, version))
}

pub(super) fn signed_in(viewer: &Viewer) -> Result<()> {
    match viewer {
        Viewer::Anonymous => Err(Error::Unauthenticated),
        Viewer::User { .. } => Ok(()),
    }
}

/// Admits admins only to `what` ("publish flows").
pub(super) fn admin(viewer: &Viewer, what: &'static str) -> Result<()> {
    match viewer {
        Viewer::Anonymous => Err(Error::Unauthenticated),
        Viewer::User { admin: true, .. } => Ok(()),
        Viewer::User { admin: false, .. } => Err(Error::AdminOnly(what)),
    }
}

pub(super) fn viewer_id(viewer: &Viewer) -> Option<&str> {
    match viewer {
        Viewer::User { id, .. } => Some(id.as_str()),
        Viewer::Anonymous => None,
    }
}

fn provenance(viewer: &Viewer, request_id: Option<String>) -> Provenance {
    Provenance {
        actor: viewer_id(viewer).unwrap_or_default().to_owned(),
        request_id,
    }
}

/// An idempotency key of 1 to 255 bytes, and the fingerprint of its
/// change: kept as the caller's (a USER flow's user for an admin's write).
fn idempotency(
    key: &str,
    caller: &str,
    change: &FlowChange,
    flow: &str,
    subject: &Subject,
    expected_revision: Option<i64>,
) -> Result<Idempotency> {
    let fingerprint = change.fingerprint(flow, subject.key());
    let mut idempotency = idempotency_key(
        key,
        subject.user_id(),
        caller,
        fingerprint,
        expected_revision,
    )?;
    idempotency.group_id = subject.group_id().map(str::to_owned);
    Ok(idempotency)
}

/// An idempotency key of 1 to 255 bytes, and `fingerprint`, which tells a
/// retry from the key reused for another change. Keys are the caller's:
/// kept under `owner`, whose state the answer holds (so that erasing them
/// removes it), a key `caller` sends for someone else is kept as a digest of
/// the caller and the key, which none of the owner's own keys can meet.
pub(super) fn idempotency_key(
    key: &str,
    owner: &str,
    caller: &str,
    fingerprint: String,
    expected_revision: Option<i64>,
) -> Result<Idempotency> {
    if key.is_empty() || key.len() > 255 {
        return Err(Error::BadUserInput(format!(
            "`idempotencyKey` must be 1 to 255 bytes; got {} bytes.",
            key.len()
        )));
    }
    check_text("`idempotencyKey`", key)?;
    let kept_as = if caller == owner {
        key.to_owned()
    } else {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(caller)
            .chain_update([0])
            .chain_update(key)
            .finalize();
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("\u{1}sent by another user: {hex}")
    };
    Ok(Idempotency {
        key: kept_as,
        sent: key.to_owned(),
        fingerprint: format!("{fingerprint} expected={expected_revision:?}"),
        owner: owner.to_owned(),
        group_id: None,
    })
}
