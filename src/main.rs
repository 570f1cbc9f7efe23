use std::process::ExitCode;

use clap::Parser;
use onboarding::auth::{self, TokenRequest};
use onboarding::commands::Whose;
use onboarding::config::{
    Cli, Command, FlowsCommand, GroupsCommand, MigrateArgs, ServeArgs, TokenArgs, UsersCommand,
    WebhooksCommand,
};
use onboarding::db::Db;
use onboarding::http::{self, Application};
use onboarding::{commands, graphql, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_writer = telemetry::init(&cli.log_filter, cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::Token(args) => token(args),
        Command::Flows(FlowsCommand::Publish { file, database }) => {
            commands::publish_flows(&file, &database).await
        }
        Command::Flows(FlowsCommand::List { database }) => commands::list_flows(&database).await,
        Command::Users(UsersCommand::Export { user, database }) => {
            commands::export(Whose::User, &user, &database).await
        }
        Command::Users(UsersCommand::Delete { user, database }) => {
            commands::delete(Whose::User, &user, &database).await
        }
        Command::Groups(GroupsCommand::Export { group, database }) => {
            commands::export(Whose::Group, &group, &database).await
        }
        Command::Groups(GroupsCommand::Delete { group, database }) => {
            commands::delete(Whose::Group, &group, &database).await
        }
        Command::Webhooks(WebhooksCommand::Add {
            url,
            event_types,
            flows,
            description,
            webhook_allow_private,
            database,
        }) => {
            let endpoint = commands::NewEndpoint {
                url,
                event_types,
                flows,
                description,
            };
            commands::add_webhook(endpoint, webhook_allow_private, &database).await
        }
        Command::Webhooks(WebhooksCommand::List { database }) => {
            commands::list_webhooks(&database).await
        }
        Command::Webhooks(WebhooksCommand::Remove { id, database }) => {
            commands::remove_webhook(&id, &database).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn serve(args: ServeArgs) -> Result {
    if args.dev {
        tracing::warn!(
            "DEVELOPMENT MODE: tokens signed with the public development secret are accepted \
             when no JWT key is configured. Never expose this server."
        );
    }
    let application = Application::build(&args).await?;
    let addr = application.local_addr()?;
    if let Some(token) = application.dev_token() {
        println!("\nGraphiQL:   http://{addr}/graphql");
        println!("Demo token for user `{}` (valid 24h):\n", http::DEMO_USER);
        println!("Authorization: Bearer {token}\n");
    }
    tracing::info!(%addr, "listening");
    application
        .run_until_drained(http::shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(args: MigrateArgs) -> Result {
    let db = Db::connect(&args.database).await?;
    if args.check {
        let status = db.migration_status().await?;
        for migration in &status.unknown {
            println!("applied by a newer release: {migration}");
        }
        for migration in &status.pending {
            println!("pending: {migration}");
        }
        let incompatible = status.incompatible();
        if !incompatible.is_empty() {
            return Err(format!(
                "the database has migrations this binary cannot run with: {}",
                incompatible.join(", ")
            )
            .into());
        }
        if !status.pending.is_empty() {
            return Err(format!("{} migrations are pending", status.pending.len()).into());
        }
        println!("the database has every migration of this release");
        return Ok(());
    }
    let applied = db.migrate().await?;
    tracing::info!(migrations = ?applied, "migrations applied");
    Ok(())
}

fn token(args: TokenArgs) -> Result {
    let secret = match (&args.jwt_secret, args.dev) {
        (Some(secret), false) => secret.as_str(),
        (Some(secret), true) => {
            eprintln!(
                "note: JWT_SECRET is set, so the token is signed with JWT_SECRET, not the \
                 development secret (`serve --dev` also verifies with JWT_SECRET when it is set)"
            );
            secret.as_str()
        }
        (None, true) => auth::DEV_SECRET,
        (None, false) => {
            return Err("set JWT_SECRET (or pass --dev for the development secret)".into());
        }
    };
    let token = auth::mint(&TokenRequest {
        secret,
        sub: args.sub.as_str(),
        roles: &args.role,
        groups: &args.group,
        ttl: args.ttl,
        issuer: args.jwt_issuer.as_deref(),
        audience: args.jwt_audience.as_deref(),
    })?;
    println!("{token}");
    Ok(())
}
