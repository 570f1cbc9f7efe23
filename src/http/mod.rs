//! How requests arrive: the accept loop and its limits (`connections`), the
//! routes and layers (`server`), and one module per transport, each thin over
//! the same schema and the same token check: GraphQL over HTTP
//! (`graphql_over_http`), with the self-hosted GraphiQL page (`graphiql`),
//! GraphQL over server-sent events (`graphql_sse`) and over WebSocket
//! (`graphql_ws`).

pub mod access_log;
pub mod connections;
pub mod cors;
pub mod document_cache;
pub mod graphiql;
pub mod graphql_over_http;
pub mod graphql_sse;
pub mod graphql_ws;
pub mod request_error;
pub mod server;
pub mod state;

pub use server::{Application, DEMO_USER, StartError, router, shutdown_signal};
