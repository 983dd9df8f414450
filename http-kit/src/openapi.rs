//! What every service's OpenAPI document shares: the bearer scheme, and the
//! error answers (every status an operation can give, each with its
//! problem+json body).
//!
//! Handlers annotate what is particular to them ("not the author"); the
//! answers every operation of a kind gives come from here, so they cannot be
//! forgotten on a new route. An annotation's own wording wins.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder, Type};
use utoipa::Modify;

/// Declares the `bearer` (JWT) security scheme the operations refer to.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Adds the answers below to every operation and serves every problem as
/// `application/problem+json`.
pub struct StandardProblems;

/// Any request: the service limits (`limits.rs`) and the request-id headers
/// wrap every route.
const EVERY: &[(&str, &str)] = &[
    ("400", "A malformed request: a path or query parameter of the wrong shape, or an `X-Request-Id` or `X-Correlation-Id` over 128 characters"),
    ("408", "Not answered within `PARLEY_REQUEST_TIMEOUT_SECS` (the body's upload counts)"),
    ("503", "Too many requests in flight (`PARLEY_MAX_REQUESTS_IN_FLIGHT`), or a store it needs does not answer; see `Retry-After`"),
];

/// Behind the bearer scheme.
const SECURED: &[(&str, &str)] = &[
    ("401", "Missing, invalid or expired access token"),
    ("429", "Rate limit exceeded; see `Retry-After`"),
];

/// With a JSON body.
const BODY: &[(&str, &str)] = &[
    ("400", "Malformed JSON"),
    ("413", "Request body over 64 KiB"),
    ("415", "Content-Type is not application/json"),
    ("422", "A field fails validation (`field` names it)"),
];

/// With an id in the path.
const PATH_ID: &[(&str, &str)] = &[("404", "Nothing by that id")];

/// Commands (writes of a signed-in user): each runs against aggregates.
const COMMAND: &[(&str, &str)] = &[
    ("409", "The resource changed concurrently and retries did not settle it, or an id names another kind of resource (`id-of-another-kind`)"),
    ("422", "A rule refuses the command (`detail` says which)"),
];

/// Statuses whose answers tell when to come back.
const RETRY_AFTER: &[&str] = &["429", "503"];

fn add(operation: &mut Operation, answers: &[(&str, &str)]) {
    for (status, description) in answers {
        operation
            .responses
            .responses
            .entry((*status).to_string())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(*description).build()));
    }
}

/// Every error answer carries a problem body under its own media type, and
/// those that ask the client to wait say so in `Retry-After`.
fn problem_bodies(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        // A body documented as plain JSON (a health check's) stays as it is.
        let plain_json = response
            .content
            .get("application/json")
            .is_some_and(|content| !is_problem(content));
        if !plain_json {
            response.content.shift_remove("application/json");
            response.content.insert(
                "application/problem+json".to_string(),
                Content::new(Some(Ref::from_schema_name("Problem"))),
            );
        }
        if RETRY_AFTER.contains(&status.as_str()) {
            response
                .headers
                .entry("Retry-After".to_string())
                .or_insert_with(|| {
                    HeaderBuilder::new()
                        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("Seconds to wait before trying again"))
                        .build()
                });
        }
    }
}

fn is_problem(content: &Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
}

impl Modify for StandardProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Delete, &mut item.delete),
                (HttpMethod::Patch, &mut item.patch),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let secured = operation.security.iter().flatten().any(|r| *r == bearer);
                add(operation, EVERY);
                if secured {
                    add(operation, SECURED);
                }
                if operation.request_body.is_some() {
                    add(operation, BODY);
                }
                let path_id = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == ParameterIn::Path);
                if path_id {
                    add(operation, PATH_ID);
                }
                if secured && method != HttpMethod::Get {
                    add(operation, COMMAND);
                }
                problem_bodies(operation);
            }
        }
    }
}
