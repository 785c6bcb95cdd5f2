#!/usr/bin/env bash
# make install and make uninstall, into temporary prefixes, from the build
# that make test just made (KV_BUILD, default build; nothing is rebuilt):
#   - every file lands where DESIGN.md §9 says, libkvclient.so is a symlink to
#     libkvclient.so.1, and kvclient.pc names the prefix installed to;
#   - a small client program builds against the installed header and library
#     with `pkg-config kvclient` alone, and puts then gets a key on the
#     installed kvd;
#   - each man page renders without a warning (man -l, else groff), and they
#     document every kvd setting, kvctl command and kvc_ function there is;
#   - DESTDIR stages the same tree under another root, prefix unchanged;
#   - make uninstall leaves no file behind.
# Runs from anywhere; kvd listens on 127.0.0.1 port 0 only.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${KV_BUILD:-build}
tmp=$(mktemp -d /tmp/kv-install-XXXXXX)
kvd_pid=
checks=0

cleanup() {
  if [ -n "$kvd_pid" ]; then
    kill -KILL "$kvd_pid" 2>/dev/null || true
    wait "$kvd_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "install_test: FAIL: $*" >&2
  exit 1
}
ok() {
  checks=$((checks + 1))
  echo "install_test: ok: $*"
}

# A make run as its own: the caller's jobserver is not ours to use (make
# closes it for non-make commands), but its variables (BUILD, CC, ...) are
# kept so that the install comes from this very build.
mkflags=$(printf '%s' "${MAKEFLAGS:-}" | sed -E 's/--jobserver-(auth|fds)=[^ ]*//g')
run_make() {
  local log=$1
  shift
  if ! env -u MAKELEVEL -u MFLAGS MAKEFLAGS="$mkflags" \
      make -C "$root" --no-print-directory BUILD="$build" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "make $* failed"
  fi
}

files="bin/kvd bin/kvctl bin/kvbench include/kvclient.h lib/libkvclient.a
       lib/libkvclient.so.1 lib/libkvclient.so lib/pkgconfig/kvclient.pc
       share/man/man8/kvd.8 share/man/man1/kvctl.1 share/man/man3/kvclient.3"

