//! Word that a user's or a group's flow states changed, for the live
//! subscriptions watching them. It carries whose states changed and nothing
//! else: a subscription reads the state itself, fresh.
//!
//! - SQLite is one process: its writer says so after each commit.
//! - On Postgres any replica may commit. A replica records the owners it
//!   watches in `live_interest`; a trigger on the state tables notifies
//!   (`pg_notify`) for an owner some replica watches, and nothing otherwise;
//!   each replica listens on a connection of its own (`DATABASE_LISTEN_URL`
//!   when the pool goes through a transaction pooler, which cannot carry
//!   `LISTEN`).
//!
//! A replica that nobody subscribes to holds no listening connection and
//! writes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool};
use tokio::sync::{OnceCell, watch};

use super::DbError;
use super::pooler;

/// The channel the trigger notifies on (migration `20261205000000_live`).
const CHANNEL: &str = "onboarding_live";
/// How often a replica that watches owners says it is still there.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Longest a new watch waits for the write transactions that were running
/// when it recorded its interest; a transaction held open longer (an
/// operator's session) is not waited for.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a new watch waits for the listening connection.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whom this process watches, and how it hears of their changes.
#[derive(Clone)]
pub struct Live {
    watchers: Arc<Watchers>,
    backend: LiveBackend,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("watched", &self.watchers.watched.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum LiveBackend {
    InProcess,
    Postgres(Arc<PostgresLive>),
}

struct PostgresLive {
    pool: PgPool,
    listen: PgConnectOptions,
    /// This process's name in `live_interest`.
    replica: String,
    /// Set once the listening connection has been opened.
    listening: watch::Sender<bool>,
    /// The listening task, started by the first watch.
    listener: OnceCell<()>,
}

/// What a watcher is told: a change (read what changed), or that changes
/// may have gone unheard (send the current state, changed or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    pub changes: u64,
    pub resyncs: u64,
}

/// The owners watched in this process, each with the signal of its changes.
#[derive(Default)]
struct Watchers {
    owners: Mutex<HashMap<Arc<str>, Watched>>,
    /// How many owners are watched: a write checks this before the map.
    watched: AtomicUsize,
    /// Numbers each owner's interest row, so that the removal of an earlier
    /// one never removes a later one.
    next_watch: AtomicI64,
}

struct Watched {
    changes: watch::Sender<Signal>,
    watchers: usize,
    /// Done once the interest is recorded and settled (Postgres).
    ready: Arc<OnceCell<()>>,
    watch_id: i64,
}

impl Watchers {
    fn changed(&self, owner: &str) {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(watched) = lock(&self.owners).get(owner) {
            watched
                .changes
                .send_modify(|signal| signal.changes = signal.changes.wrapping_add(1));
        }
    }

    fn changed_all(&self) {
        for watched in lock(&self.owners).values() {
            watched
                .changes
                .send_modify(|signal| signal.resyncs = signal.resyncs.wrapping_add(1));
        }
    }

    fn all(&self) -> Vec<(String, i64)> {
        lock(&self.owners)
            .iter()
            .map(|(owner, watched)| (owner.to_string(), watched.watch_id))
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One subscription's view of an owner's changes; dropping it stops the
/// watch (and, for the owner's last, the interest).
pub struct Watch {
    pub changes: watch::Receiver<Signal>,
    owner: Arc<str>,
    live: Live,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let removed = {
            let mut owners = lock(&self.live.watchers.owners);
            let Some(watched) = owners.get_mut(&self.owner) else {
                return;
            };
            watched.watchers -= 1;
            if watched.watchers > 0 {
                return;
            }
            let watch_id = watched.watch_id;
            owners.remove(&self.owner);
            self.live.watchers.watched.fetch_sub(1, Ordering::Relaxed);
            watch_id
        };
        if let LiveBackend::Postgres(postgres) = &self.live.backend
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (postgres, owner) = (Arc::clone(postgres), self.owner.to_string());
            runtime.spawn(async move {
                if let Err(error) = postgres.forget(&owner, removed).await {
                    tracing::debug!(%error, "cannot remove a live interest; it expires");
                }
            });
        }
    }
}

impl Live {
    pub fn in_process() -> Self {
        Self {
            watchers: Arc::default(),
            backend: LiveBackend::InProcess,
        }
    }

