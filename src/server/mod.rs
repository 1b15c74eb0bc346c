//! The HTTP server: router, layer order, the accept loop, and graceful shutdown.

mod connection;
mod routes;
mod scrape;
mod v1;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::auth::store as auth_store;
use crate::auth::{Authenticator, KeyCache};
use crate::batch::Tracker;
use crate::budgets::Budgets;
use crate::config::{
    AuthMode, Config, DatabaseConfig, ENV_ADMIN_KEY, LimitsBackend, Secret, ServerConfig,
};
use crate::ledger::{LedgerError, LedgerWriter, SpillError, Store};
use crate::limits::redis::RedisBuckets;
use crate::limits::{LimitClock, Limiter};
use crate::metrics::Metrics;
use crate::pricing::PricingError;
use crate::proxy::upstream::Upstreams;
use crate::proxy::{Pricer, Proxy, UpstreamError};
use crate::reconcile::Reconciler;
use crate::reconcile::schedule::Scheduler;
use crate::routing::{Routing, RoutingError};

pub use routes::router;
use scrape::ScrapeAccess;
use v1::V1;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Spill(#[from] SpillError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("{problems} (known tiers: {known}); define them under [limits.tiers] or change them")]
    UnknownTiers { problems: String, known: String },
    #[error("cannot read keys and teams: {0}")]
    Keys(#[from] crate::auth::AuthError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("limits.redis_url: {0}")]
    Redis(redis::RedisError),
    #[error(transparent)]
    Routing(#[from] RoutingError),
}

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    pub proxy: Arc<Proxy>,
    pub v1: Arc<V1>,
    pub admin: Arc<Admin>,
    pub store: Store,
    pub metrics: Metrics,
    pub metrics_access: Arc<ScrapeAccess>,
    /// Cancelled when draining starts: background loops on `proxy.tasks` (the
    /// scheduled reconciliation) stop then, so the drain does not wait on them.
    pub stopping: CancellationToken,
}

/// A running tollgate: its address, its ledger (tests flush it), and a way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub ledger: LedgerWriter,
    /// Tracked batches and jobs (tests poll them now instead of waiting an interval).
    pub batches: Arc<Tracker>,
    /// Routing state (tests sync it with Redis now instead of waiting an interval).
    pub routing: Arc<Routing>,
    /// The scheduled reconciliation, when `[reconcile] schedule` is set (tests run it
    /// now instead of waiting for its time of day).
    pub reconcile: Option<Arc<Scheduler>>,
    /// The registry `/metrics` renders (tests list its families, series or not).
    pub metrics: Metrics,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    relays: TaskTracker,
}

impl Running {
    /// Metered exchanges still running (relaying or recording): 0 when idle, so tests
    /// can see that abandoned requests leave no task behind.
    pub fn in_flight(&self) -> usize {
        self.relays.len()
    }

    /// Stops as SIGTERM would: drain in-flight requests, flush the ledger, return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "server task failed");
        }
    }
}

