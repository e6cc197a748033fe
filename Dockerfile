# Image for both orchestration binaries.
#
#   docker build -t orchestration .
#   docker run orchestration                          # the API (default CMD)
#   docker run orchestration orchestration-worker     # a worker
#
# Stage 1 builds the release binaries with the toolchain the workspace targets (Rust 1.95,
# edition 2024). Nothing but Rust is needed: TLS is rustls, no OpenSSL, no system libraries.
FROM rust:1.95-bookworm AS builder

WORKDIR /src
# The whole workspace: every member's manifest must be present for `--locked` to resolve,
# and migrations/ is embedded into the binaries at compile time.
COPY . .
RUN cargo build --release --locked -p orchestration-api -p orchestration-worker \
 && mkdir -p /out \
 && cp target/release/orchestration-api target/release/orchestration-worker /out/ \
 && strip /out/orchestration-api /out/orchestration-worker

# Stage 2: a small runtime. python3 runs the shipped SCRIPT agents (agents/*), ca-certificates
# lets HTTP agents and the NATS/OTLP clients verify TLS peers.
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 orchestration \
 && useradd --system --uid 10001 --gid orchestration --home-dir /app --shell /usr/sbin/nologin orchestration

WORKDIR /app
COPY --from=builder /out/orchestration-api /out/orchestration-worker /usr/local/bin/
COPY --chown=root:root agents/ /app/agents/
RUN chmod -R a+rX /app/agents \
 && find /app/agents -type f ! -name '*.md' -exec chmod a+x {} + \
 && mkdir -p /app/tmp && chown orchestration:orchestration /app /app/tmp

ENV ORCH_AGENTS_DIR=/app/agents \
    ORCH_LISTEN=0.0.0.0:9002 \
    ORCH_METRICS_LISTEN=0.0.0.0:9464 \
    ORCH_LOG_FORMAT=json \
    RUST_LOG=info \
    TMPDIR=/app/tmp

USER orchestration:orchestration
# 9002: API and its /metrics; 9464: a worker's /metrics and /health.
EXPOSE 9002 9464

# tini reaps the agents' processes and forwards SIGTERM, so a worker's graceful shutdown runs.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["orchestration-api"]
