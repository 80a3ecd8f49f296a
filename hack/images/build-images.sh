#!/usr/bin/env bash
# Builds the small OCI images nodes and tests need -- pause, busybox and nginx -- from Debian
# packages, without Docker, and writes one importable oci-archive per image:
#
#   _output/images/oci/          OCI image layout, tags: pause, busybox, nginx
#   _output/images/<name>.tar    oci-archive carrying the full references (see README.md), for
#                                `ctr -n k8s.io images import` or `skopeo copy oci-archive:...`
#
# Reproducible: every file, layer and config carries SOURCE_DATE_EPOCH, so a rebuild from the
# same packages gives the same image digests (and byte-identical archives). Safe to run twice:
# it does nothing while the archives are newer than its inputs (FORCE=1 rebuilds anyway).
# Runs as root (chroot for the nginx config check). Needs what hack/install-deps.sh installs:
# gcc + libc6-dev, busybox-static, umoci, skopeo; apt-get download fetches the nginx packages.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$ROOT/_output/images}
EPOCH=${SOURCE_DATE_EPOCH:-1700000000}   # 2023-11-14T22:13:20Z
export SOURCE_DATE_EPOCH=$EPOCH
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
ARCH=amd64

# image name -> full references written into its archive (keep in sync with README.md)
declare -A REFS=(
  [pause]="registry.k8s.io/pause:3.10 registry.k8s.io/pause:3.9 registry.k8s.io/pause:3.6"
  [busybox]="docker.io/library/busybox:latest docker.io/library/busybox:1.36 docker.io/library/busybox:1.35 docker.io/library/busybox:1.28"
  [nginx]="docker.io/library/nginx:latest docker.io/library/nginx:1.25 docker.io/library/nginx:1.22 docker.io/library/nginx:1.14.2"
)
IMAGES=(pause busybox nginx)
INPUTS=("$HERE/build-images.sh" "$HERE/pause.c" /bin/busybox)

# Tests in parallel processes all ask for the images: one builds, the others wait for it and
# then find the archives up to date (two builds in one work dir break each other).
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

