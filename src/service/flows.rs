//! The flow operations: publishing declarations, reading and changing a
//! user's state in a flow, its history, and a user's data as a whole. Each
//! checks who asks, then leaves the rules to the domain and the SQL to the
//! store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use crate::db::{Db, Erased, FlowStore, FlowWrite, Idempotency, Provenance};
use crate::domain::{
    Error, Flow, FlowChange, FlowDeclaration, FlowEvent, FlowState, FlowVersion, Happened,
    ONBOARDING, Result, UserId, Viewer, check_key, now, unknown_flow,
};

/// How long the published flows are read from memory before the database
/// is asked again: publishing on another replica shows within this.
const CATALOG_TTL: Duration = Duration::from_secs(1);
/// Idempotency keys are kept at least a day.
const KEEP_KEYS: TimeDelta = TimeDelta::hours(25);
/// Most events one page holds.
pub const MAX_PAGE: i64 = 100;

/// A state together with the version of the flow it is on, which gives its
/// steps their titles and order.
#[derive(Debug, Clone)]
pub struct FlowStateView {
    pub state: FlowState,
    flow: Arc<Flow>,
    /// Where the state's version is in `flow.versions`.
    index: usize,
}

impl FlowStateView {
    /// The state as it reads at `now`, on its version of `flow`.
    fn new(flow: &Arc<Flow>, state: FlowState, now: DateTime<Utc>) -> Result<Self> {
        let index = flow
            .versions
            .iter()
            .position(|version| version.version == state.version)
            .ok_or_else(|| {
                Error::Internal(
                    format!("flow {} has no version {}", flow.key(), state.version).into(),
                )
            })?;
        Ok(Self {
            state: state.as_of(now),
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

/// Everything the service keeps about one user.
#[derive(Debug, Clone)]
pub struct UserData {
    pub user_id: String,
    pub flow_states: Vec<FlowStateView>,
    pub events: Vec<FlowEvent>,
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

/// The flow operations.
#[derive(Debug, Clone)]
pub struct Flows {
    store: FlowStore,
    catalog: Arc<RwLock<Option<Arc<Catalog>>>>,
}

impl Flows {
    pub fn new(db: &Db) -> Self {
        Self {
            store: db.flows().clone(),
            catalog: Arc::default(),
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

    /// Publishes one declaration (admins only).
    pub async fn publish(&self, viewer: &Viewer, declaration: FlowDeclaration) -> Result<Flow> {
        admin(viewer)?;
        let key = declaration.key.clone();
        let published = self.publish_all(vec![declaration]).await?;
        if let Some((version, true)) = published.first() {
            tracing::info!(flow = %key, version = version.version, actor = ?viewer_id(viewer), "flow published");
        }
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
        self.forget_catalog();
        Ok(published)
    }

    /// The user's state in `flow`, created on first access.
    pub async fn state(
        &self,
        viewer: &Viewer,
        flow: &str,
        user_id: Option<String>,
    ) -> Result<FlowStateView> {
        let user_id = viewer.acting_on(user_id)?;
        let flow = self.published(flow).await?;
        let now = now();
        let state = match self.store.state(user_id.as_str(), flow.key()).await? {
            Some(state) => state,
            None => {
                let fresh = FlowState::new(user_id.as_str(), flow.latest(), now);
                self.store.create(fresh).await?
            }
        };
        self.current(viewer, &flow, state, now).await
    }

    /// The user's state in every published flow; untouched flows read
    /// NOT_STARTED and are not stored.
    pub async fn states(
        &self,
        viewer: &Viewer,
        user_id: Option<String>,
    ) -> Result<Vec<FlowStateView>> {
        let user_id = viewer.acting_on(user_id)?;
        let catalog = self.catalog().await?;
        let mut stored: BTreeMap<String, FlowState> = self
            .store
            .states(user_id.as_str())
            .await?
            .into_iter()
            .map(|state| (state.flow.clone(), state))
            .collect();
        let now = now();
        let mut views = Vec::with_capacity(catalog.flows.len());
        for flow in catalog.flows.values() {
            let view = match stored.remove(flow.key()) {
                Some(state) => self.current(viewer, flow, state, now).await?,
                None => {
                    let fresh = FlowState::new(user_id.as_str(), flow.latest(), now);
                    FlowStateView::new(flow, fresh, now)?
                }
            };
            views.push(view);
        }
        Ok(views)
    }

    /// Applies `change` to the user's state in `flow`, in one transaction
    /// with its event.
    pub async fn change(
        &self,
        viewer: &Viewer,
        flow: &str,
        user_id: Option<String>,
        change: FlowChange,
        options: WriteOptions,
    ) -> Result<FlowStateView> {
        let user_id = viewer.acting_on(user_id)?;
        let now = now();
        change.check(now)?;
        let idempotency = options
            .idempotency_key
            .as_ref()
            .map(|key| idempotency(key, &change, flow, &user_id, options.expected_revision))
            .transpose()?;
        let flow = self.published(flow).await?;
        let provenance = provenance(viewer, options.request_id);
        let fresh = FlowState::new(user_id.as_str(), flow.latest(), now);
        let decided_flow = Arc::clone(&flow);
        let written = self
            .store
            .write(FlowWrite {
                fresh,
                provenance,
                idempotency,
                now,
                decide: Box::new(move |stored: &FlowState| {
                    if let Some(expected) = options.expected_revision
                        && expected != stored.revision
                    {
                        return Err(Error::stale_revision(expected, stored.revision));
                    }
                    let mut next = stored.clone().as_of(now);
                    // A policy published since the user's last access applies
                    // first, in the same write.
                    let mut happenings: Vec<_> = reonboarded(&decided_flow, &mut next, now)?
                        .into_iter()
                        .collect();
                    let version = version_of(&decided_flow, next.version)?;
                    happenings.push(next.apply(&change, version, decided_flow.latest(), now)?);
                    Ok(Some((next, happenings)))
                }),
            })
            .await?;
        FlowStateView::new(&flow, written, now)
    }

    /// The user's events, newest first, `first` at a time after the cursor.
    pub async fn events(
        &self,
        viewer: &Viewer,
        flow: Option<&str>,
        user_id: Option<String>,
        first: i64,
        after: Option<i64>,
    ) -> Result<EventPage> {
        let user_id = viewer.acting_on(user_id)?;
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(Error::BadUserInput(format!(
                "`first` must be 1 to {MAX_PAGE}; got {first}."
            )));
        }
        if let Some(flow) = flow {
            self.published(flow).await?;
        }
        let mut events = self
            .store
            .events(user_id.as_str(), flow, after, first + 1)
            .await?;
        let has_next_page = events.len() > usize::try_from(first).unwrap_or(usize::MAX);
        events.truncate(usize::try_from(first).unwrap_or(usize::MAX));
        Ok(EventPage {
            events,
            has_next_page,
        })
    }

    /// Every flow state and event of the user (the user, or an admin).
    pub async fn export(&self, viewer: &Viewer, user_id: Option<String>) -> Result<UserData> {
        let user_id = viewer.acting_on(user_id)?;
        self.export_user(&user_id).await
    }

    /// Every flow state and event of `user_id`, for the command line.
    pub async fn export_user(&self, user_id: &UserId) -> Result<UserData> {
        let catalog = self.catalog().await?;
        let now = now();
        let flow_states = self
            .store
            .states(user_id.as_str())
            .await?
            .into_iter()
            .filter_map(|state| {
                let flow = catalog.flows.get(&state.flow)?;
                FlowStateView::new(flow, state, now).ok()
            })
            .collect();
        let mut events = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .store
                .events(user_id.as_str(), None, before, MAX_PAGE)
                .await?;
            let last = page.last().map(|event| event.id);
            let full = page.len() == usize::try_from(MAX_PAGE).unwrap_or(usize::MAX);
            events.extend(page);
            match last {
                Some(id) if full => before = Some(id),
                _ => break,
            }
        }
        Ok(UserData {
            user_id: user_id.as_str().to_owned(),
            flow_states,
            events,
        })
    }

    /// Erases every row of the user (admins only).
    pub async fn erase(&self, viewer: &Viewer, user_id: String) -> Result<Erased> {
        admin(viewer)?;
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
            "user data erased"
        );
        Ok(erased)
    }

    /// The state as it reads now, after applying, once, the re-onboarding
    /// policy of versions published since the user's.
    async fn current(
        &self,
        viewer: &Viewer,
        flow: &Arc<Flow>,
        state: FlowState,
        now: DateTime<Utc>,
    ) -> Result<FlowStateView> {
        if state.version >= flow.latest().version {
            return FlowStateView::new(flow, state, now);
        }
        let decided_flow = Arc::clone(flow);
        let provenance = provenance(viewer, None);
        let written = self
            .store
            .write(FlowWrite {
                fresh: state.clone(),
                provenance,
                idempotency: None,
                now,
                decide: Box::new(move |stored: &FlowState| {
                    let mut next = stored.clone().as_of(now);
                    Ok(reonboarded(&decided_flow, &mut next, now)?
                        .map(|happened| (next, vec![happened])))
                }),
            })
            .await?;
        FlowStateView::new(flow, written, now)
    }

    /// The flow `key` a state can be in, or an error naming it. A flow
    /// published on another replica shows within `CATALOG_TTL`.
    async fn published(&self, key: &str) -> Result<Arc<Flow>> {
        check_key("The flow key", key)?;
        self.catalog()
            .await?
            .flows
            .get(key)
            .cloned()
            .ok_or_else(|| unknown_flow(key))
    }

    async fn catalog(&self) -> Result<Arc<Catalog>> {
        if let Some(catalog) = self
            .catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && catalog.read_at.elapsed() < CATALOG_TTL
        {
            return Ok(Arc::clone(catalog));
        }
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
            read_at: Instant::now(),
        });
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&catalog));
        Ok(catalog)
    }

