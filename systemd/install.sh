#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs lazy-pages: lazy-pagesd and lazy-pages-server to $PREFIX/sbin,
# lazy-pagesctl to $PREFIX/bin, the systemd units (ExecStart= pointed at
# those) to /etc/systemd/system, the /etc/default files if there are none
# yet, the man pages, and liblazypages (shared and static), lazypages.h and
# lazypages.pc (its directories set to these). Reloads systemd only if it
# is PID 1 (and the units went where it looks); enables nothing.
# `ninja install` runs it with the same variables.
#
#   [PREFIX=/usr/local] [DESTDIR=] [UNITDIR=/etc/systemd/system]
#   [DEFAULTDIR=/etc/default] [LIBDIR=$PREFIX/lib] [INCLUDEDIR=$PREFIX/include]
#   [MANDIR=$PREFIX/share/man] [BUILDDIR=build] sh systemd/install.sh
#
# DESTDIR is prepended to every path written (for packages); the paths in
# the units and in lazypages.pc are the ones without it.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
DEFAULTDIR=${DEFAULTDIR:-/etc/default}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
MANDIR=${MANDIR:-$PREFIX/share/man}
BUILDDIR=${BUILDDIR:-$top/build}

for d in "$PREFIX" "$LIBDIR" "$INCLUDEDIR" "$MANDIR"; do
	case $d in
	/*) ;;
	*) echo "install.sh: PREFIX, LIBDIR, INCLUDEDIR and MANDIR must be absolute paths, not '$d'" >&2; exit 2 ;;
	esac
done

mans="lazy-pagesd.8 lazy-pages-server.8 lazy-pagesctl.8 liblazypages.3"
for f in lazy-pagesd lazy-pages-server lazy-pagesctl liblazypages.a liblazypages.so lazypages.pc; do
	if [ ! -e "$BUILDDIR/$f" ]; then
		echo "install.sh: $BUILDDIR/$f is not built (run ninja first)" >&2
		exit 1
	fi
done
for m in $mans; do
	if [ ! -f "$BUILDDIR/man/$m" ]; then
		echo "install.sh: $BUILDDIR/man/$m is not built (run ninja first; it needs scdoc)" >&2
		exit 1
	fi
done

install -d -m 0755 "$DESTDIR$PREFIX/sbin" "$DESTDIR$PREFIX/bin" "$DESTDIR$UNITDIR" "$DESTDIR$DEFAULTDIR"
install -m 0755 "$BUILDDIR/lazy-pagesd" "$DESTDIR$PREFIX/sbin/lazy-pagesd"
install -m 0755 "$BUILDDIR/lazy-pages-server" "$DESTDIR$PREFIX/sbin/lazy-pages-server"
install -m 0755 "$BUILDDIR/lazy-pagesctl" "$DESTDIR$PREFIX/bin/lazy-pagesctl"

# The units name /usr/local/sbin and /etc/default; point them at this install.
for u in lazy-pages.socket lazy-pages.service lazy-pages-server.service; do
	tmp="$DESTDIR$UNITDIR/.$u.tmp"
	sed -e "s|/usr/local/sbin/|$PREFIX/sbin/|g" \
		-e "s|/usr/local/share/doc/|$PREFIX/share/doc/|g" \
		-e "s|/etc/default/|$DEFAULTDIR/|g" \
		"$here/$u" >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$DESTDIR$UNITDIR/$u"
	echo "installed $DESTDIR$UNITDIR/$u"
done

# Configuration is the administrator's: never overwritten.
for d in lazy-pages lazy-pages-server; do
	if [ -e "$DESTDIR$DEFAULTDIR/$d" ]; then
		echo "kept $DESTDIR$DEFAULTDIR/$d"
	else
		install -m 0644 "$here/$d.default" "$DESTDIR$DEFAULTDIR/$d"
		echo "installed $DESTDIR$DEFAULTDIR/$d"
	fi
done

# the library: the real file (liblazypages.so.VERSION), and its soname
# (liblazypages.so.0) and link-time name (liblazypages.so) as symlinks
install -d -m 0755 "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$INCLUDEDIR"
soname=$(readlink "$BUILDDIR/liblazypages.so")
real=$(readlink "$BUILDDIR/$soname")
install -m 0644 "$BUILDDIR/$real" "$DESTDIR$LIBDIR/$real"
ln -sfn "$real" "$DESTDIR$LIBDIR/$soname"
ln -sfn "$soname" "$DESTDIR$LIBDIR/liblazypages.so"
install -m 0644 "$BUILDDIR/liblazypages.a" "$DESTDIR$LIBDIR/liblazypages.a"
install -m 0644 "$top/client/lazypages.h" "$DESTDIR$INCLUDEDIR/lazypages.h"
sed -e "s|^prefix=.*|prefix=$PREFIX|" -e "s|^libdir=.*|libdir=$LIBDIR|" \
	-e "s|^includedir=.*|includedir=$INCLUDEDIR|" "$BUILDDIR/lazypages.pc" >"$DESTDIR$LIBDIR/pkgconfig/lazypages.pc"
chmod 0644 "$DESTDIR$LIBDIR/pkgconfig/lazypages.pc"

for m in $mans; do
	sec=${m##*.}
	install -d -m 0755 "$DESTDIR$MANDIR/man$sec"
	install -m 0644 "$BUILDDIR/man/$m" "$DESTDIR$MANDIR/man$sec/$m"
done

if [ -f "$top/README.md" ]; then
	install -d -m 0755 "$DESTDIR$PREFIX/share/doc/lazy-pages"
	install -m 0644 "$top/README.md" "$DESTDIR$PREFIX/share/doc/lazy-pages/README.md"
fi

# systemctl talks to PID 1; anywhere else (a container, a chroot, a
# package build) there is nothing to reload, and neither is there for units
# put where systemd does not look (a staging directory, the test suite).
reload=no
if [ -z "$DESTDIR" ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [ -d /run/systemd/system ]; then
	case $UNITDIR in
	/etc/systemd/system | /run/systemd/system | /usr/lib/systemd/system | /lib/systemd/system | \
		/usr/local/lib/systemd/system) reload=yes ;;
	esac
fi
# the dynamic linker's cache, for liblazypages.so.0 in a directory it searches
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then
	case $LIBDIR in
	/usr/local/lib | /usr/lib | /usr/lib/* | /lib/*) ldconfig ;;
	esac
fi
if [ $reload = yes ]; then
	systemctl daemon-reload
	echo "systemd reloaded. To start on the first lazy-pagesctl call:"
	echo "  systemctl enable --now lazy-pages.socket"
else
	echo "systemd not reloaded (not PID 1 here, or DESTDIR/UNITDIR is a staging place). On the target:"
	echo "  systemctl daemon-reload && systemctl enable --now lazy-pages.socket"
fi