    pub fn postgres(pool: PgPool, listen: PgConnectOptions) -> Self {
        // std seeds every `RandomState` from the system's randomness.
        let random = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        );
        Self {
            watchers: Arc::default(),
            backend: LiveBackend::Postgres(Arc::new(PostgresLive {
                pool,
                listen,
                replica: format!("{random:016x}"),
                listening: watch::channel(false).0,
                listener: OnceCell::new(),
            })),
        }
    }

    /// Tells this process's watchers of `owner` that its states changed
    /// (SQLite's writer, after its commit). Postgres's trigger says so itself.
    pub fn committed(&self, owner: &str) {
        if let LiveBackend::InProcess = self.backend {
            self.watchers.changed(owner);
        }
    }

    /// Starts watching `owner`. Once this returns, every change committed
    /// after a read that follows is signalled, whichever replica commits it.
    pub async fn watch(&self, owner: &str) -> Result<Watch, DbError> {
        let (changes, ready, watch_id, owner) = {
            let mut owners = lock(&self.watchers.owners);
            let watched = match owners.get_mut(owner) {
                Some(watched) => watched,
                None => {
                    self.watchers.watched.fetch_add(1, Ordering::Relaxed);
                    let watch_id = self.watchers.next_watch.fetch_add(1, Ordering::Relaxed);
                    owners.entry(Arc::from(owner)).or_insert(Watched {
                        changes: watch::channel(Signal::default()).0,
                        watchers: 0,
                        ready: Arc::default(),
                        watch_id,
                    })
                }
            };
            watched.watchers += 1;
            let (owner, _) = owners.get_key_value(owner).expect("inserted above");
            let watched = &owners[owner];
            (
                watched.changes.subscribe(),
                Arc::clone(&watched.ready),
                watched.watch_id,
                Arc::clone(owner),
            )
        };
        let watch = Watch {
            changes,
            owner: Arc::clone(&owner),
            live: self.clone(),
        };
        if let LiveBackend::Postgres(postgres) = &self.backend {
            postgres.start_listening(&self.watchers).await?;
            ready
                .get_or_try_init(|| postgres.record(vec![(owner.to_string(), watch_id)]))
                .await?;
        }
        Ok(watch)
    }
}

impl PostgresLive {
    /// Starts the listening task once, and waits until it listens.
    async fn start_listening(self: &Arc<Self>, watchers: &Arc<Watchers>) -> Result<(), DbError> {
        self.listener
            .get_or_init(|| async {
                let (this, listened) = (Arc::clone(self), Arc::clone(watchers));
                tokio::spawn(async move { this.listen(&listened).await });
                tokio::spawn(Arc::clone(self).keep_alive(Arc::clone(watchers)));
            })
            .await;
        let mut listening = self.listening.subscribe();
        match tokio::time::timeout(LISTEN_TIMEOUT, listening.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(DbError::from(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Listens for as long as the process runs: on every (re)connection it
    /// records this process's interests again (a failover may have lost
    /// them) and has every watcher read afresh, for what it missed meanwhile.
    async fn listen(&self, watchers: &Watchers) {
        let mut delay = Duration::from_millis(100);
        let mut first = true;
        loop {
            let mut listener = match self.connect_listener().await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "live updates: cannot listen on the database");
                    self.listening.send_replace(false);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            delay = Duration::from_millis(100);
            if !first {
                if let Err(error) = self.record(watchers.all()).await {
                    tracing::warn!(%error, "live updates: cannot record the watched owners again");
                }
                watchers.changed_all();
                tracing::info!("live updates: listening again; every subscriber reads afresh");
            }
            first = false;
            self.listening.send_replace(true);
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if let Some(owner) = owner_of(notification.payload()) {
                            watchers.changed(&owner);
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("live updates: the listening connection was lost");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "live updates: the listening connection failed");
                        break;
                    }
                }
            }
        }
    }

