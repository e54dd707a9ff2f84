# syntax=docker/dockerfile:1
# Stampede: release binaries `api`, `worker` and `token` in a small, non-root image.
#   docker build -t stampede:local .
#   docker run --rm stampede:local api --help

# ---- build ------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The Swagger UI is vendored by utoipa-swagger-ui and SQL/Lua files are include_str!'d,
# so the build needs no network beyond crates.io and no database.
COPY . .
# The commit `stampede_build_info` names: `docker build --build-arg STAMPEDE_COMMIT=$(git rev-parse --short HEAD)`.
ARG STAMPEDE_COMMIT=unknown
ENV STAMPEDE_COMMIT=${STAMPEDE_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin api --bin worker --bin token \
    && mkdir -p /out \
    && cp target/release/api target/release/worker target/release/token /out/

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# curl serves the compose healthchecks. ca-certificates holds the system's roots: the binaries
# speak TLS themselves (rustls, reading those roots with rustls-native-certs) to Postgres,
# Redis, Kafka and the identity provider when no REDIS_CA_CERT / KAFKA_CA_CERT /
# sslrootcert names a CA of its own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stampede \
    && useradd --system --uid 10001 --gid stampede --no-create-home --shell /usr/sbin/nologin stampede
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
# api: LISTEN_ADDR (8080 in compose); worker: METRICS_ADDR (9464 in compose).
EXPOSE 8080 9464
# tini forwards SIGTERM to the binary, whose one shutdown path drains and exits.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["api"]
