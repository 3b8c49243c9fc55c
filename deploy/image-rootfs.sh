#!/usr/bin/env bash
# Assembles the file system of the erp-connect image: the stripped binary,
# exactly the shared libraries it loads (as ldd lists them) and the dynamic
# loader, the CA certificates (rustls-native-certs reads the system's store
# for JWKS URLs and webhook deliveries), a passwd entry for uid 10001 and an
# empty /data it owns. Nothing else: no shell, no package manager.
#
# deploy/Containerfile runs it in its build stage and copies ROOTFS into a
# `FROM scratch` image; run here, it shows what the image will hold:
#
#   deploy/image-rootfs.sh target/release/erp-connect /tmp/rootfs [/tmp/erp-connect.debug]
#   du -sb /tmp/rootfs
#
# The debug information (line tables, symbols) goes to DEBUG_FILE, kept out
# of the image; the stripped binary names it (.gnu_debuglink), so gdb or
# addr2line given both turn a crash's addresses into lines.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 BINARY ROOTFS [DEBUG_FILE]" >&2
  exit 64
fi
binary="$1"
rootfs="$2"
debug_file="${3:-$rootfs.erp-connect.debug}"
uid=10001

[[ -x "$binary" ]] || { echo "$0: $binary is not an executable" >&2; exit 66; }
if [[ -e "$rootfs" && -n "$(ls -A "$rootfs")" ]]; then
  echo "$0: $rootfs exists and is not empty" >&2
  exit 73
fi
for tool in objcopy ldd; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool (binutils, libc-bin)" >&2; exit 69; }
done
cacerts=/etc/ssl/certs/ca-certificates.crt
[[ -s "$cacerts" ]] || { echo "$0: needs $cacerts (Debian's ca-certificates)" >&2; exit 69; }

mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,data,tmp}

# Debug information split off, then the binary stripped of it and of its
# symbol table.
objcopy --only-keep-debug "$binary" "$debug_file"
objcopy --strip-all --add-gnu-debuglink="$debug_file" "$binary" "$rootfs/usr/local/bin/erp-connect"

# Every library the binary loads, at the path the loader looks for it, and
# the loader itself (the one absolute path in ldd's list).
ldd "$rootfs/usr/local/bin/erp-connect" | awk '
  $2 == "=>" && $3 ~ /^\// { print $3 }
  $1 ~ /^\// { print $1 }
' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
# A binary that needs a library ldd could not find must not pass.
if ldd "$rootfs/usr/local/bin/erp-connect" | grep -q 'not found'; then
  echo "$0: a shared library is missing:" >&2
  ldd "$rootfs/usr/local/bin/erp-connect" | grep 'not found' >&2
  exit 70
fi

cp "$cacerts" "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/nonexistent\nerp-connect:x:%d:%d:erp-connect:/data:/nonexistent\n' "$uid" "$uid" \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nerp-connect:x:%d:\n' "$uid" >"$rootfs/etc/group"
# glibc resolves names itself (nss files and dns are built in since 2.34):
# /etc/hosts first, then DNS; the runtime provides both files.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

# /data: the one place `up` and dev mode write (a volume in practice; a
# named volume takes this ownership when first made). /tmp for completeness,
# sticky as usual; nothing in erp-connect writes there.
chmod 0700 "$rootfs/data"
chmod 1777 "$rootfs/tmp"
if [[ $(id -u) -eq 0 ]]; then
  chown "$uid:$uid" "$rootfs/data"
else
  echo "$0: not root, so $rootfs/data stays owned by $(id -un); the image needs it owned by $uid" >&2
fi