    async fn connect_listener(&self) -> Result<PgListener, sqlx::Error> {
        let connection = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.listen.clone());
        let mut listener = PgListener::connect_with(&connection).await?;
        // A lost connection is opened again by `listen`, which then records
        // and reads afresh; the driver's own silent reconnection would not.
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    /// Says every `HEARTBEAT` that this replica's interests are alive, and
    /// forgets those of replicas that stopped saying so for two minutes: a
    /// replica killed leaves rows that cost notifications, never a missed one.
    async fn keep_alive(self: Arc<Self>, watchers: Arc<Watchers>) {
        let mut every = tokio::time::interval(HEARTBEAT);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if watchers.watched.load(Ordering::Relaxed) == 0 {
                continue;
            }
            // Watches numbered from here on are not in the list below.
            let listed_before = watchers.next_watch.load(Ordering::Relaxed);
            if let Err(error) = self.still_here(watchers.all(), listed_before).await {
                tracing::warn!(%error, "live updates: cannot keep the watched owners alive");
            }
        }
    }

    /// Refreshes the interests of the owners this replica watches, and
    /// removes its others recorded before the list was taken: a watch
    /// dropped while its interest was being recorded may have had its
    /// removal run first.
    async fn still_here(
        &self,
        owners: Vec<(String, i64)>,
        listed_before: i64,
    ) -> Result<(), sqlx::Error> {
        let owners: Vec<String> = owners.into_iter().map(|(owner, _)| owner).collect();
        let mut session = pooler::open(&self.pool).await?;
        statement(
            "update live_interest set seen_at = now() \
             where replica = $1 and owner = any($2::text[])",
        )
        .bind(&self.replica)
        .bind(&owners)
        .execute(&mut *session)
        .await?;
        statement(
            "delete from live_interest \
             where replica = $1 and owner <> all($2::text[]) and watch_id < $3",
        )
        .bind(&self.replica)
        .bind(&owners)
        .bind(listed_before)
        .execute(&mut *session)
        .await?;
        statement(FORGET_STALE).execute(&mut *session).await?;
        pooler::close(session).await
    }

    /// Records `owners` as watched by this replica, then waits out the write
    /// transactions that were running meanwhile: a write that did not see
    /// the interest has committed before the caller's first read.
    async fn record(&self, owners: Vec<(String, i64)>) -> Result<(), DbError> {
        if owners.is_empty() {
            return Ok(());
        }
        let (owners, watch_ids): (Vec<String>, Vec<i64>) = owners.into_iter().unzip();
        let mut session = pooler::open(&self.pool).await?;
        statement(
            "insert into live_interest (owner, replica, watch_id, seen_at) \
             select owner, $3, watch_id, now() from unnest($1::text[], $2::int8[]) as w(owner, watch_id) \
             on conflict (owner, replica) do update set watch_id = excluded.watch_id, seen_at = now()",
        )
        .bind(&owners)
        .bind(&watch_ids)
        .bind(&self.replica)
        .execute(&mut *session)
        .await?;
        pooler::close(session).await?;
        // Taken after the commit: the transactions it lists as running may
        // have checked for interest before it.
        let running: Vec<String> = scalars(
            "select coalesce(array_agg(x::text), '{}') \
             from pg_snapshot_xip(pg_current_snapshot()) x",
            &self.pool,
            None,
        )
        .await?;
        if running.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            let still = scalars(
                "select coalesce(array_agg(x), '{}') from unnest($1::text[]) x \
                 where pg_xact_status(x::xid8) = 'in progress'",
                &self.pool,
                Some(&running),
            )
            .await?
            .len();
            if still == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause > deadline {
                tracing::warn!(
                    transactions = still,
                    "live updates: a write transaction stays open; a new subscriber may \
                     miss its change until the next"
                );
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn forget(&self, owner: &str, watch_id: i64) -> Result<(), DbError> {
        let mut session = pooler::open(&self.pool).await?;
        statement("delete from live_interest where owner = $1 and replica = $2 and watch_id = $3")
            .bind(owner)
            .bind(&self.replica)
            .bind(watch_id)
            .execute(&mut *session)
            .await?;
        pooler::close(session).await?;
        Ok(())
    }
}

const FORGET_STALE: &str = "delete from live_interest where seen_at < now() - interval '2 minutes'";

fn statement(sql: &str) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql).persistent(pooler::keep_prepared())
}

/// The text array one statement answers, given a text array as `$1` when
/// it takes one.
async fn scalars(
    sql: &str,
    pool: &PgPool,
    argument: Option<&[String]>,
) -> Result<Vec<String>, sqlx::Error> {
    let mut session = pooler::open(pool).await?;
    let mut query = sqlx::query_scalar::<_, Vec<String>>(sql).persistent(pooler::keep_prepared());
    if let Some(argument) = argument {
        query = query.bind(argument);
    }
    let values = query.fetch_one(&mut *session).await?;
    pooler::close(session).await?;
    Ok(values)
}

/// The owner a notification names: `{"owner": …, "flow": …, "revision": …}`.
fn owner_of(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Signal {
        owner: String,
    }
    serde_json::from_str::<Signal>(payload)
        .ok()
        .map(|signal| signal.owner)
}
