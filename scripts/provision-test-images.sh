#!/usr/bin/env bash
# Make the container tests (Postgres, Redis) possible on a Debian machine that cannot pull
# images (no Docker Hub): install Docker, start a daemon with host networking only, and build
# Postgres and Redis images from Debian packages. Idempotent; run as root. Elsewhere, skip this
# and let the tests pull the public images (postgres:16-alpine, redis:7-alpine).
#
#   sudo scripts/provision-test-images.sh
#   export TASKFLOW_LINK_TEST_POSTGRES_IMAGE=local/postgres:15 \
#     TASKFLOW_LINK_TEST_REDIS_IMAGE=local/redis:7 TASKFLOW_LINK_TEST_DOCKER_HOST_NETWORK=1
set -euo pipefail
PG_IMAGE="${TASKFLOW_LINK_TEST_POSTGRES_IMAGE:-local/postgres:15}"
REDIS_IMAGE="${TASKFLOW_LINK_TEST_REDIS_IMAGE:-local/redis:7}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[provision] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "provision-test-images.sh must run as root (it installs packages and starts dockerd)" >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  log "installing docker.io and debootstrap"
  apt-get update -qq
  apt-get install -y -qq docker.io debootstrap >/dev/null
fi

# A machine restored from a snapshot can keep the pid files of a daemon that no longer runs.
# dockerd then takes whatever process now has that pid for its containerd and gives up after
# waiting for a socket nobody serves ("timeout waiting for containerd to start").
# With "all", the files go whatever runs under their pid (a containerd not docker's own).
clear_stale_pid_files() {
  pgrep -x dockerd >/dev/null 2>&1 && return 0
  local pidfile pid
  for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [ "${1:-}" = all ] || [ -z "$pid" ] || ! grep -qsx -e containerd -e dockerd "/proc/$pid/comm"; then
      log "removing stale $pidfile"
      rm -f "$pidfile"
    fi
  done
}

start_dockerd() {
  clear_stale_pid_files "${1:-}"
  log "starting dockerd (no bridge, no iptables: containers use host networking)"
  nohup dockerd --bridge=none --iptables=false >"$DOCKERD_LOG" 2>&1 &
  local daemon=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$daemon" 2>/dev/null || return 1
    sleep 0.5
  done
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  return 1
}

DOCKERD_LOG=/var/log/taskflow-link-dockerd.log
if ! docker info >/dev/null 2>&1; then
  if ! start_dockerd; then
    log "dockerd did not start; its log ends with:"
    tail -n 5 "$DOCKERD_LOG" >&2 || true
    log "trying once more"
    start_dockerd all || {
      echo "dockerd did not start; see $DOCKERD_LOG" >&2
      tail -n 20 "$DOCKERD_LOG" >&2 || true
      exit 1
    }
  fi
fi

PACKAGES=()
docker image inspect "$PG_IMAGE" >/dev/null 2>&1 && log "image $PG_IMAGE already present" \
  || PACKAGES+=(postgresql-15)
docker image inspect "$REDIS_IMAGE" >/dev/null 2>&1 && log "image $REDIS_IMAGE already present" \
  || PACKAGES+=(redis-server)
[ "${#PACKAGES[@]}" -eq 0 ] && exit 0

MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
MIRROR="${MIRROR:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}"
if [ -z "$MIRROR" ]; then
  echo "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2
  exit 1
fi
ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
INCLUDE="$(IFS=,; echo "${PACKAGES[*]}")"
log "building ${PACKAGES[*]} image(s) from Debian packages (debootstrap from $MIRROR, about a minute)"
debootstrap --variant=minbase --include="$INCLUDE" bookworm "$ROOTFS" "$MIRROR" >/dev/null
rm -rf "$ROOTFS/var/cache/apt/archives"/*.deb
for package in "${PACKAGES[@]}"; do
  case "$package" in
    postgresql-15)
      install -m 0755 "$HERE/postgres-image-entrypoint.sh" "$ROOTFS/usr/local/bin/postgres-entrypoint"
      rm -rf "$ROOTFS/var/lib/postgresql/15"
      tar -C "$ROOTFS" -c . | docker import -c 'CMD ["/usr/local/bin/postgres-entrypoint"]' - "$PG_IMAGE" >/dev/null
      log "built $PG_IMAGE"
      ;;
    redis-server)
      # Like the public image: the command is redis-server's own (tests pass --port).
      tar -C "$ROOTFS" -c . | docker import \
        -c 'CMD ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]' \
        - "$REDIS_IMAGE" >/dev/null
      log "built $REDIS_IMAGE"
      ;;
  esac
done
