//! The `/v1/files`, `/v1/batches` and `/v1/fine_tuning/jobs` routes. Everything is
//! passed through (uploads stream, under `server.max_upload_bytes`); around that,
//! tollgate records who created each object, refuses anyone else (403), filters lists
//! to the caller's own objects, and admits batch creates against budgets and the
//! enqueued-token limit.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Response, header};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::Value;

use super::store::{self, NewObject, Object, billing};
use super::{Tracker, admit, owner};
use crate::auth::{self, Identity};
use crate::budgets::Budgets;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::proxy::{self, Proxy};

/// Largest JSON answer read whole (a list of files or batches): far above any page.
const MAX_JSON_ANSWER: usize = 64 * 1024 * 1024;

/// How long a batch's budget reservation holds: the 24-hour completion window, time
/// to finalize, and a poll interval or two. Billing deletes it sooner.
const BATCH_HOLD: Duration = Duration::from_secs(26 * 3600);

/// A route with ownership rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    CreateFile,
    ListFiles,
    CreateBatch,
    ListBatches,
    RetrieveBatch(&'a str),
    CreateJob,
    ListJobs,
    RetrieveJob(&'a str),
    /// Any other use of one object: download, delete, cancel, events, checkpoints.
    Owned {
        what: &'static str,
        id: &'a str,
    },
}

/// The route of `path` (below `/v1`), if it is one of these.
pub fn route<'a>(method: &Method, path: &'a str) -> Option<Route<'a>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (get, post) = (method == Method::GET, method == Method::POST);
    Some(match segments.as_slice() {
        ["files"] if post => Route::CreateFile,
        ["files"] if get => Route::ListFiles,
        ["files", id] | ["files", id, "content"] => Route::Owned { what: "file", id },
        ["batches"] if post => Route::CreateBatch,
        ["batches"] if get => Route::ListBatches,
        ["batches", id] if get => Route::RetrieveBatch(id),
        ["batches", id, ..] => Route::Owned { what: "batch", id },
        ["fine_tuning", "jobs"] if post => Route::CreateJob,
        ["fine_tuning", "jobs"] if get => Route::ListJobs,
        ["fine_tuning", "jobs", id] if get => Route::RetrieveJob(id),
        ["fine_tuning", "jobs", id, ..] => Route::Owned {
            what: "fine-tuning job",
            id,
        },
        _ => return None,
    })
}

pub async fn handle(
    proxy: &Proxy,
    tracker: &Arc<Tracker>,
    identity: Identity,
    route: Route<'_>,
    path: &str,
    mut parts: Parts,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    let owner = owner(&identity);
    // Answers read here must arrive uncompressed.
    if !matches!(route, Route::Owned { .. }) {
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    match route {
        Route::Owned { what, id } => {
            check(tracker, &owner, what, id).await?;
            proxy::passthrough(proxy, path, parts, body).await
        }
        Route::ListFiles => list(proxy, tracker, &owner, Object::File, path, parts, body).await,
        Route::ListBatches => list(proxy, tracker, &owner, Object::Batch, path, parts, body).await,
        Route::ListJobs => {
            list(
                proxy,
                tracker,
                &owner,
                Object::FineTuningJob,
                path,
                parts,
                body,
            )
            .await
        }
        Route::RetrieveBatch(id) | Route::RetrieveJob(id) => {
            let what = if matches!(route, Route::RetrieveBatch(_)) {
                "batch"
            } else {
                "fine-tuning job"
            };
            check(tracker, &owner, what, id).await?;
            let auth = parts.headers.get(header::AUTHORIZATION).cloned();
            let (head, json) =
                read_json(proxy::passthrough(proxy, path, parts, body).await?).await?;
            if head.status.is_success() {
                retrieved(proxy, tracker, &identity, id, &json, auth).await;
            }
            Ok(rebuild(head, &json))
        }
        Route::CreateFile => {
            let (head, json) =
                read_json(proxy::passthrough(proxy, path, parts, body).await?).await?;
            if head.status.is_success() {
                if let Some(id) = json.get("id").and_then(Value::as_str) {
                    record(tracker, &identity, new_object(&identity, id, Object::File)).await;
                }
            }
            Ok(rebuild(head, &json))
        }
        Route::CreateBatch => create_batch(proxy, tracker, &identity, path, parts, body).await,
        Route::CreateJob => create_job(proxy, tracker, &identity, path, parts, body).await,
    }
}

/// 403 unless `owner` created `id` through tollgate.
async fn check(
    tracker: &Tracker,
    owner: &str,
    what: &'static str,
    id: &str,
) -> Result<(), ApiError> {
    match store::owner_of(&tracker.store, id).await {
        Ok(Some(found)) if found == owner => Ok(()),
        Ok(_) => Err(ApiError::NotYours {
            what,
            id: id.to_owned(),
        }),
        Err(error) => {
            tracing::error!(%error, "cannot read object ownership");
            Err(ApiError::Internal)
        }
    }
}

/// A list answer with only the caller's own objects in `data`. Pagination stays the
/// upstream's: a page may hold fewer items than `limit` asked for.
async fn list(
    proxy: &Proxy,
    tracker: &Tracker,
    owner: &str,
    object: Object,
    path: &str,
    parts: Parts,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    let (head, mut json) = read_json(proxy::passthrough(proxy, path, parts, body).await?).await?;
    if !head.status.is_success() {
        return Ok(rebuild(head, &json));
    }
    let owned = store::owned_ids(&tracker.store, owner, object)
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot read object ownership");
            ApiError::Internal
        })?;
    if let Some(Value::Array(items)) = json.get_mut("data") {
        items.retain(|item| {
            item.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| owned.contains(id))
        });
    }
    Ok(rebuild(head, &json))
}

