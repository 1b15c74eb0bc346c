//! Redis, which holds the shared rate limits, killed for 10 s under load and started
//! again: a `fail_open` replica keeps serving on its own buckets, a `fail_closed` one
//! answers 503, neither panics, and both use Redis again within seconds of its return.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::kit::{self, Load, PrivateRedis, Shape, Told, Tollgate};

const OUTAGE: Duration = Duration::from_secs(10);

fn limits(redis: &str, policy: &str) -> String {
    // Figures no client reaches: every request goes through the Redis script, none is
    // refused for its rate, so a refusal can only be the failure policy.
    format!(
        "[limits]\nenabled = true\nbackend = \"redis\"\nredis_url = \"{redis}\"\n\
         on_redis_error = \"{policy}\"\ndefault_tier = \"faults\"\n\
         [limits.tiers.faults]\nrpm = 10000000\ntpm = 10000000000\n"
    )
}

fn local_fallbacks(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("tollgate_rate_limit_backend_errors_total{action=\"local\"} ")
        })
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_10s_under_load_follows_the_policy_and_recovers_within_seconds() {
    if !kit::enabled("redis_down") {
        return;
    }
    let mut redis = PrivateRedis::start().await;
    let upstream = kit::upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for policy in ["fail_open", "fail_closed"] {
        let db_url = format!(
            "sqlite://{}",
            dir.path().join(format!("{policy}.db")).display()
        );
        let port = kit::free_port();
        let spill = dir.path().join(format!("{policy}-spill"));
        let extra = limits(&redis.url(), policy);
        let config = kit::config(port, &db_url, &upstream, &spill, &extra);
        let tollgate = Tollgate::start(dir.path(), policy, port, &config).await;
        let keys = tollgate.keys(5, 2, |_| json!({})).await;
        replicas.push((tollgate, keys, db_url));
    }
    let shape = Shape::steady(25, Duration::from_millis(20));
    let loads: Vec<Load> = replicas
        .iter()
        .map(|(tollgate, keys, _)| Load::start(std::slice::from_ref(&tollgate.base), keys, &shape))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    redis.down();
    let outage = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let open = &replicas[0].0;
    let fallbacks_in_outage = local_fallbacks(&open.metrics().await);
    redis.up().await;
    let back = Instant::now();
    // The fail_open replica is back on Redis once its fallback count stops rising.
    let mut last_fallback = Duration::ZERO;
    let mut fallbacks = fallbacks_in_outage;
    while back.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = local_fallbacks(&open.metrics().await);
        if now != fallbacks {
            fallbacks = now;
            last_fallback = back.elapsed();
        }
    }
    let mut told: Vec<Vec<Told>> = Vec::new();
    for load in loads {
        told.push(load.stop().await);
    }

    let closed = &told[1];
    let closed_recovery = closed
        .iter()
        .filter(|t| t.at > back && t.status == Ok(200))
        .map(|t| t.at - back)
        .min()
        .unwrap();
    let refused_in_outage = closed
        .iter()
        .filter(|t| t.status == Ok(503) && t.at > outage)
        .count();
    let last_refusal = closed
        .iter()
        .filter(|t| t.status == Ok(503))
        .map(|t| t.at.saturating_duration_since(back))
        .max()
        .unwrap_or_default();
    eprintln!(
        "redis down {OUTAGE:?}: fail_open served on local buckets {fallbacks_in_outage} times \
         during the outage and last fell back {last_fallback:?} after Redis returned \
         ({fallbacks} in all); fail_closed refused {refused_in_outage} with 503, first \
         served again {closed_recovery:?} after Redis returned, last 503 {last_refusal:?} \
         after it"
    );
    assert!(
        fallbacks_in_outage > 100,
        "fail_open fell back to local buckets"
    );
    assert!(
        refused_in_outage > 100,
        "fail_closed refused during the outage"
    );
    assert!(
        last_fallback < Duration::from_secs(3),
        "fail_open back on Redis within seconds: {last_fallback:?}"
    );
    assert!(
        closed_recovery < Duration::from_secs(3),
        "fail_closed serves within seconds: {closed_recovery:?}"
    );
    assert!(
        last_refusal < Duration::from_secs(3),
        "no 503 seconds after Redis is back: {last_refusal:?}"
    );

    for ((mut tollgate, keys, db_url), told) in replicas.into_iter().zip(&told) {
        tollgate.stop().await;
        let rows = kit::ledger_rows(&db_url).await;
        let audit = kit::audit(told, &rows, &keys);
        eprintln!(
            "  {}: {} answered, {} rows, {} lost, {} doubled, not answered: {:?}",
            tollgate.base,
            audit.answered,
            audit.rows,
            audit.lost.len(),
            audit.doubled.len(),
            audit.refused
        );
        audit.assert_none_lost_or_doubled();
        assert_eq!(audit.rows, audit.answered);
        // fail_open refuses nothing; fail_closed refuses with 503 and records no row.
        let allowed: &[&str] = if db_url.contains("fail_open") {
            &[]
        } else {
            &["503"]
        };
        for kind in audit.refused.keys() {
            assert!(allowed.contains(&kind.as_str()), "{:?}", audit.refused);
        }
    }
}
