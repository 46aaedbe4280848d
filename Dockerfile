# Build and run intake. Used by docker-compose.yml.
# The toolchain matches the one Cargo.lock was resolved with (dependencies need Rust >= 1.89).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin intake

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/intake /usr/local/bin/intake
# Attachment store (INTAKE_ATTACHMENT_DIR); owned by the unprivileged user so a volume mounted
# here is writable.
RUN mkdir -p /var/lib/intake/attachments && chown -R 65534:65534 /var/lib/intake
USER 65534
ENTRYPOINT ["intake"]
