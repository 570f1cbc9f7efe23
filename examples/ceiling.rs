//! The benchmark's ceiling: the least an axum server on the same runtime can
//! do per request. It answers every request, on any path and method, with a
//! fixed body of a given size and content type, so `tests/bench/run` can read
//! each of the real server's figures as a multiple of this one.
//!
//! ```sh
//! cargo run --release --example ceiling -- 127.0.0.1:18700 98 'application/json; charset=utf-8'
//! ```
//!
//! Arguments: the address to listen on (else `LISTEN_ADDR`, else
//! 127.0.0.1:8080), the body size in bytes (default 94) and the
//! `Content-Type` (default `application/json; charset=utf-8`).

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = match args.next() {
        Some(addr) => addr.parse()?,
        None => std::env::var("LISTEN_ADDR")
            .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
            .parse()?,
    };
    let size: usize = args.next().map_or(Ok(94), |size| size.parse())?;
    let content_type = HeaderValue::from_str(
        &args
            .next()
            .unwrap_or_else(|| "application/json; charset=utf-8".to_owned()),
    )?;
    let body = Bytes::from(fixed_body(size));
    let app = Router::new().fallback(move || {
        let (content_type, body) = (content_type.clone(), body.clone());
        async move { ([(header::CONTENT_TYPE, content_type)], body).into_response() }
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A JSON object of exactly `size` bytes (at least the 11 of `{"data":""}`).
fn fixed_body(size: usize) -> String {
    let padding = size.saturating_sub(r#"{"data":""}"#.len());
    format!(r#"{{"data":"{}"}}"#, "x".repeat(padding))
}
