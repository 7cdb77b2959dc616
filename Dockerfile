# syntax=docker/dockerfile:1.7
# authgate container image: release build with the dependency list embedded (cargo auditable),
# then only the binary on distroless — no shell, no package manager, non-root 65532:65532.
#   docker build -t authgate:0.1.0 .
# The builder's Debian release matches the runtime's (glibc): bookworm <-> cc-debian12.
# For reproducible builds pin both images by digest (FROM image:tag@sha256:...).

ARG RUST_VERSION=1.95.0
ARG CARGO_AUDITABLE_VERSION=0.7.7

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG CARGO_AUDITABLE_VERSION
WORKDIR /src
# aws-lc-sys (authgate's one crypto stack: TLS, JWTs, the signing key) builds with the image's gcc; no cmake.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install --locked --version "${CARGO_AUDITABLE_VERSION}" cargo-auditable
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo auditable build --release --locked --bin authgate \
    && install -D -m 0555 target/release/authgate /out/authgate

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="authgate" \
      org.opencontainers.image.description="ext_authz authentication gateway for Envoy and Istio" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/authgate /usr/local/bin/authgate
# The same fixed UID/GID as the Kubernetes manifests (istio/base/deployment.yaml).
USER 65532:65532
# 9000: gRPC ext_authz; 8000: HTTP ext_authz (/authgate/check), /authgate/*, /healthz, /readyz.
EXPOSE 9000 8000
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["serve"]