    fn forget_catalog(&self) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
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
    flow.version(version).ok_or_else(|| {
        Error::Internal(format!("flow {} has no version {version}", flow.key()).into())
    })
}

fn signed_in(viewer: &Viewer) -> Result<()> {
    match viewer {
        Viewer::Anonymous => Err(Error::Unauthenticated),
        Viewer::User { .. } => Ok(()),
    }
}

fn admin(viewer: &Viewer) -> Result<()> {
    match viewer {
        Viewer::Anonymous => Err(Error::Unauthenticated),
        Viewer::User { admin: true, .. } => Ok(()),
        Viewer::User { admin: false, .. } => Err(Error::Forbidden),
    }
}

fn viewer_id(viewer: &Viewer) -> Option<&str> {
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

/// An idempotency key of 1 to 255 bytes, and the fingerprint of its change.
fn idempotency(
    key: &str,
    change: &FlowChange,
    flow: &str,
    user_id: &UserId,
    expected_revision: Option<i64>,
) -> Result<Idempotency> {
    if key.is_empty() || key.len() > 255 {
        return Err(Error::BadUserInput(format!(
            "`idempotencyKey` must be 1 to 255 bytes; got {} bytes.",
            key.len()
        )));
    }
    Ok(Idempotency {
        key: key.to_owned(),
        fingerprint: format!(
            "{} expected={expected_revision:?}",
            change.fingerprint(flow, user_id.as_str())
        ),
    })
}
