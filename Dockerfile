# syntax=docker/dockerfile:1
# unigate's container image: built with the Rust toolchain, run from a
# distroless base (glibc, CA certificates, no shell) as a non-root user.
#   docker build -t unigate:local .
#   docker run --rm -p 8080:8080 -v $PWD/unigate.toml:/etc/unigate/unigate.toml:ro unigate:local

FROM rust:1.95-bookworm AS build
# Pingora's zlib-ng needs cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No debug info in the image (function names stay, for backtraces).
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin unigate \
 && cp target/release/unigate /unigate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /unigate /usr/local/bin/unigate
# 65532: distroless's `nonroot`.
USER 65532:65532
# The proxy; the admin API and /metrics (see [admin] address).
EXPOSE 8080 9090
# No shell or curl in the image: unigate checks itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/unigate", "healthcheck", "--url", "http://127.0.0.1:8080/_unigate/healthz"]
ENTRYPOINT ["/usr/local/bin/unigate"]
CMD ["run", "--config", "/etc/unigate/unigate.toml"]