# ---- up to date? ----
# The archives must be newer than every input, and the inputs' contents (this script, pause.c,
# the busybox binary, the cached nginx packages) must be the ones the last build recorded: dpkg
# keeps a package's own mtimes, so an upgraded /bin/busybox can look older than the archives.
inputs_id() {
  { sha256sum "${INPUTS[@]}"; ls "$OUT/work/debs" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1
}
if [ "${FORCE:-0}" != 1 ]; then
  fresh=1
  [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$(inputs_id)" ] || fresh=0
  for n in "${IMAGES[@]}"; do
    a=$OUT/$n.tar
    if [ ! -s "$a" ]; then fresh=0; break; fi
    for i in "${INPUTS[@]}"; do [ "$i" -nt "$a" ] && fresh=0; done
  done
  if [ "$fresh" = 1 ]; then
    echo "build-images: $OUT/{${IMAGES[*]// /,}}.tar are up to date (FORCE=1 rebuilds)"
    exit 0
  fi
fi

for cmd in gcc strip umoci skopeo dpkg-deb ldd /bin/busybox; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "build-images: $cmd not found (run hack/install-deps.sh)" >&2; exit 1; }
done

W=$OUT/work
L=$OUT/oci
echo "build-images: building ${IMAGES[*]} into $L (SOURCE_DATE_EPOCH=$EPOCH)"
mkdir -p "$W/debs"
rm -rf "$L" "$W/pause" "$W/rootfs-bb" "$W/rootfs-ng" "$W/stage-ng" "$W"/archive-*
umoci init --layout "$L"

# Every file gets the same timestamp (symlinks themselves too), so layers are byte-stable.
stamp() { find "$1" -exec touch -h -d "@$EPOCH" {} +; }
insert() { # insert IMAGE SRC DEST
  umoci insert --image "$L:$1" --history.created "$CREATED" --history.created_by "hack/images/build-images.sh" "$2" "$3"
}
configure() { # configure IMAGE umoci-config-args...
  local img=$1; shift
  umoci config --image "$L:$img" --no-history --created "$CREATED" --os linux --architecture "$ARCH" "$@"
}

# ---- pause: one static binary that sleeps in pause() and reaps children ----
echo "build-images: pause (static gcc build of hack/images/pause.c)"
mkdir -p "$W/pause"
gcc -Os -static -o "$W/pause/pause" "$HERE/pause.c"
strip "$W/pause/pause"
stamp "$W/pause"
umoci new --image "$L:pause"
insert pause "$W/pause/pause" /pause
configure pause --config.entrypoint /pause --config.user 65535:65535

# ---- busybox: Debian's busybox-static plus one symlink per applet ----
mk_busybox_rootfs() {
  local r=$1
  mkdir -p "$r"/{bin,etc,tmp,root,proc,sys,dev,run,var/log}
  chmod 1777 "$r/tmp"
  chmod 700 "$r/root"
  cp /bin/busybox "$r/bin/busybox"
  chmod 755 "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' >"$r/etc/group"
}
echo "build-images: busybox ($(/bin/busybox | head -1 | cut -d' ' -f1-2))"
mk_busybox_rootfs "$W/rootfs-bb"
stamp "$W/rootfs-bb"
umoci new --image "$L:busybox"
insert busybox "$W/rootfs-bb" /
configure busybox --config.cmd sh --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# ---- nginx: Debian's nginx binary + the libraries ldd lists, on a busybox rootfs ----
(
  cd "$W/debs"
  if ! ls nginx_*.deb nginx-common_*.deb >/dev/null 2>&1; then
    echo "build-images: downloading the nginx and nginx-common packages"
    apt-get download nginx nginx-common 2>/dev/null || { apt-get update -qq && apt-get download nginx nginx-common; }
  fi
)
echo "build-images: nginx ($(cd "$W/debs" && ls nginx_*.deb))"
mkdir -p "$W/stage-ng"
for d in "$W"/debs/nginx_*.deb "$W"/debs/nginx-common_*.deb; do dpkg-deb -x "$d" "$W/stage-ng"; done
R=$W/rootfs-ng
mk_busybox_rootfs "$R"
mkdir -p "$R"/usr/sbin "$R"/etc/nginx "$R"/var/lib/nginx "$R"/var/log/nginx "$R"/usr/share/nginx/html
cp "$W/stage-ng/usr/sbin/nginx" "$R/usr/sbin/"
cp "$W/stage-ng/etc/nginx/mime.types" "$R/etc/nginx/"
if ldd "$W/stage-ng/usr/sbin/nginx" | grep -q 'not found'; then
  echo "build-images: nginx needs libraries this host lacks:" >&2
  ldd "$W/stage-ng/usr/sbin/nginx" | grep 'not found' >&2
  exit 1
fi
for lib in $(ldd "$W/stage-ng/usr/sbin/nginx" | grep -oE '/[^ ]+' | sort -u); do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
cat >"$R/etc/nginx/nginx.conf" <<'NGX'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr info;
events { worker_connections 256; }
http {
  include /etc/nginx/mime.types;
  access_log /dev/stdout;
  server {
    listen 80;
    root /usr/share/nginx/html;
    location / { index index.html; }
  }
}
NGX
echo 'hello from nginx' >"$R/usr/share/nginx/html/index.html"
chroot "$R" /usr/sbin/nginx -t -q
rm -f "$R/run/nginx.pid"
stamp "$R"
umoci new --image "$L:nginx"
insert nginx "$R" /
configure nginx --config.entrypoint /usr/sbin/nginx --config.cmd -g --config.cmd 'daemon off;' \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.exposedports 80/tcp --config.stopsignal SIGQUIT
umoci gc --layout "$L"

# ---- archives: one OCI layout per image with every full reference, tarred byte-stably ----
for n in "${IMAGES[@]}"; do
  s=$W/archive-$n
  for ref in ${REFS[$n]}; do
    skopeo copy -q "oci:$L:$n" "oci:$s:$ref"
  done
  stamp "$s"
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$s" -cf "$OUT/$n.tar.tmp" .
  mv "$OUT/$n.tar.tmp" "$OUT/$n.tar"
  rm -rf "$s"
  echo "build-images: $OUT/$n.tar  $(skopeo inspect --raw "oci:$L:$n" | sha256sum | cut -c1-12)  ${REFS[$n]}"
done
rm -rf "$W/pause" "$W/rootfs-bb" "$W/rootfs-ng" "$W/stage-ng"
umoci ls --layout "$L" | sed 's/^/build-images: oci tag /'
inputs_id >"$OUT/.inputs"
