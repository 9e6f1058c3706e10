# The filter as a Wasm OCI image, in the "compat" layout of the Wasm image specification
# that Istio's WasmPlugin and Envoy Gateway pull: FROM scratch, one layer, plugin.wasm in it
# (Istio reads the last layer and takes the file named plugin.wasm). Built by `make oci`
# from target/oci/context/; podman adds the manifest annotation module.wasm.image/variant=compat.
FROM scratch
LABEL org.opencontainers.image.title="okta-jwt-filter" \
      org.opencontainers.image.description="Okta JWT proxy-wasm filter for Envoy (plugin.wasm)" \
      module.wasm.image/variant="compat"
COPY plugin.wasm ./
