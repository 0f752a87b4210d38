//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`
//! (issue 11 point 8).
//!
//! Generated from the handlers: each carries a `#[utoipa::path]` with its
//! method, path, parameters, body and the answers it gives itself; the
//! bodies derive [`utoipa::ToSchema`] on the serde types that produce
//! them. What every route shares is added here from the route table
//! ([`super::routes`]), so it cannot drift from what the router does:
//!
//! - the `bearer` security scheme, required everywhere but on the public
//!   routes (`security: [{}]`; `/metrics` takes either);
//! - 401 (`WWW-Authenticate: Bearer`), 403 and 500 on every route that
//!   takes a token — the rule layer and the account store answer those;
//! - 400, 413 and 415 on every route with a request body.
//!
//! Every refusal references the one `Error` schema (`{"code","message"}`,
//! [`super::ErrorBody`]). `tests/api.rs` checks that the document has an
//! operation for each route and no other, and that it says `openapi: 3.1`.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder, Type, schema::ObjectBuilder,
};
use utoipa::{Modify, OpenApi};

use super::{Rule, Verb, routes};

/// The document (built once: the handlers' annotations do not change).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// `GET /openapi.json`: [`document`] as JSON.
#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub(super) async fn openapi_json() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        document()
            .to_json()
            .expect("the document is maps, strings and numbers: it serialises")
    });
    ([(CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "callbackd admin API",
        description = "Accounts, the organisation at run time, callbacks, webhooks, health and \
            metrics of a callbackd engine. Every refusal is `{\"code\",\"message\"}` (schema \
            `Error`). Send `Authorization: Bearer <token>` (`callbackd user add NAME --role \
            admin` prints the first one)."
    ),
    paths(
        super::health,
        super::healthz,
        super::readyz,
        super::metrics,
        openapi_json,
        super::stats,
        super::get_gates,
        super::put_gates,
        super::callbacks::list,
        super::callbacks::create,
        super::callbacks::cancel_by_number,
        super::callbacks::number_status,
        super::callbacks::get_one,
        super::callbacks::patch,
        super::callbacks::delete,
        super::org::get_org,
        super::org::put_org,
        super::org::patch_org,
        super::org::get_switches,
        super::org::put_org_switches,
        super::org::list_queues,
        super::org::put_queue,
        super::org::patch_queue,
        super::org::delete_queue,
        super::org::put_queue_switches,
        super::rules::put_freeze,
        super::rules::list,
        super::rules::put,
        super::rules::patch,
        super::rules::delete,
        super::agents,
        super::put_agent,
        super::accounts::me,
        super::accounts::put_my_password,
        super::accounts::list_users,
        super::accounts::create_user,
        super::accounts::get_user,
        super::accounts::patch_user,
        super::accounts::delete_user,
        super::accounts::put_user_password,
        super::accounts::list_tokens,
        super::accounts::issue_token,
        super::accounts::revoke_token,
        super::accounts::list_units,
        super::accounts::create_unit,
        super::accounts::patch_unit,
        super::accounts::delete_unit,
        super::accounts::audit,
        super::callbacks::cdrs,
        super::webhooks::list,
        super::webhooks::create,
        super::webhooks::get_one,
        super::webhooks::patch,
        super::webhooks::delete,
        super::webhooks::deliveries,
    ),
    components(schemas(super::ErrorBody)),
    modifiers(&Shared),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Adds what the routes share (see the module doc).
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`cbd_…`) from `callbackd user add` or \
                         `POST /v1/users/{name}/tokens`",
                    ))
                    .build(),
            ),
        );
        for route in routes() {
            let Some(item) = doc.paths.paths.get_mut(route.path) else {
                continue;
            };
            let operation = match route.verb {
                Verb::Get => item.get.as_mut(),
                Verb::Post => item.post.as_mut(),
                Verb::Put => item.put.as_mut(),
                Verb::Patch => item.patch.as_mut(),
                Verb::Delete => item.delete.as_mut(),
            };
            let Some(operation) = operation else {
                continue;
            };
            add_refusals(operation, route.rule);
        }
    }
}

/// The answers the rule layer, the store and the body reader give on top
/// of the handler's own.
fn add_refusals(operation: &mut Operation, rule: Rule) {
    let mut add = |status: &str, response: RefOr<utoipa::openapi::Response>| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(response);
    };
    if rule != Rule::Public {
        add(
            "401",
            ResponseBuilder::new()
                .description(
                    "`unauthorized`: no token, or a malformed, unknown, expired or revoked one, \
                     or a disabled user's",
                )
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("`Bearer realm=\"callbackd\"`, maybe with `error`"))
                        .build(),
                )
                .content("application/json", error_content())
                .build()
                .into(),
        );
        add(
            "403",
            error_response("`forbidden`: the caller's role is below the route's"),
        );
        add(
            "500",
            error_response("`store_error`: the store failed (our side)"),
        );
    }
    if operation.request_body.is_some() {
        add(
            "400",
            error_response("`invalid_body`: not a JSON object of the schema's fields"),
        );
        add(
            "413",
            error_response("`payload_too_large`: the body is over the route's limit"),
        );
        add(
            "415",
            error_response("`unsupported_media_type`: the body is not `application/json`"),
        );
    }
}

fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Error")))
        .build()
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content())
        .build()
        .into()
}
