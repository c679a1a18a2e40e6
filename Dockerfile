# leadrelay in a container: build with the Rust toolchain, run on Debian slim.
#   docker build -t leadrelay .
#   docker run -p 8080:8080 -v leadrelay:/var/lib/leadrelay --env-file secrets.env leadrelay
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p leadrelay

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/leadrelay leadrelay
COPY --from=build /src/target/release/leadrelay /usr/local/bin/leadrelay
USER leadrelay
# The embedded configuration keeps ./leadrelay.db and ./leadrelay-backup here.
WORKDIR /var/lib/leadrelay
VOLUME ["/var/lib/leadrelay"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/leadrelay"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
