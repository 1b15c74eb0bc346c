//! The registry's series as a scrape renders them, per caller and with per-key labels off.

use super::*;

fn caller() -> Caller {
    Caller {
        team: "research".to_owned(),
        key: "tg-abc1234".to_owned(),
    }
}

fn seen<'a>(caller: &'a Caller, usage: &'a Usage, cost: Option<Cost>) -> Observation<'a> {
    Observation {
        caller,
        model: "gpt-4o-mini",
        endpoint: "chat.completions",
        service_tier: "default",
        provider: "openai",
        status: 200,
        usage,
        cost,
        duration: Duration::from_millis(300),
        upstream_ttfb: Some(Duration::from_millis(120)),
        overhead: Duration::from_micros(400),
    }
}

#[test]
fn counters_render_in_the_text_format() {
    let metrics = Metrics::new().unwrap();
    metrics
        .unpriced_requests
        .with_label_values(&["mystery"])
        .inc();
    let text = metrics.render().unwrap();
    assert!(
        text.contains("# TYPE tollgate_unpriced_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_unpriced_requests_total{model=\"mystery\"} 1"),
        "{text}"
    );
}

#[test]
fn a_request_counts_its_tokens_cost_and_timings_by_caller() {
    let metrics = Metrics::new().unwrap();
    let caller = caller();
    let usage = Usage {
        prompt_tokens: 100,
        cached_tokens: 40,
        completion_tokens: 20,
        reasoning_tokens: 5,
        cache_write_tokens: 0,
    };
    let cost = Some(Cost::from_pico(27_000_000));
    metrics.observe(&seen(&caller, &usage, cost));
    metrics.observe(&seen(&caller, &usage, cost));
    // The same caller and model served at flex: a series of its own.
    metrics.observe(&Observation {
        service_tier: "flex",
        ..seen(&caller, &usage, Some(Cost::from_pico(13_000_000)))
    });
    // Served by another provider (an alias falling back across providers): its
    // spend is its own series, its request count the same one.
    metrics.observe(&Observation {
        provider: "azure",
        ..seen(&caller, &usage, Some(Cost::from_pico(1_000_000)))
    });
    metrics.refused(&caller, "gpt-4o-mini", "chat.completions", 429, Some("rpm"));
    let text = metrics.render().unwrap();
    let who = "key=\"tg-abc1234\",model=\"gpt-4o-mini\",provider=\"openai\"";
    let by_azure = "key=\"tg-abc1234\",model=\"gpt-4o-mini\",provider=\"azure\"";
    let requests_who = "key=\"tg-abc1234\",model=\"gpt-4o-mini\"";
    let team = "team=\"research\"";
    let requests = "tollgate_requests_total{endpoint=\"chat.completions\"";
    for line in [
        format!("{requests},{requests_who},status_class=\"2xx\",{team}}} 4"),
        format!("{requests},{requests_who},status_class=\"4xx\",{team}}} 1"),
        format!("tollgate_tokens_total{{{who},{team},type=\"prompt\"}} 300"),
        format!("tollgate_tokens_total{{{who},{team},type=\"cached\"}} 120"),
        format!("tollgate_tokens_total{{{who},{team},type=\"completion\"}} 60"),
        format!("tollgate_tokens_total{{{who},{team},type=\"reasoning\"}} 15"),
        format!("tollgate_cost_usd_total{{{who},service_tier=\"default\",{team}}} 0.000054"),
        format!("tollgate_cost_usd_total{{{who},service_tier=\"flex\",{team}}} 0.000013"),
        format!("tollgate_cost_usd_total{{{by_azure},service_tier=\"default\",{team}}} 0.000001"),
        format!("tollgate_tokens_total{{{by_azure},{team},type=\"prompt\"}} 100"),
        "tollgate_rate_limited_requests_total{kind=\"rpm\",team=\"research\"} 1".to_owned(),
        "tollgate_request_duration_seconds_count{endpoint=\"chat.completions\",\
         model=\"gpt-4o-mini\"} 4"
            .to_owned(),
        "tollgate_upstream_time_to_first_byte_seconds_bucket{endpoint=\"chat.completions\",\
         model=\"gpt-4o-mini\",le=\"0.25\"} 4"
            .to_owned(),
        "tollgate_overhead_seconds_bucket{endpoint=\"chat.completions\",le=\"0.0005\"} 4"
            .to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
}

#[test]
fn without_per_key_labels_series_merge_by_team() {
    let metrics = Metrics::with_config(&MetricsConfig {
        per_key_labels: false,
        ..MetricsConfig::default()
    })
    .unwrap();
    let usage = Usage {
        prompt_tokens: 1,
        ..Usage::default()
    };
    for key in ["tg-one", "tg-two"] {
        let caller = Caller {
            key: key.to_owned(),
            ..caller()
        };
        metrics.observe(&seen(&caller, &usage, Some(Cost::from_pico(1))));
        metrics.budget_used("key", &caller, Cost::from_pico(1), Cost::from_pico(2));
        metrics.budget_used("team", &caller, Cost::from_pico(3), Cost::from_pico(4));
    }
    let text = metrics.render().unwrap();
    assert!(!text.contains("key=\""), "{text}");
    assert!(
        text.contains(
            "tollgate_cost_usd_total{model=\"gpt-4o-mini\",provider=\"openai\",service_tier=\"default\",team=\"research\"} 0.000000000002"
        ),
        "{text}"
    );
    assert!(
        text.contains("tollgate_budget_used_ratio{scope=\"team\",team=\"research\"} 0.75"),
        "{text}"
    );
}

#[test]
fn the_in_flight_gauge_follows_its_guards() {
    let metrics = Metrics::new().unwrap();
    let first = metrics.in_flight();
    let second = metrics.in_flight();
    assert_eq!(metrics.in_flight.get(), 2);
    drop(first);
    drop(second);
    assert_eq!(metrics.in_flight.get(), 0);
}
