//! Lua scripts, each from its own file: the file name is the operation name and the
//! label of its latency metric.

use std::time::Instant;

use crate::infrastructure::RedisConnection;
use redis::{FromRedisValue, ScriptInvocation};

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

    /// Runs an invocation (EVALSHA, loading the script on NOSCRIPT) and records its latency.
    pub async fn run<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        redis: &mut RedisConnection,
    ) -> redis::RedisResult<T> {
        let started = Instant::now();
        let result = invocation.invoke_async(redis).await;
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
        let started = Instant::now();
        let result = redis.invoke_acknowledged(invocation).await;
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
