# celeriac-worker image: a static-ish Rust binary on a small Debian base.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p celeriac-worker -p celeriac-scaler

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/celeriac-worker /usr/local/bin/celeriac-worker
COPY --from=build /src/target/release/celeriac-scaler /usr/local/bin/celeriac-scaler
USER 65534:65534
EXPOSE 9808
ENTRYPOINT ["/usr/local/bin/celeriac-worker"]
