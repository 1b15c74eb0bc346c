# syntax=docker/dockerfile:1
# tollgate: a small non-root image holding one static-ish binary on distroless/cc.
#   docker build -t tollgate .
#   docker run -p 8080:8080 -v tollgate-data:/var/lib/tollgate \
#     -e OPENAI_API_KEY=sk-… -e TOLLGATE_ADMIN_KEY=… tollgate
# Builder and runtime are both Debian 12 (bookworm), so the binary links against the
# glibc it runs on.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
# jemalloc (the binary's allocator) is built from C source with make.
RUN apt-get update && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: the manifest, the sources, and the files the binary embeds
# (migrations, the price catalog). benches/ too, because Cargo.toml names targets there
# and Cargo refuses a manifest whose target files are missing.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY prices ./prices
COPY benches ./benches
# Cache mounts keep the registry and target/ between builds without putting them in a
# layer; the binary is copied out because the target/ mount is gone after this step.
# /out/var/lib/tollgate is made here so the volume starts out owned by the runtime
# user: distroless has no shell to make or chown it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tollgate \
    && install -D -m 0755 target/release/tollgate /out/tollgate \
    && install -d -m 0750 /out/var/lib/tollgate

# distroless/cc: glibc, libgcc, CA certificates (upstream TLS verifies against the
# system store) and a nonroot user, with no shell or package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/tollgate /usr/local/bin/tollgate
# Copied as an entry of /var/lib/ (not as the destination itself), so --chown covers
# the directory and not only what is in it.
COPY --from=builder --chown=65532:65532 /out/var/lib/ /var/lib/
# The working directory is the volume, so the defaults `sqlite://tollgate.db` and
# `ledger.spill_dir = "tollgate-spill"` land on it: the ledger and the spilled rows
# survive a container restart.
WORKDIR /var/lib/tollgate
VOLUME ["/var/lib/tollgate"]
# Inside a container the loopback default would be unreachable; this env var wins over
# a config file's server.listen (override it with -e to change the port).
ENV TOLLGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER 65532:65532
# No HEALTHCHECK: the image has no shell or HTTP client to run one, and tollgate has no
# self-probe command. Kubernetes ignores HEALTHCHECK and probes /healthz and /readyz
# over HTTP itself (deploy/helm); elsewhere point the orchestrator's HTTP check there.
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
