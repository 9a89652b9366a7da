# syntax=docker/dockerfile:1
# `ibauth gateway` in a small image: the binary alone on distroless (glibc, CA certificates,
# no shell), as a non-root user, its state in a volume. Build from the repository root:
#   docker build -t ibauth-gateway .
#   docker run -p 5000:5000 -p 5001:5001 -v ibauth-state:/var/lib/ibauth \
#     -e IBAUTH_CLIENT_ID=… -e IBAUTH_CLIENT_KEY_ID=… -e IBAUTH_CREDENTIAL=… \
#     -e IBAUTH_PRIVATE_KEY_FILE=/run/ibauth/private_key.pem -v "$PWD/secrets:/run/ibauth:ro" \
#     ibauth-gateway
# Arguments after the image name go to `ibauth gateway` (`--conf /path/conf.yaml`, `--oauth1a`,
# `--plain`, …). deploy/compose.yaml shows it in place of an IBeam service.

# The workspace's rust-version is 1.89; any newer stable builds it.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The CLI's tests and scripts are not needed to build it; the lock file pins every crate.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY crates crates
# No incremental artefacts in a one-shot build; AWS-LC seeds from the OS only (see
# .cargo/config.toml, which `cargo build` here reads too).
ENV CARGO_INCREMENTAL=0
# The binary, and the state folder (0700; owned by the runtime user below).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ibauth-cli \
    && install -D -m 0755 target/release/ibauth /out/usr/local/bin/ibauth \
    && install -d -m 0700 /out/var/lib/ibauth

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/ibauth /usr/local/bin/ibauth
# Owned by distroless's nonroot user (65532) and private: a new named volume starts as a copy
# of it, owner and mode included, and the token store refuses a folder others can write.
COPY --from=build --chown=65532:65532 /out/var/lib/ibauth /var/lib/ibauth
USER 65532:65532
# A config file, if any, is found through IBAUTH_CONFIG (or ./config.yaml in this folder).
WORKDIR /var/lib/ibauth
VOLUME ["/var/lib/ibauth"]
# The Web API (as the Client Portal Gateway's) and the health server (as IBeam's).
EXPOSE 5000 5001
# SIGTERM (docker stop) drains in-flight requests and logs out once; give it the time to.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ibauth", "gateway", "--state-dir", "/var/lib/ibauth"]
