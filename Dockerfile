# leadrelay in a container: build with the Rust toolchain, run on Debian slim.
#   docker build -t leadrelay .
#   docker run -p 8080:8080 -v leadrelay:/var/lib/leadrelay --env-file leadrelay.env \
#     --stop-timeout 30 leadrelay
# or `docker compose up -d` with compose.yaml (leadrelay + PostgreSQL).
#
# Stopping: SIGTERM makes leadrelay stop accepting, finish requests and let
# deliveries in flight finish within server.shutdown_grace (15s by default).
# Docker's own wait before SIGKILL is 10s: give it more than shutdown_grace
# (`docker stop -t 30`, `docker run --stop-timeout 30`, compose
# `stop_grace_period: 30s`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p leadrelay

FROM debian:bookworm-slim
# A fixed UID/GID, so volume ownership stays right across rebuilds and
# hosts (chown -R 10001:10001 for a bind mount).
ARG UID=10001
ARG GID=10001
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid "${GID}" leadrelay \
    && useradd --system --uid "${UID}" --gid "${GID}" --no-log-init \
       --home-dir /var/lib/leadrelay --create-home --shell /usr/sbin/nologin leadrelay \
    && chmod 700 /var/lib/leadrelay
COPY --from=build /src/target/release/leadrelay /usr/local/bin/leadrelay
USER 10001:10001
# The embedded configuration keeps ./leadrelay.db and ./leadrelay-backup here.
WORKDIR /var/lib/leadrelay
VOLUME ["/var/lib/leadrelay"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# No curl in the image: leadrelay asks its own /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/leadrelay", "healthcheck", "--url", "http://127.0.0.1:8080", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/leadrelay"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
