# syntax=docker/dockerfile:1
# Build: docker build -t onboarding .
# Run:   docker run -p 8080:8080 -v onboarding-data:/data -e JWT_SECRET=... onboarding

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/onboarding /usr/local/bin/onboarding

FROM debian:bookworm-slim
# curl answers the health check; nothing else is added to the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin onboarding \
    && mkdir /data \
    && chown onboarding:onboarding /data
COPY --from=build /usr/local/bin/onboarding /usr/local/bin/onboarding

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# Inside the container the service listens on all interfaces; publish the
# port to choose who reaches it. Point DATABASE_URL at Postgres to use it.
ENV DATABASE_URL=sqlite:///data/onboarding.db \
    LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["onboarding"]
CMD ["serve"]
