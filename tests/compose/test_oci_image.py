"""The plugin image that `make oci` builds (docker/plugin.Dockerfile), read the way Istio's
Wasm image fetcher reads a "compat" image: the manifest's last layer, a tar (gzip as pushed
to a registry), and in it the file named plugin.wasm. Its sha256 must be the build's.

  OCI_IMAGE    an OCI image layout directory (podman push oci:DIR) or an archive from
               `docker save` (OCI index.json or Docker's manifest.json inside)
  PLUGIN_WASM  the filter that `make build` wrote
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from conftest import env

pytestmark = pytest.mark.oci

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
COMPAT_LAYERS = {"application/vnd.oci.image.layer.v1.tar+gzip",
                 "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 # as saved locally, before a registry push compresses them
                 "application/vnd.oci.image.layer.v1.tar",
                 "application/vnd.docker.image.rootfs.diff.tar"}


class Image:
    """Blobs by path, from a layout directory or a saved archive."""

    def __init__(self, path: Path):
        self.files: dict[str, bytes] = {}
        if path.is_dir():
            for f in path.rglob("*"):
                if f.is_file():
                    self.files[f.relative_to(path).as_posix()] = f.read_bytes()
        else:
            with tarfile.open(path) as t:
                for m in t.getmembers():
                    if m.isfile():
                        self.files[m.name.removeprefix("./")] = t.extractfile(m).read()

    def blob(self, digest: str) -> bytes:
        algo, _, hexdigest = digest.partition(":")
        data = self.files[f"blobs/{algo}/{hexdigest}"]
        assert hashlib.new(algo, data).hexdigest() == hexdigest, f"blob {digest} is corrupt"
        return data

    def manifest_and_layers(self) -> tuple[dict, list[tuple[str, bytes]]]:
        """The image manifest and its layers (media type, bytes), in order."""
        if "index.json" in self.files:
            index = json.loads(self.files["index.json"])
            assert len(index["manifests"]) == 1, index
            desc = index["manifests"][0]
            manifest = json.loads(self.blob(desc["digest"]))
            return manifest, [(l["mediaType"], self.blob(l["digest"])) for l in manifest["layers"]]
        # Docker's older `docker save`: manifest.json naming layer tars by path.
        manifest = json.loads(self.files["manifest.json"])
        assert len(manifest) == 1, manifest
        return manifest[0], [("application/vnd.docker.image.rootfs.diff.tar", self.files[p])
                             for p in manifest[0]["Layers"]]


def plugin_wasm(layer: bytes) -> bytes:
    """Istio's extraction: the first entry whose base name is plugin.wasm."""
    if layer[:2] == b"\x1f\x8b":
        layer = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        for m in t.getmembers():
            if Path(m.name).name == "plugin.wasm":
                assert m.isfile(), f"{m.name} is not a regular file"
                return t.extractfile(m).read()
    pytest.fail("no plugin.wasm in the image's last layer")


@pytest.fixture(scope="module")
def image() -> Image:
    return Image(Path(env("OCI_IMAGE")))


def test_one_layer_holding_only_plugin_wasm(image):
    manifest, layers = image.manifest_and_layers()
    assert len(layers) == 1, f"{len(layers)} layers: Envoy Gateway and the compat spec want one"
    media_type, layer = layers[0]
    assert media_type in COMPAT_LAYERS, media_type
    if layer[:2] == b"\x1f\x8b":
        layer = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        names = [m.name.removeprefix("./") for m in t.getmembers() if not m.isdir()]
    assert names == ["plugin.wasm"], names


def test_plugin_wasm_is_the_build_byte_for_byte(image):
    _, layers = image.manifest_and_layers()
    wasm = plugin_wasm(layers[-1][1])
    built = Path(env("PLUGIN_WASM")).read_bytes()
    assert wasm[:4] == b"\0asm", "not a Wasm module"  # what Istio checks before loading
    assert hashlib.sha256(wasm).hexdigest() == hashlib.sha256(built).hexdigest()


def test_compat_annotation_when_the_builder_can_set_it(image):
    # The compat spec's manifest annotation for images with OCI media types. Istio's fetcher
    # does not read it, and `docker build` cannot set it, so make oci asks for it (through
    # OCI_COMPAT_ANNOTATION=1) only when podman built the image.
    if os.environ.get("OCI_COMPAT_ANNOTATION") != "1":
        pytest.skip("built by an engine that cannot annotate manifests (Docker)")
    manifest, layers = image.manifest_and_layers()
    assert manifest.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST, manifest
    assert manifest.get("annotations", {}).get("module.wasm.image/variant") == "compat", manifest
    # As pushed: gzip-compressed OCI layers.
    assert [mt for mt, _ in layers] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