/// Opens the ledger, binds the listener and starts serving in the background.
/// `env` supplies the upstream keys (the process environment in production).
pub async fn start(config: Config, env: &HashMap<String, String>) -> Result<Running, ServeError> {
    // Prices first: a bad prices file should stop start-up before anything else opens.
    let metrics = Metrics::with_config(&config.metrics)?;
    let upstreams = Arc::new(Upstreams::new(&config.upstreams, env)?);
    let pricer = Arc::new(
        Pricer::new(config.pricing.catalog()?, &config.pricing, metrics.clone())
            .with_names(Arc::clone(&upstreams)),
    );
    let store = open_store(&config.database).await?;
    let (ledger, _writer) = LedgerWriter::spawn(store.clone(), &config.ledger)?;
    metrics.watch_ledger(ledger.clone())?;
    if config.auth.mode == AuthMode::Keys {
        for name in upstreams.keyless() {
            // Right for a local server that takes no key; a missing variable otherwise.
            tracing::warn!(
                upstream = name,
                "keys mode: this upstream has no key (api_key_env unset or empty); its \
                 requests are sent without credentials"
            );
        }
    }
    let cache = KeyCache::default();
    let mut background = Vec::new();
    if config.auth.mode == AuthMode::Keys {
        // Load before listening, so the first request finds its key; if the database
        // is down the refresher keeps trying and requests get 503 until it answers.
        match cache.refresh(&store).await {
            Ok(_) => {
                check_tiers(&store, &config.limits.tier_names()).await?;
                check_team_shares(&store, &config).await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot load keys; retrying in the background");
            }
        }
        background.push(cache.spawn_refresher(store.clone(), config.auth.refresh_interval));
    }
    // A reservation must outlive its request (the slowest upstream's total timeout)
    // and the wait in the ledger queue; after that it lapses.
    let ttl = config
        .upstreams
        .iter()
        .map(|upstream| upstream.total_timeout)
        .max()
        .unwrap_or_default()
        + Duration::from_secs(600);
    let budgets = Budgets::new(store.clone(), config.budgets.clone(), metrics.clone(), ttl);
    background.push(Budgets::spawn_sweeper(store.clone()));
    let admin_key = env.get(ENV_ADMIN_KEY).cloned().map(Secret::new);
    let reconciler = Arc::new(Reconciler::new(&config, config.pricing.catalog()?, env));
    let admin = Arc::new(
        Admin::new(
            store.clone(),
            cache.clone(),
            admin_key.as_ref(),
            config.limits.tier_names(),
        )
        .with_reconciler(Arc::clone(&reconciler)),
    );
    let tasks = TaskTracker::new();
    let stopping = CancellationToken::new();
    let scheduled = config.reconcile.schedule_minutes().map(|minutes| {
        if !reconciler.has_key() {
            tracing::warn!(
                variable = %config.reconcile.admin_key_env,
                "reconcile.schedule is set but the admin key variable is unset: each run \
                 will fail until it holds an OpenAI organization admin key"
            );
        }
        let scheduler = Arc::new(Scheduler::new(reconciler, store.clone(), metrics.clone()));
        Arc::clone(&scheduler).spawn(minutes, &tasks, stopping.clone());
        tracing::info!(
            schedule = config.reconcile.schedule.as_deref().unwrap_or_default(),
            "reconciliation with OpenAI scheduled daily (UTC)"
        );
        scheduler
    });
    let batches = Arc::new(Tracker::new(
        store.clone(),
        Upstreams::new(&config.upstreams, env)?,
        Arc::clone(&pricer),
        metrics.clone(),
        config.batch.clone(),
        config.auth.mode,
    ));
    let stop_polling = CancellationToken::new();
    let poller = batches.spawn(stop_polling.clone());
    let mut limits = Limiter::new(&config.limits, LimitClock::default(), metrics.clone());
    if config.limits.backend == LimitsBackend::Redis {
        // Validation checked the URL; a server that is down is an outage, not an error.
        let redis = RedisBuckets::new(
            &config.limits.redis_url,
            config.limits.redis_timeout,
            tasks.clone(),
        )
        .map_err(ServeError::Redis)?;
        limits = limits.shared(redis);
    }
    let addr = config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let relays = tasks.clone();
    let routing = Arc::new(Routing::new(&config, upstreams.shared_keys(), &metrics)?);
    if let Some(sync) = routing.spawn_sync() {
        background.push(sync);
    }
    let proxy = Arc::new(Proxy {
        auth: Authenticator {
            mode: config.auth.mode,
            cache,
        },
        budgets,
        limits,
        upstreams,
        routing: Arc::clone(&routing),
        pricer,
        ledger: ledger.clone(),
        tasks,
        server: config.server.clone(),
        metrics: metrics.clone(),
    });
    let exported = metrics.clone();
    let state = AppState {
        v1: Arc::new(V1 {
            proxy: Arc::clone(&proxy),
            batches: Arc::clone(&batches),
        }),
        proxy,
        admin,
        store,
        metrics,
        metrics_access: Arc::new(ScrapeAccess::new(config.metrics.bearer_token.as_ref())),
        stopping,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, state, config.server, async move {
            let _ = stopped.await;
        })
        .await;
        // A poll cut off mid-file resumes from its cursor on the next start.
        stop_polling.cancel();
        let _ = poller.await;
        for task in background {
            task.abort();
        }
    });
    tracing::info!(%addr, "tollgate listening");
    Ok(Running {
        addr,
        ledger,
        batches,
        routing,
        reconcile: scheduled,
        metrics: exported,
        stop,
        task,
        relays,
    })
}

