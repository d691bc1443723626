# SPDX-License-Identifier: MIT
# pkglib.sh: build the Debian packages from a checkout, and install them
# inside a real-systemd container; sourced by tests/package.sh (and meant
# for any suite that tests the installed package, e.g. under
# ../shared/tools/with-systemd.sh).
#
#   pkg_build OUTDIR [SRCDIR]   on the host: dpkg-buildpackage -us -uc -b in a
#                               copy of SRCDIR (default: this checkout); the
#                               .debs, .changes and build.log end up in OUTDIR
#   pkg_install DEBDIR          inside the container: dpkg -i the three
#                               packages, then checks that systemd runs the
#                               packaged units and binaries
#   pkg_repack DEB VERSION OUT  the same package under another version (an
#                               upgrade that changes nothing but the number)
#
# Each returns non-zero with a one-line reason on stderr.

PKG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKG_NAMES=(lazy-pages liblazypages0 liblazypages-dev)

pkg_build() {
	local out=$1 src=${2:-$PKG_ROOT} work
	mkdir -p "$out" || return 1
	out=$(cd "$out" && pwd)
	rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo
	# the build happens in a copy (its parent receives the .debs), so the
	# checkout never gets debian/tmp, build stamps or a cleaned build/
	work=$(mktemp -d "${TMPDIR:-/tmp}/lp-debsrc.XXXXXX") || return 1
	mkdir "$work/lazy-pages"
	if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		# tracked and new files as they are in the work tree, nothing ignored
		(cd "$src" && git ls-files -z --cached --others --exclude-standard |
			while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
			tar --null -T - -cf -) | tar -C "$work/lazy-pages" -xf -
	else
		tar -C "$src" --exclude=./.git --exclude='./build' --exclude='./build-*' -cf - . |
			tar -C "$work/lazy-pages" -xf -
	fi
	if ! (cd "$work/lazy-pages" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1; then
		echo "dpkg-buildpackage failed: $(grep -m1 -E 'error|Error' "$out/build.log" || tail -n 1 "$out/build.log")" >&2
		rm -rf "$work"
		return 1
	fi
	mv "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out"/
	rm -rf "$work"
}

# pkg_deb DEBDIR NAME: the path of package NAME's .deb in DEBDIR
pkg_deb() {
	local f
	for f in "$1/$2"_*.deb; do
		[ -f "$f" ] && { echo "$f"; return 0; }
	done
	echo "no $2_*.deb in $1 (build it first: bash tests/package.sh deb-build)" >&2
	return 1
}

pkg_install() {
	local d=$1 debs=() n f u frag log
	for n in "${PKG_NAMES[@]}"; do
		f=$(pkg_deb "$d" "$n") || return 1
		debs+=("$f")
	done
	# a copy installed by systemd/install.sh would shadow the package's
	# units (/etc before /lib) or binaries (/usr/local before /usr)
	for f in /etc/systemd/system/lazy-pages.socket /etc/systemd/system/lazy-pages.service \
		/etc/systemd/system/lazy-pages-server.service /usr/local/sbin/lazy-pagesd /usr/local/bin/lazy-pagesctl; do
		if [ -e "$f" ]; then
			echo "$f exists (from systemd/install.sh?): it would shadow the package's" >&2
			return 1
		fi
	done
	# A docker-built host image carries a policy-rc.d that forbids starting
	# services (exit 101); the container boots that image as a real
	# machine, where no such file exists: set it aside there (the
	# container's root is a throw-away overlay), so the maintainer scripts
	# start what they start on a real system.
	if [ -e /usr/sbin/policy-rc.d ] && systemd-detect-virt --container --quiet; then
		mv /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.set-aside-by-pkglib || return 1
	fi
	log=$(mktemp) || return 1
	if ! DEBIAN_FRONTEND=noninteractive dpkg -i "${debs[@]}" >"$log" 2>&1; then
		echo "dpkg -i failed: $(grep -m1 -i error "$log" || tail -n 1 "$log")" >&2
		rm -f "$log"
		return 1
	fi
	rm -f "$log"
	for u in lazy-pages.socket lazy-pages.service lazy-pages-server.service; do
		frag=$(systemctl show -P FragmentPath "$u")
		if [ "$frag" != "/lib/systemd/system/$u" ]; then
			echo "systemd runs $u from '$frag', not from the package" >&2
			return 1
		fi
	done
	if ! systemctl cat lazy-pages.service | grep -q -x 'ExecStart=/usr/sbin/lazy-pagesd --service $LAZY_PAGESD_OPTS'; then
		echo "lazy-pages.service does not run /usr/sbin/lazy-pagesd: $(systemctl cat lazy-pages.service | grep ExecStart=)" >&2
		return 1
	fi
}

pkg_repack() {
	local deb=$1 version=$2 out=$3 tmp
	tmp=$(mktemp -d) || return 1
	dpkg-deb -R "$deb" "$tmp/p" &&
		sed -i "s/^Version: .*/Version: $version/" "$tmp/p/DEBIAN/control" &&
		dpkg-deb -b "$tmp/p" "$out" >/dev/null
	local rc=$?
	rm -rf "$tmp"
	[ $rc -eq 0 ] || echo "could not repack $deb as $version" >&2
	return $rc
}
