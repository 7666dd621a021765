# syntax=docker/dockerfile:1.7
# openchatd and openchat-rtc-joiner in a small glibc image (Debian slim), run as a non-root
# user. The build and runtime stages use the same Debian release (DEBIAN_SUITE): the
# binaries link glibc dynamically, so the runtime's glibc must be at least the builder's.
#
#   docker build --build-arg BUILD_VERSION=v0.1.0 --build-arg BUILD_COMMIT=$(git rev-parse HEAD) \
#     --build-arg BUILD_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t openchatd .
#   docker run --rm -p 8080:8080 -p 50000-50001:50000-50001/udp --security-opt seccomp=unconfined \
#     -e OPENCHAT_SHARDS=2 -e OPENCHAT_MEDIA_PUBLIC_IP=<host address> openchatd
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
# Build info: `openchatd --version`, the start-up log, and build_version / build_commit in the
# capabilities document (build.rs reads OPENCHAT_BUILD_*; there is no .git in the context).
ARG BUILD_VERSION=""
ARG BUILD_COMMIT=unknown
ARG BUILD_TIME=unknown
ENV OPENCHAT_BUILD_VERSION=${BUILD_VERSION} \
    OPENCHAT_BUILD_COMMIT=${BUILD_COMMIT} \
    OPENCHAT_BUILD_TIME=${BUILD_TIME}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin openchatd --bin openchat-rtc-joiner \
    && install -D -m 0755 target/release/openchatd /out/openchatd \
    && install -D -m 0755 target/release/openchat-rtc-joiner /out/openchat-rtc-joiner

FROM debian:${DEBIAN_SUITE}-slim
ARG BUILD_VERSION=""
ARG BUILD_COMMIT=unknown
ARG BUILD_TIME=unknown
LABEL org.opencontainers.image.title="openchatd" \
      org.opencontainers.image.description="OpenChat backend: chat API, realtime gateway and WebRTC SFU" \
      org.opencontainers.image.version="${BUILD_VERSION}" \
      org.opencontainers.image.revision="${BUILD_COMMIT}" \
      org.opencontainers.image.created="${BUILD_TIME}" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"
# ca-certificates: TLS to Postgres and TURN hosts; curl: the HEALTHCHECK. Debian's point
# releases move package versions, so they are not pinned (the suite is).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 openchat \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/openchat --shell /usr/sbin/nologin openchat \
    && install -d -o openchat -g openchat -m 0750 /var/lib/openchat
COPY --from=build /out/ /usr/local/bin/
ENV OPENCHAT_HTTP_ADDR=:8080 \
    OPENCHAT_PUBLIC_BASE_URL=http://localhost:8080 \
    OPENCHAT_SIGNALING_PATH=/v1/rtc/signaling \
    OPENCHAT_JOIN_TICKET_TTL_SECONDS=60 \
    OPENCHAT_ENV=development \
    OPENCHAT_DATA_DIR=/var/lib/openchat \
    OPENCHAT_MEDIA_PORT_BASE=50000
USER 10001:10001
WORKDIR /var/lib/openchat
VOLUME ["/var/lib/openchat"]
# HTTP/WebSocket; UDP media: shard k uses OPENCHAT_MEDIA_PORT_BASE + k.
EXPOSE 8080 50000-50063/udp
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/openchatd"]
