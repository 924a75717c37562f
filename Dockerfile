# Tollgate's container image.
#
#   docker build -t tollgate .                           production: no embedded emulator; set
#                                                        STRIPE_SECRET_KEY, KV_URL (Redis), …
#   docker build -t tollgate:offline --target offline .  the demo: `cargo run`'s offline app;
#                                                        docker run -p 3000:3000 -p 12111:12111
#                                                        (12111: the embedded emulator's Checkout)
#
# The runtime is distroless (glibc, CA certificates and a non-root user, no shell or package
# manager): the binary is the whole image beside them. It listens on 0.0.0.0:3000 and keeps its
# embedded store (when KV_URL is unset) in /home/nonroot/data. HEALTHCHECK runs `tollgate
# healthcheck`, which asks the server's /healthz (there is no curl in the image).
#
# `--build-arg BINARY=prebuilt` takes target/release/tollgate from the build context instead of
# compiling it (the image test in tests/python/test_container_image.py does: it has no registry
# to pull the Rust image from).

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY=built

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features -p tollgate --bin tollgate && cp target/release/tollgate /tollgate

FROM ${RUST_IMAGE} AS build-offline
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tollgate --bin tollgate && cp target/release/tollgate /tollgate

FROM scratch AS built
COPY --from=build /tollgate /tollgate

FROM scratch AS prebuilt
COPY target/release/tollgate /tollgate

FROM ${BINARY} AS binary

# What both images share: the user, the address, where data goes, the health check.
FROM ${RUNTIME_IMAGE} AS base
WORKDIR /home/nonroot
ENV BIND=0.0.0.0 PORT=3000 DATA_DIR=/home/nonroot/data
USER nonroot
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/tollgate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]

FROM base AS offline
EXPOSE 12111
COPY --from=build-offline /tollgate /usr/local/bin/tollgate

FROM base AS runtime
COPY --from=binary /tollgate /usr/local/bin/tollgate
