//! onboarding: a GraphQL API server that keeps each user's onboarding progress.
//!
//! A request flows through `app` (routes and layers), `graphql_http` (GraphQL
//! over HTTP), `auth` (the bearer token), `graphql` (the schema), `onboarding`
//! (the rules) and `db` (the SQL).

pub mod access_log;
pub mod app;
pub mod auth;
pub mod config;
pub mod connections;
pub mod cors;
pub mod db;
pub mod document;
pub mod document_cache;
pub mod error;
pub mod graphiql;
pub mod graphql;
pub mod graphql_http;
pub mod log_writer;
pub mod onboarding;
pub mod telemetry;
