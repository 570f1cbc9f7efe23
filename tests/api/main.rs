//! Black-box tests: the real server on a random port, real HTTP, a real
//! database of each test's own. Every test runs on SQLite and, when
//! `TEST_DATABASE_URL` names a Postgres server, on Postgres too.

mod helpers;

mod auth;
mod cli;
mod concurrency;
mod cors;
mod deploys;
mod flows;
mod graphiql;
mod graphql_http;
mod jwks;
mod live;
mod onboarding_revisions;
mod onboarding_state;
mod operations;
mod postgres_replicas;
mod shutdown_and_start;
mod webhooks;
