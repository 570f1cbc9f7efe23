//! The command line: every setting is a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{ERASED_ACTOR, GroupId, UserId};

/// GraphQL API server that keeps each user's onboarding progress.
#[derive(Debug, Parser)]
#[command(name = "onboarding", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,sqlx=warn`).
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "info",
        global = true,
        help_heading = "Logging"
    )]
    pub log_filter: String,

    /// Log line format: `pretty` for people, `json` for log collectors.
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "pretty",
        global = true,
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Apply pending migrations and exit (with --check: apply nothing, list
    /// the pending ones, and exit non-zero when there are any).
    Migrate(MigrateArgs),
    /// Print the GraphQL schema (SDL); `schema.graphql` in the repository is this output.
    Schema,
    /// Print an HS256 token signed with `JWT_SECRET`, for development and tests.
    Token(TokenArgs),
    /// Publish and list flow declarations, e.g. from the app's repository at deploy.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Export or erase everything kept about one user.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Export or erase everything kept about one group (GROUP flows' states
    /// and events).
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Register, list and remove the endpoints that every change is sent to.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Apply nothing: list the pending migrations, and exit 1 when there are any.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Publish the declarations in a JSON file (one object, or an array of
    /// them): each flow whose title or steps changed gets a new version, all
    /// or none. Applies pending migrations first.
    Publish {
        /// The file: `{"key": "checklist", "title": "...", "steps": [{"key":
        /// "profile", "title": "...", "optional": false}], "reonboarding": "KEEP"}`.
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print every published flow: key, latest version, title, number of steps.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Print every flow state and event of the user as JSON (the API's
    /// exportUserData).
    Export {
        /// The user id (a token's `sub`).
        user: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Erase every row of the user, in one transaction, and print the counts.
    Delete {
        /// The user id (a token's `sub`).
        user: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Print every flow state and event of the group as JSON (the API's
    /// exportGroupData).
    Export {
        /// The group id (as the token's groups claim names it).
        group: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Erase every state, event and idempotency record of the group, in one
    /// transaction, and print the counts.
    Delete {
        /// The group id (as the token's groups claim names it).
        group: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint and print its id and its signing secret (shown
    /// this once).
    Add {
        /// Where to POST: https:// (http:// and private addresses only with
        /// WEBHOOK_ALLOW_PRIVATE=true).
        url: String,
        /// A message type to deliver (repeatable; none means every type),
        /// e.g. `flow.completed`.
        #[arg(long = "event", value_name = "TYPE")]
        event_types: Vec<String>,
        /// A flow to deliver (repeatable; none means every flow).
        #[arg(long = "flow", value_name = "KEY")]
        flows: Vec<String>,
        /// What the endpoint is for, for the people who read the list.
        #[arg(long)]
        description: Option<String>,
        /// Allow `http://` and private addresses, as the server does with it.
        #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE")]
        webhook_allow_private: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print every endpoint: id, state, URL and filters.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Remove an endpoint, and its messages.
    Remove {
        /// The endpoint's id, as `webhooks list` prints it.
        id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Address to bind.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// After SIGTERM or SIGINT, how long `/readyz` answers 503 while requests
    /// are still served, so that load balancers take the server out before
    /// it stops accepting (e.g. `5s`; `0s` stops at once).
    #[arg(long, env = "SHUTDOWN_DRAIN", default_value = "5s", value_parser = parse_drain)]
    pub shutdown_drain: Duration,

    /// How long `serve` waits at start for a database that does not accept
    /// connections yet, retrying with backoff and logging why (e.g. `30s`).
    #[arg(long, env = "DATABASE_WAIT", default_value = "30s", value_parser = parse_timeout)]
    pub database_wait: Duration,

    /// Apply no migrations: start only if the database already has every
    /// migration this binary needs (`onboarding migrate` as a deploy step,
    /// a role with read and write rights only).
    #[arg(long, env = "NO_MIGRATE")]
    pub no_migrate: bool,

    /// Browser origins allowed to call the API (comma-separated, e.g.
    /// `https://app.example.com`). None by default: same-origin only
    /// (`--dev` adds loopback origins: `http://localhost:5173` and the like).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Most client connections open at once; more wait until one closes.
    /// Each takes a file descriptor: the server raises its own `ulimit -n`
    /// as far as the system allows, and says so when that is not enough.
    #[arg(
        long,
        env = "MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub max_connections: u32,

    /// Most live subscriptions this server holds at once, over WebSocket and
    /// server-sent events together; past it new ones are refused (4429, or
    /// 429 over server-sent events).
    #[arg(
        long,
        env = "MAX_SUBSCRIPTIONS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub max_subscriptions: u32,

    /// How long a client may take to send a request's headers, from their
    /// first byte (e.g. `10s`); slower connections are closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// How long a keep-alive connection may wait for its next request (e.g.
    /// `75s`); longer than a load balancer's own idle timeout (often 60 s), so
    /// the balancer, not the server, closes idle connections.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "75s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Let webhook endpoints be `http://` and private, loopback or
    /// link-local addresses: for a receiver inside the network, or a test.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,

    /// Laptop mode: use a built-in signing secret when no JWT key is configured,
    /// bind loopback only, allow loopback browser origins, and print a demo token.
    #[arg(long)]
    pub dev: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (the file is created if missing) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://onboarding.db")]
    pub database_url: String,

    /// Most database connections the server holds open at once (1 to 1000;
    /// with several replicas, their sum must fit the database's own limit).
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub database_max_connections: u32,

    /// Postgres: longest a statement may run before the database cancels it
    /// (e.g. `10s`); under the 30 s a request may take, so that a stuck
    /// statement fails its request with a message rather than a timeout.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "10s", value_parser = parse_database_timeout)]
    pub database_statement_timeout: Duration,

    /// Postgres: longest a write waits for a row another transaction holds
    /// (e.g. `2s`), then fails alone with a "retry shortly" message.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT", default_value = "2s", value_parser = parse_database_timeout)]
    pub database_lock_timeout: Duration,

    /// Postgres: the pooler between the server and Postgres, if any. `none`
    /// and `session` (PgBouncer's session pooling) change nothing;
    /// `transaction` (its transaction pooling) keeps no statement prepared,
    /// runs every statement in a transaction and applies no migration
    /// (run `onboarding migrate` on Postgres itself).
    #[arg(long, env = "DATABASE_POOLER", value_enum, default_value_t = Pooler::None)]
    pub database_pooler: Pooler,

    /// Postgres: a direct connection (not through a transaction pooler) for
    /// the one connection each server listens on for live updates; the
    /// database of DATABASE_URL when unset
    #[arg(long, env = "DATABASE_LISTEN_URL", hide_env_values = true)]
    pub database_listen_url: Option<String>,
}

/// What stands between the server and Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pooler {
    None,
    Session,
    Transaction,
}

#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 shared secret, at least 32 bytes, used as the bytes of its text
    /// (a hex string is not decoded).
    #[arg(
        long,
        env = "JWT_SECRET",
        hide_env_values = true,
        conflicts_with_all = ["jwt_public_key_file", "jwt_jwks_url"]
    )]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA, P-256 or Ed25519) that verifies RS256, ES256 or EdDSA tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", conflicts_with = "jwt_jwks_url")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// URL of the identity provider's JSON Web Key Set (https://, or http://
    /// on loopback), e.g. `https://YOUR_DOMAIN/.well-known/jwks.json`. Keys
    /// are chosen by each token's `kid` and refreshed as the provider rotates them.
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// Required `iss` claim, when set. With no key and no JWT_JWKS_URL, the
    /// key set is found through `$JWT_ISSUER/.well-known/openid-configuration`.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Role in the token's roles claim that grants admin.
    #[arg(long, env = "JWT_ADMIN_ROLE", default_value = "admin")]
    pub jwt_admin_role: String,

    /// Claim that holds the user id: a top-level claim, or a dotted path
    /// into nested objects.
    #[arg(long, env = "JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,

    /// Claim that holds the user's roles (an array of strings): a top-level
    /// claim such as `https://example.com/roles` or `cognito:groups`, or a
    /// dotted path such as `realm_access.roles` (Keycloak).
    #[arg(long, env = "JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,

    /// Claim that holds the groups the user belongs to, for GROUP flows: one
    /// group id (a string: Auth0 Organizations, Clerk, WorkOS) or an array
    /// of them (Keycloak, Okta groups); a top-level claim or a dotted path.
    #[arg(long, env = "JWT_GROUPS_CLAIM", default_value = "org_id")]
    pub jwt_groups_claim: String,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// User id to put in `sub`: 1 to 255 bytes, no NUL.
    #[arg(long, value_parser = parse_user_id)]
    pub sub: UserId,

    /// Role to put in the `roles` claim; repeat for several.
    #[arg(long)]
    pub role: Vec<String>,

    /// Group to put in the `org_id` claim (the default JWT_GROUPS_CLAIM):
    /// once, a string; repeated, an array.
    #[arg(long, value_parser = parse_group_id)]
    pub group: Vec<String>,

    /// How long the token is valid, default 1h (e.g. `15m`, `7d`).
    #[arg(long, default_value = "1h", hide_default_value = true, value_parser = parse_ttl)]
    pub ttl: Duration,

    /// Sign with the built-in development secret that `serve --dev` accepts,
    /// when no `JWT_SECRET` is configured.
    #[arg(long)]
    pub dev: bool,

    /// HS256 shared secret the server verifies with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// `iss` claim to include (the server's `JWT_ISSUER`).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// `aud` claim to include (the server's `JWT_AUDIENCE`).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// A user id the server accepts in `sub`, by the rule of `UserId::parse`.
fn parse_user_id(text: &str) -> Result<UserId, String> {
    UserId::parse(text.to_owned()).map_err(|_| {
        format!(
            "a user id is 1 to {} bytes with no NUL character, and not `{ERASED_ACTOR}`; the \
             server refuses any other `sub`",
            UserId::MAX_BYTES
        )
    })
}

/// A group id the server accepts in the groups claim, by the rule of
/// `GroupId::parse`.
fn parse_group_id(text: &str) -> Result<String, String> {
    GroupId::parse(text.to_owned())
        .map(|group| group.as_str().to_owned())
        .map_err(|error| format!("{error} The server refuses a token naming any other group."))
}

/// A token lifetime such as `15m` or `7d`, at most ten years.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    const TEN_YEARS: Duration = Duration::from_secs(10 * 366 * 24 * 60 * 60);
    let ttl = parse_duration(text, "`15m`, `1h`, `7d`")?;
    if ttl > TEN_YEARS {
        return Err("at most ten years (e.g. `3650d`)".to_owned());
    }
    Ok(ttl)
}

/// A timeout such as `10s` or `500ms`: more than zero, at most a day.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    let timeout = parse_duration(text, "`10s`, `500ms`, `2m`")?;
    if timeout.is_zero() || timeout > DAY {
        return Err("more than zero and at most a day (e.g. `10s`)".to_owned());
    }
    Ok(timeout)
}

/// A drain time: from none to a minute.
fn parse_drain(text: &str) -> Result<Duration, String> {
    let drain = parse_duration(text, "`5s`, `0s`")?;
    if drain > Duration::from_secs(60) {
        return Err("from 0s to 60s (e.g. `5s`)".to_owned());
    }
    Ok(drain)
}

/// A database timeout: from 1 ms to 25 s, well under a request's 30 s.
fn parse_database_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text, "`2s`, `500ms`")?;
    if !(Duration::from_millis(1)..=Duration::from_secs(25)).contains(&timeout) {
        return Err("from 1ms to 25s, under the 30 s a request may take (e.g. `2s`)".to_owned());
    }
    Ok(timeout)
}

/// A duration such as `90s` or `1h 30m`; a mistake is answered with `examples`.
fn parse_duration(text: &str, examples: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (e.g. {examples})"))
}
