//! onboarding: a GraphQL API server that keeps each user's onboarding progress.
//!
//! A request flows through `connections` (the accept loop), `app` (routes and
//! layers), `graphql_http` (GraphQL over HTTP), `auth` (the bearer token),
//! `graphql` (the schema: thin resolvers), `service` (the operations), and
//! `db` (the SQL of both backends). Under them all, `domain` holds the types
//! and rules, and imports none of the layers above.

pub mod access_log;
pub mod app;
pub mod auth;
pub mod commands;
pub mod config;
pub mod connections;
pub mod cors;
pub mod db;
pub mod document;
pub mod document_cache;
pub mod domain;
pub mod error;
pub mod graphiql;
pub mod graphql;
pub mod graphql_http;
pub mod log_writer;
pub mod service;
pub mod state;
pub mod telemetry;
