# The longhaul binary for every role (api, worker, scheduler, migrate).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin longhaul

FROM debian:bookworm-slim
# git: leakage scans read repositories' whole history with it.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 longhaul
COPY --from=build /src/target/release/longhaul /usr/local/bin/longhaul
USER longhaul
ENTRYPOINT ["longhaul"]