/// A retrieved batch or job names files (output, errors, results) its owner may read.
/// In passthrough mode without an upstream key, a finished batch is billed here, with
/// the caller's own key: tollgate has no other.
async fn retrieved(
    proxy: &Proxy,
    tracker: &Arc<Tracker>,
    identity: &Identity,
    id: &str,
    json: &Value,
    auth: Option<HeaderValue>,
) {
    let files = ["output_file_id", "error_file_id"]
        .into_iter()
        .filter_map(|field| json.get(field).and_then(Value::as_str))
        .chain(
            json.get("result_files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
    for file in files {
        record(tracker, identity, new_object(identity, file, Object::File)).await;
    }
    if !tracker.needs_caller_key() {
        return;
    }
    let (Some(auth), Ok(Some(tracked))) = (auth, store::get(&tracker.store, id).await) else {
        return;
    };
    let tracker = Arc::clone(tracker);
    proxy.tasks.spawn(async move {
        tracker.poll_with_caller_key(&tracked, &auth).await;
    });
}

async fn create_batch(
    proxy: &Proxy,
    tracker: &Tracker,
    identity: &Identity,
    path: &str,
    parts: Parts,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    #[derive(Deserialize)]
    struct Create {
        input_file_id: String,
        endpoint: String,
    }
    let bytes = proxy::read_body(body, &parts.headers, proxy.server.max_body_bytes).await?;
    let create: Create =
        serde_json::from_slice(&bytes).map_err(|error| ApiError::InvalidField {
            param: "input_file_id",
            message: format!("A batch needs `input_file_id` and `endpoint`: {error}."),
        })?;
    check(tracker, &owner(identity), "file", &create.input_file_id).await?;
    let allowed = identity
        .key
        .as_ref()
        .and_then(|entry| entry.key.allowed_models.as_deref());
    let budgeted = Budgets::applies(identity);
    let counted =
        if budgeted || allowed.is_some() || !tracker.config.enqueued_token_limits.is_empty() {
            let auth = parts.headers.get(header::AUTHORIZATION);
            let default_output = proxy.budgets.config().default_max_tokens;
            let tally = admit::count_input(
                tracker,
                &proxy.pricer,
                &create.input_file_id,
                default_output,
                auth,
            )
            .await?;
            if !auth::model_allowed(allowed, tally.model.as_deref()) {
                return Err(ApiError::ModelNotAllowed {
                    model: tally.model.unwrap_or_default(),
                });
            }
            proxy.pricer.admit(tally.model.as_deref())?;
            Some(tally)
        } else {
            None
        };
    let now = now_ms();
    let uuid = uuid::Uuid::now_v7();
    let pending = format!("pending:{uuid}");
    let reservation = budgeted.then(|| format!("batch:{uuid}"));
    let model = counted.as_ref().and_then(|tally| tally.model.clone());
    let tokens = counted.as_ref().map_or(0, |tally| tally.prompt_tokens);
    let mut new = new_object(identity, &pending, Object::Batch);
    new.billing = billing::ADMITTING;
    new.endpoint = Some(create.endpoint);
    new.model.clone_from(&model);
    new.input_file_id = Some(create.input_file_id);
    new.enqueued_tokens = tokens;
    new.reservation_id.clone_from(&reservation);
    store::insert(&tracker.store, &new, now)
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot record a batch create");
            ApiError::Internal
        })?;
    let admitted = admit_batch(
        (&proxy.budgets, tracker),
        identity,
        model.as_deref(),
        tokens,
        counted.as_ref(),
        reservation.as_deref(),
        now,
    )
    .await;
    if let Err(error) = admitted {
        forget(tracker, &pending, None).await;
        return Err(error);
    }
    let forwarded = match proxy::passthrough(proxy, path, parts, Body::from(bytes)).await {
        Ok(response) => read_json(response).await,
        Err(error) => Err(error),
    };
    let batch_id = match &forwarded {
        Ok((head, json)) if head.status.is_success() => json.get("id").and_then(Value::as_str),
        _ => None,
    };
    let Some(batch_id) = batch_id else {
        forget(tracker, &pending, reservation.as_deref()).await;
        return forwarded.map(|(head, json)| rebuild(head, &json));
    };
    let next_poll =
        now + i64::try_from(tracker.config.poll_interval_secs * 1000).unwrap_or(i64::MAX);
    if let Err(error) =
        store::admitted(&tracker.store, &pending, batch_id, next_poll, now_ms()).await
    {
        // The upstream runs the batch; without its row it would go unbilled.
        tracing::error!(%error, batch = batch_id, "cannot record a created batch: it will not be billed");
    }
    forwarded.map(|(head, json)| rebuild(head, &json))
}

