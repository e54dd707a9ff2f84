//! Lua scripts, each from its own file: the file name is the operation name and the
//! label of its latency metric and the name of its span when traces are exported.
//!
//! Shared Lua lives in preludes that the loader concatenates before a script's own file
//! ([`LuaScript::with_preludes`]), so a script stays one source and one EVALSHA: the
//! common prelude (`script/prelude.lua`: `now_ms`, `int`, `AMOUNT_MAX`) first, then the
//! preludes of its domain (seating, reservation, waiting room) with their named layouts.

use std::time::Instant;

use crate::infrastructure::RedisConnection;
use redis::{FromRedisValue, ScriptInvocation};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::trace_context::TraceParent;
use crate::telemetry::traces;

/// Most links of one script span: the SDK's own bound on a span's links.
const LINKS_MAX: usize = 128;

/// The common prelude: `now_ms` (Redis `TIME` in ms), `int` (integers as decimal text) and
/// `AMOUNT_MAX`, the vocabulary of every script with a prelude.
pub const PRELUDE: &str = include_str!("script/prelude.lua");

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

    /// Wraps a script's source after the common prelude ([`PRELUDE`]) and `preludes`, in
    /// that order: one source, so it still runs as one EVALSHA.
    pub fn with_preludes(name: &'static str, preludes: &[&str], body: &str) -> Self {
        let mut source = String::from(PRELUDE);
        for prelude in preludes {
            source.push_str(prelude);
            source.push('\n');
        }
        source.push_str(body);
        Self::new(name, &source)
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Most code lines (not blank, not comments) of a Lua function, or of a file's top
    /// level outside its functions: the house limit, as for Rust.
    const LINES_MAX: usize = 70;

    fn lua_files(directory: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(directory).expect("src is readable") {
            let path = entry.expect("readable entry").path();
            if path.is_dir() {
                lua_files(&path, files);
            } else if path.extension().is_some_and(|extension| extension == "lua") {
                files.push(path);
            }
        }
    }

    /// A line without its comment, or None when it holds no code.
    fn code(line: &str) -> Option<&str> {
        let code = line.split("--").next().unwrap_or_default();
        (!code.trim().is_empty()).then_some(code)
    }

    fn indentation(line: &str) -> usize {
        line.len() - line.trim_start().len()
    }

    /// Each function of a Lua source that spans lines, as (first line, last line), from 0:
    /// a function ends at the first later line at its indentation that starts with `end`
    /// (the house style indents every block).
    fn functions(lines: &[&str]) -> Vec<(usize, usize)> {
        let is_word = |text: &str, word: &str| {
            text.match_indices(word).any(|(at, _)| {
                let before = text[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                let after = text[at + word.len()..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                before && after
            })
        };
        let mut spans = Vec::new();
        for (start, line) in lines.iter().enumerate() {
            let Some(code) = code(line) else { continue };
            let opens = is_word(code, "function");
            if !opens || is_word(&code[code.find("function").unwrap_or_default()..], "end") {
                continue;
            }
            let end = (start + 1..lines.len())
                .find(|&at| indentation(lines[at]) == indentation(line) && lines[at].trim_start().starts_with("end"))
                .unwrap_or_else(|| panic!("no `end` for the function at line {}", start + 1));
            spans.push((start, end));
        }
        spans
    }

    fn code_lines(lines: &[&str], range: std::ops::RangeInclusive<usize>) -> usize {
        range.filter(|&at| code(lines[at]).is_some()).count()
    }

    /// Every Lua function over the limit, and every top level over it, as `file:line (n lines)`.
    fn too_long(source: &str, file: &str) -> Vec<String> {
        let lines: Vec<&str> = source.lines().collect();
        let spans = functions(&lines);
        let mut found: Vec<String> = spans
            .iter()
            .map(|&(start, end)| (start, code_lines(&lines, start..=end)))
            .filter(|&(_, count)| count > LINES_MAX)
            .map(|(start, count)| format!("{file}:{} ({count} lines)", start + 1))
            .collect();
        let top_level = (0..lines.len())
            .filter(|&at| code(lines[at]).is_some() && !spans.iter().any(|&(start, end)| (start..=end).contains(&at)))
            .count();
        if top_level > LINES_MAX {
            found.push(format!("{file}: top level ({top_level} lines)"));
        }
        found
    }

    #[test]
    fn no_lua_function_or_top_level_is_over_the_limit() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        lua_files(&root, &mut files);
        assert!(files.len() > 10, "the scripts are found");
        let found: Vec<String> = files
            .iter()
            .flat_map(|file| too_long(&std::fs::read_to_string(file).expect("readable"), &file.display().to_string()))
            .collect();
        assert!(found.is_empty(), "over {LINES_MAX} lines: {found:?}");
    }

    #[test]
    fn the_length_check_finds_long_functions_and_top_levels() {
        let body = "  x = x + 1\n".repeat(LINES_MAX);
        let long = format!("local function f(x)\n{body}  return x\nend\nlocal g = function(y) return y end\n");
        assert_eq!(too_long(&long, "a.lua"), ["a.lua:1 (73 lines)"]);
        let nested = format!("local function f()\n  local function g()\n{body}  end\nend\n");
        assert_eq!(too_long(&nested, "b.lua"), ["b.lua:1 (74 lines)", "b.lua:2 (72 lines)"]);
        assert_eq!(
            too_long(&"x = 1 -- comment\n-- only a comment\n\n".repeat(LINES_MAX + 1), "c.lua"),
            ["c.lua: top level (71 lines)"]
        );
        assert!(too_long(&"x = 1\n".repeat(LINES_MAX), "d.lua").is_empty());
    }
}