/// Every key's and team's tier must be one the config defines: a tier removed from the
/// config (or named by a CLI run with another config) would otherwise silently fall
/// back to the default tier's limits.
async fn check_tiers(store: &Store, known: &[String]) -> Result<(), ServeError> {
    let unknown = |tier: &Option<String>| {
        tier.as_deref()
            .filter(|t| !known.iter().any(|k| k == t))
            .map(str::to_owned)
    };
    let mut problems = Vec::new();
    for team in auth_store::list_teams(store).await? {
        if let Some(tier) = unknown(&team.tier) {
            problems.push(format!("team `{}` has unknown tier `{tier}`", team.name));
        }
    }
    for key in auth_store::list_keys(store, None).await? {
        if let Some(tier) = unknown(&key.tier) {
            problems.push(format!("key `{}` has unknown tier `{tier}`", key.prefix));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(ServeError::UnknownTiers {
        problems: problems.join("; "),
        known: known.join(", "),
    })
}

/// `[teams.<name>]` names teams of the database: a name none has is most likely a typo
/// or a rename, and its share would silently go to no one. Warned, not refused: the
/// team may be created later.
async fn check_team_shares(store: &Store, config: &Config) {
    if config.teams.is_empty() {
        return;
    }
    let Ok(teams) = auth_store::list_teams(store).await else {
        return;
    };
    for name in config.teams.keys() {
        if !teams.iter().any(|team| &team.name == name) {
            tracing::warn!(
                team = %name,
                "[teams.{name}] names no team in the database: its share applies to no one until one is created"
            );
        }
    }
}

/// Opens the ledger's database. A SQLite file that cannot be opened is a
/// configuration error and stops start-up; a Postgres server that does not answer is
/// an outage: tollgate starts anyway, spills rows, serves cached keys, and applies the
/// migrations when the server comes back.
async fn open_store(database: &DatabaseConfig) -> Result<Store, ServeError> {
    let store = Store::lazy_with(&database.url, database.pool())?;
    if store.is_sqlite() {
        store.migrate().await?;
        return Ok(store);
    }
    let first = tokio::time::timeout(Duration::from_secs(10), store.migrate()).await;
    if let Ok(Ok(())) = first {
        return Ok(store);
    }
    tracing::error!(
        error = %first.map_or_else(|_| "timed out".to_owned(), |r| r.err().map(|e| e.to_string()).unwrap_or_default()),
        "database unreachable at start: serving anyway, spilling ledger rows to disk until it answers"
    );
    let background = store.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match background.migrate().await {
                Ok(()) => {
                    tracing::info!("database reachable: migrations applied");
                    return;
                }
                Err(error) => tracing::debug!(%error, "database still unreachable"),
            }
        }
    });
    Ok(store)
}

/// Accepts connections until `shutdown` resolves, then drains: open connections finish
/// their in-flight requests (HTTP/1 closes after the current response, HTTP/2 sends
/// GOAWAY), relay tasks finish their streams and rows, and the ledger is flushed, all
/// within `drain_timeout`. Until then each connection closes itself when it goes
/// without a request too long (`connection::run`).
async fn serve(
    listener: TcpListener,
    state: AppState,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let app: Router = router(state.clone());
    let deadlines = connection::Deadlines {
        first_request: config.header_read_timeout,
        idle: config.idle_timeout,
    };
    // Each connection watches `closing` itself rather than through hyper-util's
    // GracefulShutdown, which would keep its `graceful_shutdown` from the idle timer.
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without it a response written as headers then body stalls on delayed ACKs.
        let _ = stream.set_nodelay(true);
        connections.spawn(connection::run(
            builder.clone(),
            stream,
            app.clone(),
            deadlines,
            closing.clone(),
        ));
    }
    drop(listener);
    let deadline = Instant::now() + config.drain_timeout;
    tracing::info!(drain_timeout = ?config.drain_timeout, "shutting down: draining connections");
    closing.cancel();
    state.stopping.cancel();
    connections.close();
    if tokio::time::timeout_at(deadline.into(), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "drain timeout reached with connections still open"
        );
    }
    let tasks = &state.proxy.tasks;
    tasks.close();
    if tokio::time::timeout_at(deadline.into(), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tasks.len(),
            "drain timeout reached with relays still running"
        );
    }
    // The flush gets its own bound: rows of finished requests are worth a little wait.
    let flush = state.proxy.ledger.flush();
    if tokio::time::timeout(Duration::from_secs(10), flush)
        .await
        .is_err()
    {
        tracing::error!(
            queued = state.proxy.ledger.queue_depth(),
            "ledger flush timed out: the database is not accepting rows"
        );
    }
    replay_spill_before_exit(&state.proxy.ledger).await;
    tracing::info!("shutdown complete");
}

/// Rows spilled in the last second of a busy run (a pool wait that timed out, with the
/// database up) would otherwise wait on disk for the next start, and a reader of the
/// ledger in between would see them missing. A database that is really down costs one
/// ping here; the rows stay safe in the spill either way.
async fn replay_spill_before_exit(ledger: &crate::ledger::LedgerWriter) {
    if ledger.spilled_rows() == 0 && !ledger.is_spilling() {
        return;
    }
    let left = match tokio::time::timeout(Duration::from_secs(10), ledger.replay_spill()).await {
        Ok(left) => left,
        Err(_) => ledger.spilled_rows(),
    };
    if left == 0 {
        tracing::info!("spilled ledger rows replayed before exit");
    } else {
        tracing::warn!(
            rows = left,
            spill_dir = %ledger.spill_dir().display(),
            "ledger rows left in the spill at exit: the next start replays them"
        );
    }
}