/// The enqueued-token limit, then the budgets (a batch the queue refuses never holds
/// a reservation).
async fn admit_batch(
    (budgets, tracker): (&Budgets, &Tracker),
    identity: &Identity,
    model: Option<&str>,
    tokens: u64,
    counted: Option<&admit::InputTally>,
    reservation: Option<&str>,
    now: i64,
) -> Result<(), ApiError> {
    if let Some(model) = model {
        admit::check_queue(tracker, model, tokens).await?;
    }
    if let (Some(reservation), Some(tally)) = (reservation, counted) {
        let reserved = budgets
            .reserve_for(identity, reservation, tally.cost, now, BATCH_HOLD)
            .await;
        if let Err(error) = reserved {
            tracker
                .metrics
                .batch_admissions_refused
                .with_label_values(&["budget"])
                .inc();
            return Err(error);
        }
    }
    Ok(())
}

/// A create that did not happen: drop its pending row and its reservation.
async fn forget(tracker: &Tracker, pending: &str, reservation: Option<&str>) {
    if let Err(error) = store::delete(&tracker.store, pending).await {
        tracing::warn!(%error, "cannot drop a refused batch create; it lapses in 10 minutes");
    }
    if let Some(reservation) = reservation {
        if let Err(error) = store::release(&tracker.store, reservation).await {
            tracing::warn!(%error, "cannot release a refused batch's reservation; it lapses");
        }
    }
}

async fn create_job(
    proxy: &Proxy,
    tracker: &Tracker,
    identity: &Identity,
    path: &str,
    parts: Parts,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    #[derive(Deserialize)]
    struct Create {
        model: String,
        training_file: String,
        validation_file: Option<String>,
    }
    let bytes = proxy::read_body(body, &parts.headers, proxy.server.max_body_bytes).await?;
    let create: Create =
        serde_json::from_slice(&bytes).map_err(|error| ApiError::InvalidField {
            param: "training_file",
            message: format!("A fine-tuning job needs `model` and `training_file`: {error}."),
        })?;
    let owner = owner(identity);
    check(tracker, &owner, "file", &create.training_file).await?;
    if let Some(file) = &create.validation_file {
        check(tracker, &owner, "file", file).await?;
    }
    let allowed = identity
        .key
        .as_ref()
        .and_then(|entry| entry.key.allowed_models.as_deref());
    if !auth::model_allowed(allowed, Some(&create.model)) {
        return Err(ApiError::ModelNotAllowed {
            model: create.model,
        });
    }
    let (head, json) =
        read_json(proxy::passthrough(proxy, path, parts, Body::from(bytes)).await?).await?;
    if head.status.is_success() {
        if let Some(id) = json.get("id").and_then(Value::as_str) {
            let mut new = new_object(identity, id, Object::FineTuningJob);
            new.billing = billing::TRACKING;
            new.model = Some(create.model);
            new.input_file_id = Some(create.training_file);
            record(tracker, identity, new).await;
        }
    }
    Ok(rebuild(head, &json))
}

