//! The access log: one line per request, when its response is ready, with its
//! method, path, status, latency and request id. Errors are logged at error
//! level, the start of a request at debug.
//!
//! It is a single event, not a span: a span costs a registry entry, its
//! fields formatted ahead of time and an enter and exit on every poll, which
//! was a tenth of what `/healthz` costs. GraphQL requests, whose work logs
//! lines of its own, get their span in `graphql_over_http`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::{HeaderValue, Method, Request, Response, Uri};
use tower::{Layer, Service};

/// Wraps a service so that every request it answers is logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let request_id = request.headers().get("x-request-id").cloned();
        tracing::debug!(
            method = %request.method(),
            path = request.uri().path(),
            request_id = request_id.as_ref().and_then(|id| id.to_str().ok()),
            "started processing request"
        );
        Logged {
            method: request.method().clone(),
            uri: request.uri().clone(),
            request_id,
            started: Instant::now(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way, logged once it is ready.
    pub struct Logged<F> {
        #[pin]
        inner: F,
        method: Method,
        uri: Uri,
        request_id: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, ResBody, E> Future for Logged<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let status = response.status().as_u16();
            let latency_us = this.started.elapsed().as_micros() as u64;
            let method = &*this.method;
            let path = this.uri.path();
            let request_id = this.request_id.as_ref().and_then(|id| id.to_str().ok());
            if response.status().is_server_error() {
                tracing::error!(%method, path, status, latency_us, request_id, "request failed");
            } else {
                tracing::info!(%method, path, status, latency_us, request_id, "request");
            }
        }
        Poll::Ready(result)
    }
}
