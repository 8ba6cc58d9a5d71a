#!/usr/bin/env bash
# Build the local Molecule base image localhost/nodemaint-debian12-systemd:latest
# (Debian 12 minbase + systemd as PID 1 + python3), without any container registry.
#
#   molecule/resources/build-image.sh            # build/import only if missing
#   FORCE=1 molecule/resources/build-image.sh    # rebuild rootfs tarball and re-import
#
# Also writes the podman configuration Molecule needs on these machines
# (runc, explicit ulimits; see containers-conf.sh) and prints nothing else on success
# but progress lines.
#
# Cache (outside the repository, survives fresh clones and wiped podman stores):
#   $NODEMAINT_CACHE_DIR (default /var/cache/nodemaint-image-gc)/
#     rootfs/debian12-systemd.tar   debootstrap result, apt caches removed (~190 MB)
#     containers.conf              generated podman config (export CONTAINERS_CONF to it)
# Needs root, debootstrap and podman.
set -euo pipefail

IMAGE="${NODEMAINT_IMAGE:-localhost/nodemaint-debian12-systemd:latest}"
CACHE_DIR="${NODEMAINT_CACHE_DIR:-/var/cache/nodemaint-image-gc}"
ROOTFS_TAR="$CACHE_DIR/rootfs/debian12-systemd.tar"
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,python3,dbus,iproute2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[build-image] %s\n' "$*" >&2; }

# shellcheck source=scripts/lib/debian-mirror.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/debian-mirror.sh"

"$HERE/containers-conf.sh" >/dev/null

if [[ "${FORCE:-0}" != 1 ]] && podman image exists "$IMAGE"; then
  log "$IMAGE already present"
  exit 0
fi

if [[ "${FORCE:-0}" == 1 || ! -s "$ROOTFS_TAR" ]]; then
  command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }
  mirror="$(debian_mirror)"
  mkdir -p "$CACHE_DIR/rootfs"
  work="$(mktemp -d "$CACHE_DIR/rootfs/build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  log "debootstrap --variant=minbase $SUITE from $mirror (about 2-3 min)"
  start=$SECONDS
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$work/root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
  # Slim it down: apt caches and lists are useless in a test container.
  rm -rf "$work/root/var/cache/apt/"*.bin "$work/root/var/cache/apt/archives/"*.deb \
         "$work/root/var/lib/apt/lists/"* "$work/root/var/log/"*.log
  # No container-irrelevant units fighting the sandbox.
  for unit in systemd-remount-fs.service getty.target console-getty.service systemd-firstboot.service; do
    ln -sf /dev/null "$work/root/etc/systemd/system/$unit"
  done
  : >"$work/root/etc/machine-id"
  tar --numeric-owner -C "$work/root" -cf "$ROOTFS_TAR.tmp" .
  mv -f "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  log "rootfs cached at $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1), $((SECONDS - start))s)"
fi

log "importing $ROOTFS_TAR as $IMAGE"
podman import --change 'CMD ["/sbin/init"]' "$ROOTFS_TAR" "$IMAGE" >/dev/null
log "done: $IMAGE"