# ---- make install PREFIX=... ----
# The build's flags stamp changes only if make install compiled with other
# flags than the tested build (a lost BUILD, SANITIZE or OPT), which would
# rebuild all of it: that must not happen. A source edited since the build
# is merely recompiled.
case $build in
  /*) stamp=$build/.cflags ;;
  *) stamp=$root/$build/.cflags ;;
esac
[ -f "$stamp" ] || fail "no build in $build: run make BUILD=$build first"
flags=$(cat "$stamp")
prefix=$tmp/prefix
run_make "$tmp/install.log" install PREFIX="$prefix"
if [ "$(cat "$stamp")" != "$flags" ]; then
  cat "$tmp/install.log" >&2
  fail "make install rebuilt $build with other flags than the tested build"
fi
for f in $files; do
  [ -e "$prefix/$f" ] || fail "make install did not install $f"
done
for f in bin/kvd bin/kvctl bin/kvbench; do
  [ -x "$prefix/$f" ] || fail "$f is not executable"
done
[ "$(readlink "$prefix/lib/libkvclient.so")" = libkvclient.so.1 ] ||
  fail "lib/libkvclient.so is not a symlink to libkvclient.so.1"
cmp -s "$prefix/include/kvclient.h" "$root/client/kvclient.h" ||
  fail "the installed kvclient.h differs from client/kvclient.h"
# (Output is captured before matching: with pipefail, `cmd | grep -q` fails
# when grep exits early and cmd gets SIGPIPE.)
version=$("$prefix/bin/kvd" --version)
[[ $version == "kvd "* ]] || fail "installed kvd --version: $version"
ok "make install PREFIX=$prefix installed $(echo $files | wc -w) files"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --variable=prefix kvclient)" = "$prefix" ] ||
  fail "kvclient.pc says prefix=$(pkg-config --variable=prefix kvclient), want $prefix"
pc_cflags=$(pkg-config --cflags kvclient)
[[ $pc_cflags == *"-I$prefix/include"* ]] ||
  fail "pkg-config --cflags kvclient: $pc_cflags"
pc_libs=$(pkg-config --libs kvclient)
[[ $pc_libs == *"-L$prefix/lib"* ]] || fail "pkg-config --libs kvclient: $pc_libs"
ok "kvclient.pc names the prefix installed to"

# ---- a client built against the installed library ----
cat >"$tmp/client.c" <<'EOF'
#include <kvclient.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  kvc_conn *c;
  kvc_result *r;
  const uint8_t *v;
  size_t n;
  if (kvc_connect("127.0.0.1", atoi(argv[1]), NULL, &c) != KVC_OK) {
    fprintf(stderr, "connect: %s\n", kvc_errmsg(c));
    kvc_close(c);
    return 1;
  }
  const char *val = argv[2];
  int rc = kvc_put(c, "installed", 9, val, strlen(val), NULL, 0);
  if (rc == KVC_OK) rc = kvc_get(c, "installed", 9, &r);
  if (rc != KVC_OK) {
    fprintf(stderr, "put/get: %s\n", kvc_errmsg(c));
    kvc_close(c);
    return 1;
  }
  if (kvc_result_siblings(r) != 1 || kvc_result_sibling(r, 0, &v, &n) != KVC_OK)
    return 1;
  printf("%.*s\n", (int)n, (const char *)v);
  kvc_result_free(r);
  kvc_close(c);
  return 0;
}
EOF
# pkg-config alone: no -I or -L into the source or build tree.
# shellcheck disable=SC2046
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$tmp/client" "$tmp/client.c" \
  $(pkg-config --cflags --libs kvclient) -Wl,-rpath,"$prefix/lib" ||
  fail "the client program does not build against the installed library"
libs=$(ldd "$tmp/client")
[[ $libs == *"$prefix/lib/libkvclient.so.1"* ]] ||
  fail "the client is not linked to the installed libkvclient.so.1: $libs"
ok "a client program builds with pkg-config kvclient"

"$prefix/bin/kvd" --data-dir "$tmp/data" --listen 127.0.0.1:0 \
  --resp-listen 127.0.0.1:0 --peer-listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 \
  --ports-file "$tmp/ports" --segments 256 2>"$tmp/kvd.log" &
kvd_pid=$!
for _ in $(seq 1 1000); do
  [ -s "$tmp/ports" ] && grep -q '^peer=' "$tmp/ports" && break
  kill -0 "$kvd_pid" 2>/dev/null || { cat "$tmp/kvd.log" >&2; fail "installed kvd exited"; }
  sleep 0.01
done
port=$(sed -n 's/^native=//p' "$tmp/ports")
[ -n "$port" ] || { cat "$tmp/kvd.log" >&2; fail "installed kvd did not start"; }
got=$("$tmp/client" "$port" "from-installed-lib") || fail "the client failed against kvd"
[ "$got" = from-installed-lib ] || fail "the client read '$got'"
got=$("$prefix/bin/kvctl" -h "127.0.0.1:$port" get installed) ||
  fail "installed kvctl get failed"
[ "$got" = from-installed-lib ] || fail "installed kvctl read '$got'"
kill -TERM "$kvd_pid"
wait "$kvd_pid" || fail "installed kvd did not exit 0 on SIGTERM"
kvd_pid=
ok "the client and kvctl put and get through the installed kvd"

# ---- man pages ----
pages="$prefix/share/man/man8/kvd.8 $prefix/share/man/man1/kvctl.1
       $prefix/share/man/man3/kvclient.3"
rendered=0
for p in $pages; do
  if command -v man >/dev/null 2>&1; then
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$p" >"$tmp/page.txt" 2>"$tmp/man.err" ||
      fail "man -l $(basename "$p") failed: $(cat "$tmp/man.err")"
    [ ! -s "$tmp/man.err" ] || fail "man -l $(basename "$p") warns: $(cat "$tmp/man.err")"
    grep -q NAME "$tmp/page.txt" || fail "man -l $(basename "$p") rendered nothing"
    rendered=$((rendered + 1))
  fi
  if command -v groff >/dev/null 2>&1; then
    groff -man -ww -z "$p" 2>"$tmp/groff.err" ||
      fail "groff $(basename "$p") failed: $(cat "$tmp/groff.err")"
    [ ! -s "$tmp/groff.err" ] || fail "groff $(basename "$p") warns: $(cat "$tmp/groff.err")"
    rendered=$((rendered + 1))
  fi
done
if [ "$rendered" -eq 0 ]; then
  echo "install_test: SKIP rendering the man pages: neither man nor groff is installed"
else
  ok "the man pages render without warnings"
fi

# The pages name what they describe, so none can silently fall behind.
kvd8=$prefix/share/man/man8/kvd.8
settings=$("$prefix/bin/kvd" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p')
[ "$(echo "$settings" | wc -l)" -ge 20 ] || fail "cannot read the settings from kvd --help"
for s in $settings; do
  grep -qF -- "\\-\\-$(echo "$s" | sed 's/-/\\-/g')" "$kvd8" ||
    fail "man/kvd.8 does not document --$s"
done
kvctl1=$prefix/share/man/man1/kvctl.1
commands=$("$prefix/bin/kvctl" --help |
  sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z]*\) .*/\1/p')
[ "$(echo "$commands" | wc -l)" -ge 8 ] || fail "cannot read the commands from kvctl --help"
for c in $commands; do
  grep -qE "^\.(B|BI|BR) \"?$c\b" "$kvctl1" || fail "man/kvctl.1 does not document '$c'"
done
kvclient3=$prefix/share/man/man3/kvclient.3
functions=$(grep -o 'kvc_[a-z_]*(' "$root/client/kvclient.h" | tr -d '(' | sort -u)
[ "$(echo "$functions" | wc -l)" -ge 30 ] || fail "cannot read the functions from kvclient.h"
for fn in $functions; do
  grep -q "$fn" "$kvclient3" || fail "man/kvclient.3 does not mention $fn()"
done
ok "the man pages document $(echo $settings | wc -w) settings, $(echo $commands | wc -w) commands, $(echo $functions | wc -w) functions"

# ---- make uninstall ----
run_make "$tmp/uninstall.log" uninstall PREFIX="$prefix"
left=$(find "$prefix" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"
ok "make uninstall leaves no file behind"

# ---- DESTDIR ----
stage=$tmp/stage
run_make "$tmp/install2.log" install DESTDIR="$stage" PREFIX=/opt/epikv
for f in $files; do
  [ -e "$stage/opt/epikv/$f" ] || fail "make install DESTDIR did not stage $f"
done
outside=$(find "$stage" ! -type d ! -path "$stage/opt/epikv/*")
[ -z "$outside" ] || fail "make install DESTDIR wrote outside the prefix: $outside"
grep -qx 'prefix=/opt/epikv' "$stage/opt/epikv/lib/pkgconfig/kvclient.pc" ||
  fail "the staged kvclient.pc does not say prefix=/opt/epikv"
run_make "$tmp/uninstall2.log" uninstall DESTDIR="$stage" PREFIX=/opt/epikv
left=$(find "$stage" ! -type d)
[ -z "$left" ] || fail "make uninstall DESTDIR left: $left"
ok "DESTDIR stages under another root with the prefix unchanged, and uninstalls"

echo "install_test: $checks passed, 0 failed"
