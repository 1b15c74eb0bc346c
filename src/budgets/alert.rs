//! Budget alerts: a log line, a metric and, when configured, a webhook POST, once per
//! budget, level and period (the database row in `budget_alerts` decides which replica
//! sends it). Webhooks are retried in the background and never delay a request.

use std::time::Duration;

use serde::Serialize;

use super::Budget;
use crate::metrics::Metrics;
use crate::pricing::Cost;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The soft threshold (default 80%) was reached.
    Soft,
    /// A request was refused: the budget is used up.
    Exhausted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Exhausted => "exhausted",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    pub scope: &'static str,
    pub id: String,
    pub name: String,
    pub level: Level,
    #[serde(flatten)]
    pub budget: Budget,
    pub period_start_ms: i64,
    /// Committed spend plus requests in flight when the alert fired.
    pub used: Cost,
}

const ATTEMPTS: u32 = 5;

pub struct Alerts {
    webhook: Option<(reqwest::Client, String)>,
    metrics: Metrics,
}

impl Alerts {
    pub fn new(webhook_url: Option<String>, metrics: Metrics) -> Self {
        let webhook = webhook_url.and_then(|url| {
            match reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            {
                Ok(client) => Some((client, url)),
                Err(error) => {
                    tracing::error!(%error, "cannot build the budget webhook client; alerts are logged only");
                    None
                }
            }
        });
        Self { webhook, metrics }
    }

    pub fn fire(&self, event: AlertEvent) {
        tracing::warn!(
            scope = event.scope,
            name = %event.name,
            level = event.level.as_str(),
            period = event.budget.period.as_str(),
            limit_usd = %event.budget.limit(),
            used_usd = %event.used,
            "budget alert"
        );
        self.metrics
            .budget_alerts
            .with_label_values(&[event.scope, event.level.as_str()])
            .inc();
        let Some((client, url)) = self.webhook.clone() else {
            return;
        };
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            let body = serde_json::json!({"event": "budget_alert", "alert": event}).to_string();
            for attempt in 1..=ATTEMPTS {
                let sent = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => return,
                    Ok(response) => {
                        tracing::warn!(status = %response.status(), attempt, "budget webhook refused");
                    }
                    Err(error) => tracing::warn!(%error, attempt, "budget webhook failed"),
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            tracing::error!(scope = event.scope, name = %event.name, "budget webhook gave up");
        });
    }
}
