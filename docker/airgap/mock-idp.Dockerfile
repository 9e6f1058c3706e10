# Air-gapped equivalent of tests/mock-idp/Dockerfile: the mock IdP and echo upstream from
# `cargo build --release` on the Debian minbase that `make images` builds (same glibc as the
# build host, Debian bookworm). tini as PID 1 forwards SIGTERM, as in the official image.
ARG BASE
FROM ${BASE}
COPY mock-idp echo-upstream /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["mock-idp", "--listen", "0.0.0.0:8080", "--public-url", "http://mock-idp:8080"]
