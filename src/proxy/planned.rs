//! A request's plan before it is forwarded: the targets its key may use, and its budget
//! reserved for the model that will serve it (a downgrade's, past a threshold). What it
//! holds until its exchange begins is given back if it never gets that far.

use super::Proxy;
use super::request::MeteredRequest;
use crate::auth::{self, Identity};
use crate::budgets::{Budgets, Downgrade};
use crate::error::ApiError;
use crate::limits::Admission;
use crate::metering::Usage;
use crate::routing::Plan;

/// The request's plan, with only the targets the key may use: an alias the key may
/// use is its operator's to route; otherwise every target must be a model it may use.
/// `Ok(None)`: no upstream serves the model (refused after the checks that come first).
pub(super) fn allowed_plan(
    proxy: &Proxy,
    requested: Option<&str>,
    allowed: Option<&[String]>,
) -> Result<Option<Plan>, ApiError> {
    let plan = proxy
        .routing
        .plan(requested, || proxy.upstreams.position(requested));
    let not_allowed = || ApiError::ModelNotAllowed {
        model: requested.unwrap_or_default().to_owned(),
    };
    if auth::model_allowed(allowed, requested) {
        return Ok(plan);
    }
    match plan {
        Some(plan) if plan.routed() => plan
            .retain(requested, |target| {
                auth::model_allowed(allowed, target.model)
            })
            .map(Some)
            .ok_or_else(not_allowed),
        _ => Err(not_allowed()),
    }
}

/// Reserves the worst case of `plan` against the caller's budgets, or of its downgrade
/// when a budget it watches is past its threshold (decided in the same locked check),
/// and returns the plan that will serve. The reservation is recorded in `held`.
#[expect(clippy::too_many_arguments, reason = "the request and where it stands")]
pub(super) async fn reserve(
    proxy: &Proxy,
    identity: &Identity,
    plan: Plan,
    request: &MeteredRequest,
    prompt: Option<u64>,
    (row_id, ts_ms): (&str, i64),
    team: &str,
    held: &mut Held<'_>,
) -> Result<Plan, ApiError> {
    let (true, Some(prompt)) = (Budgets::applies(identity), prompt) else {
        return Ok(plan);
    };
    let requested = request.model.as_deref();
    // The worst case: the whole prompt uncached, and every output token allowed, at the
    // dearest model the plan may send to.
    let worst = Usage {
        prompt_tokens: prompt,
        completion_tokens: request
            .max_output
            .unwrap_or(proxy.budgets.config().default_max_tokens),
        ..Usage::default()
    };
    // At the dearest service tier each target can be billed at: see `tier::worst_case`.
    let tier = request.service_tier.as_deref();
    let dearest = |plan: &Plan| {
        plan.targets(requested)
            .filter_map(|target| proxy.pricer.estimate_reserve(target.model, tier, &worst))
            .max()
            .unwrap_or_default()
    };
    let allowed = identity
        .key
        .as_ref()
        .and_then(|entry| entry.key.allowed_models.as_deref());
    // A key allowed an alias is allowed what its operator routes it to.
    let alias_allowed = plan
        .alias()
        .is_some_and(|alias| auth::model_allowed(allowed, Some(alias)));
    let downgrade = proxy.routing.downgrade(team, &plan, requested, |model| {
        alias_allowed || auth::model_allowed(allowed, Some(model))
    });
    let ask = downgrade.as_ref().map(|candidate| Downgrade {
        amount: dearest(&candidate.plan),
        percent: candidate.percent,
        scope: candidate.scope,
    });
    // Boxed: the budget check's future (a database transaction) is ~10 KB, and held
    // inline it would make every metered request's handler future that much larger,
    // copied whole when axum boxes it, budgeted key or not.
    let reservation =
        Box::pin(
            proxy
                .budgets
                .reserve_or_downgrade(identity, row_id, dearest(&plan), ts_ms, ask),
        )
        .await?;
    let Some(reservation) = reservation else {
        return Ok(plan);
    };
    held.reservation = Some(reservation.id);
    match downgrade {
        Some(candidate) if reservation.downgraded => {
            for target in candidate.plan.targets(requested) {
                if let (Some(from), Some(to)) = (target.downgraded_from, target.model) {
                    proxy.routing.downgraded(team, from, to);
                }
            }
            Ok(candidate.plan)
        }
        _ => Ok(plan),
    }
}

/// What a request holds between admission and its exchange: given back when dropped
/// before `release`.
pub(super) struct Held<'a> {
    proxy: &'a Proxy,
    admission: Option<Admission>,
    /// The budget reservation's id.
    reservation: Option<String>,
}

impl<'a> Held<'a> {
    pub(super) fn new(proxy: &'a Proxy, admission: Option<Admission>) -> Self {
        Self {
            proxy,
            admission,
            reservation: None,
        }
    }

    /// The exchange begins: it takes the rate-limit charge, and its row will settle the
    /// reservation.
    pub(super) fn release(mut self) -> Option<Admission> {
        self.reservation = None;
        self.admission.take()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.cancel();
        }
        if let Some(id) = self.reservation.take() {
            self.proxy.budgets.release(&self.proxy.tasks, id);
        }
    }
}
