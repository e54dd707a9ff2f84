//! Lua scripts, each from its own file: the file name is the operation name and the
//! label of its latency metric and the name of its span when traces are exported.

use std::time::Instant;

use crate::infrastructure::RedisConnection;
use redis::{FromRedisValue, ScriptInvocation};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::trace_context::TraceParent;
use crate::telemetry::traces;

/// Most links of one script span: the SDK's own bound on a span's links.
const LINKS_MAX: usize = 128;

/// A Lua script with its operation name.
pub struct LuaScript {
    name: &'static str,
    script: redis::Script,
}

impl LuaScript {
    /// Wraps a script's source under its operation name.
    pub fn new(name: &'static str, source: &str) -> Self {
        Self { name, script: redis::Script::new(source) }
    }

    /// The operation name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Starts an invocation; add keys and arguments, then pass it to [`LuaScript::run`].
    pub fn prepare(&self) -> ScriptInvocation<'_> {
        self.script.prepare_invoke()
    }

    /// The span of one call of the script, when traces are exported and the call is
    /// made for something traced (a request); a disabled span otherwise, which costs
    /// nothing. Calls made on their own (the reaper's polls, the relay's leases) would
    /// otherwise each start a trace of one span.
    pub fn span(&self) -> Span {
        if !traces::enabled() || Span::current().is_none() {
            return Span::none();
        }
        self.traced_span()
    }

    /// The span of a call that decides `size` requests together (group commit), linked to
    /// the traced ones among them.
    pub fn batch_span<'a>(&self, size: usize, requests: impl IntoIterator<Item = &'a TraceParent>) -> Span {
        if !traces::enabled() {
            return Span::none();
        }
        let span = self.traced_span();
        span.record("stampede.batch_size", u64::try_from(size).unwrap_or(u64::MAX));
        for request in requests.into_iter().take(LINKS_MAX) {
            span.add_link(request.span_context());
        }
        span
    }

    fn traced_span(&self) -> Span {
        tracing::info_span!(
            "redis script",
            otel.name = self.name,
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = "EVALSHA",
            db.stored_procedure.name = self.name,
            stampede.batch_size = tracing::field::Empty,
        )
    }

    /// Runs an invocation (EVALSHA, loading the script on NOSCRIPT) and records its latency.
    pub async fn run<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        redis: &mut RedisConnection,
    ) -> redis::RedisResult<T> {
        let started = Instant::now();
        let result = invocation.invoke_async(redis).instrument(self.span()).await;
        metrics::histogram!("redis_script_duration_seconds", "script" => self.name)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

impl LuaScript {
    /// Runs an invocation like [`LuaScript::run`], and answers only once the replicas the
    /// connection's policy asks for hold the script's writes (see
    /// [`crate::infrastructure::replication`]); not acknowledged in time: an error.
    pub async fn run_acknowledged<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        redis: &mut RedisConnection,
    ) -> redis::RedisResult<T> {
        self.run_acknowledged_in(invocation, redis, self.span()).await
    }

    /// [`LuaScript::run_acknowledged`] in `span` (a [`LuaScript::batch_span`]).
    pub async fn run_acknowledged_in<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        redis: &mut RedisConnection,
        span: Span,
    ) -> redis::RedisResult<T> {
        let started = Instant::now();
        let result = redis.invoke_acknowledged(invocation).instrument(span).await;
        metrics::histogram!("redis_script_duration_seconds", "script" => self.name)
            .record(started.elapsed().as_secs_f64());
        Ok(redis::from_redis_value(result?)?)
    }
}

/// Declares a lazily built [`LuaScript`] from `src/<dir>/<name>.lua`.
#[macro_export]
macro_rules! lua_script {
    ($static_name:ident, $name:literal, $path:literal) => {
        static $static_name: std::sync::LazyLock<$crate::script::LuaScript> =
            std::sync::LazyLock::new(|| $crate::script::LuaScript::new($name, include_str!($path)));
    };
}
