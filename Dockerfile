# Build and run intake. Used by docker-compose.yml.
FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin intake

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/intake /usr/local/bin/intake
USER 65534
ENTRYPOINT ["intake"]