fn new_object(identity: &Identity, id: &str, object: Object) -> NewObject {
    NewObject {
        id: id.to_owned(),
        object,
        owner: owner(identity),
        key_id: identity.key_id.clone(),
        team_id: identity.team_id.clone(),
        caller: identity.display.clone(),
        created_ms: now_ms(),
        billing: billing::NONE,
        endpoint: None,
        model: None,
        input_file_id: None,
        enqueued_tokens: 0,
        reservation_id: None,
    }
}

async fn record(tracker: &Tracker, identity: &Identity, new: NewObject) {
    if let Err(error) = store::insert(&tracker.store, &new, now_ms()).await {
        tracing::error!(
            %error,
            id = %new.id,
            key = %identity.display,
            "cannot record who created an upstream object: its owner will be refused it"
        );
    }
}

/// The head and JSON body of an answer read whole. A body that is not JSON is
/// returned as a JSON string so it still reaches the client.
async fn read_json(
    response: Response<Body>,
) -> Result<(axum::http::response::Parts, Value), ApiError> {
    let (head, body) = response.into_parts();
    let bytes = Limited::new(body, MAX_JSON_ANSWER)
        .collect()
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "cannot read the upstream's answer");
            ApiError::Internal
        })?
        .to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((head, json))
}

fn rebuild(mut head: axum::http::response::Parts, json: &Value) -> Response<Body> {
    // The body may have been filtered; hyper sets the new length.
    head.headers.remove(header::CONTENT_LENGTH);
    let body = match json {
        Value::String(raw) => raw.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    };
    Response::from_parts(head, Body::from(body))
}

impl Tracker {
    /// Passthrough mode with no upstream key: the poller has no credentials, so a
    /// batch is polled and billed when its owner retrieves it, with the owner's key.
    pub fn needs_caller_key(&self) -> bool {
        self.mode == crate::config::AuthMode::Passthrough
            && self.upstream().is_ok_and(|u| u.keyless())
    }

    async fn poll_with_caller_key(&self, tracked: &store::Tracked, auth: &HeaderValue) {
        let _pass = self.pass.lock().await;
        // Another retrieve may have billed it meanwhile.
        match store::get(&self.store, &tracked.id).await {
            Ok(Some(fresh))
                if matches!(fresh.billing.as_str(), billing::TRACKING | billing::BILLING) =>
            {
                self.poll_one(&fresh, Some(auth)).await;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read a tracked batch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_by_method_and_shape() {
        let table = [
            (Method::POST, "/files", Some(Route::CreateFile)),
            (Method::GET, "/files", Some(Route::ListFiles)),
            (
                Method::GET,
                "/files/file-1/content",
                Some(Route::Owned {
                    what: "file",
                    id: "file-1",
                }),
            ),
            (
                Method::DELETE,
                "/files/file-1",
                Some(Route::Owned {
                    what: "file",
                    id: "file-1",
                }),
            ),
            (Method::POST, "/batches", Some(Route::CreateBatch)),
            (Method::GET, "/batches/b1", Some(Route::RetrieveBatch("b1"))),
            (
                Method::POST,
                "/batches/b1/cancel",
                Some(Route::Owned {
                    what: "batch",
                    id: "b1",
                }),
            ),
            (
                Method::GET,
                "/fine_tuning/jobs/j1/events",
                Some(Route::Owned {
                    what: "fine-tuning job",
                    id: "j1",
                }),
            ),
            (
                Method::GET,
                "/fine_tuning/jobs/j1",
                Some(Route::RetrieveJob("j1")),
            ),
            (Method::GET, "/models", None),
            (Method::DELETE, "/files", None),
        ];
        for (method, path, expected) in table {
            assert_eq!(route(&method, path), expected, "{method} {path}");
        }
    }
}
