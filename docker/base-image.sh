#!/usr/bin/env bash
# A Debian bookworm base image made without any registry: debootstrap from this machine's own apt mirror, with
# its apt sources and extra CA certificates (pip and apt inside builds then work as on the host), imported into
# podman. Idempotent: an existing image is kept. Usage: docker/base-image.sh [IMAGE]   (as root)
set -euo pipefail
image=${1:-localhost/datalake-base:bookworm}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}
if podman image exists "$image"; then
    echo "base image $image: present"
    exit 0
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d /var/tmp/datalake-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base image $image: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
    || { tail -5 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# the host's apt sources (debootstrap writes only "bookworm main") and its extra CAs (a proxy's, a site's)
rm -f "$rootfs/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/. "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
find "$rootfs/etc/apt/sources.list.d" -name '*.disabled*' -delete
cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$rootfs" update-ca-certificates > /dev/null
tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$image" > /dev/null
echo "base image $image: made"
