//! What every Parley HTTP service shares, so that a new service (the command
//! API, the read API, the gateway, the notifier) is its routes and its state,
//! not a copy of the plumbing:
//!
//! - [`tokens`]: access and refresh tokens, and [`caller`]: the `Caller`
//!   extractor that checks one and spends the caller's rate limit;
//! - [`ratelimit`]: token buckets; [`client`]: the client's address behind
//!   trusted proxies;
//! - [`problem`]: the one error type and its problem+json answer;
//! - [`extract`]: JSON, path and query extractors that answer with it;
//! - [`limits`]: the request deadline and the bound on requests in flight;
//! - [`observe`]: request ids, spans, log lines and HTTP metrics;
//! - [`server`]: the accept loop, with a header-read timeout and the limits
//!   run once per request;
//! - [`openapi`]: the document's bearer scheme and standard error answers;
//! - [`lifecycle`]: graceful shutdown; [`prometheus`]: `GET /metrics`;
//!   [`application`]: a service bound to its address, what each service's
//!   `build` returns.
//!
//! A service crate depends on this one, never on another service crate.

pub mod application;
pub mod caller;
pub mod client;
pub mod extract;
pub mod lifecycle;
pub mod limits;
pub mod observe;
pub mod openapi;
pub mod problem;
pub mod prometheus;
pub mod ratelimit;
pub mod server;
pub mod tokens;

pub use application::{Application, Running};
pub use caller::{Authenticates, Caller, CallerSession};
pub use client::{Cidr, ClientAddr, TrustsProxies};
pub use extract::{ApiJson, ApiPath, ApiQuery, BODY_LIMIT_BYTES};
pub use lifecycle::{Lifecycle, ShutdownSettings};
pub use limits::{Limiter, ServiceLimits};
pub use problem::{ApiError, Problem};
pub use ratelimit::RateLimiter;
pub use tokens::{default_token_keys, SigningKey, TokenKeys};
