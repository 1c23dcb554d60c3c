# One image for every marketflow program: docker compose runs market, scraper, sink and streams
# from it, each with its own command. Build stage compiles the workspace (librdkafka included);
# the runtime stage is Debian slim with the binaries, run as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p marketflow-market -p marketflow-scraper -p marketflow-sink -p marketflow-streams -p marketflow-status \
 && mkdir -p /out \
 && cp target/release/market target/release/scraper target/release/sink target/release/streams \
       target/release/marketflow /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home marketflow
COPY --from=build /out/ /usr/local/bin/
USER marketflow
CMD ["marketflow", "status"]
