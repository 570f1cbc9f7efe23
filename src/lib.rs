//! onboarding: a GraphQL API server that keeps each user's onboarding progress.
//!
//! A request arrives through `http` (connections, routes and layers, and one
//! module per transport), is authorized by `auth` (the bearer token), and is
//! executed by `graphql` (the schema: thin resolvers), which hands it to
//! `service` (the operations), which reads and writes through `db` (the SQL of
//! both backends). Under them all, `domain` holds the types and rules, and
//! imports none of the layers above.

pub mod auth;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod service;
pub mod telemetry;
