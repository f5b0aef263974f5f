#!/usr/bin/env bash
# The one list of what the project needs from a Debian machine, grouped by what needs it, and the one way to
# install it. The demo, Tests/run.sh, Benchmarks/run.sh and .ci/run all come through here.
#
#   scripts/install-deps.sh [--check] [GROUP...]    groups: build demo e2e interop passthrough rbd bench (default: all)
#
# Without --check (as root): installs the missing packages, saying which. With --check: prints the missing
# packages, one line, and exits 1 when any is missing. Sourced (`. scripts/install-deps.sh`), it only defines
# the table and the functions, for the tests that check every tool they ask for is listed here.
#
# Beyond these packages the machine needs the Swift toolchain (6.0 or newer; tested with 6.3.1) and a Linux
# kernel with AF_PACKET, veth, network namespaces and io_uring.

# group    package              tools it provides that the scripts ask for (command -v / need_tool)
DEPS_TABLE='
build       libpcap-dev          -
build       liburing-dev         -
build       librbd-dev           -
build       librados-dev         -
build       pkgconf              pkg-config
demo        iproute2             ip
e2e         iproute2             ip
e2e         jq                   jq
e2e         util-linux           setpriv flock
e2e         procps               pgrep pkill
e2e         coreutils            timeout od dd truncate realpath sha256sum
e2e         diffutils            cmp
e2e         grep                 grep
e2e         mawk                 awk
e2e         nftables             nft
e2e         tshark               tshark
e2e         tcpdump              tcpdump
e2e         systemd              systemd-analyze
e2e         aoetools             aoeping aoecfg
e2e         vblade               vblade
e2e         curl                 curl
e2e         perl-base            perl
e2e         python3              python3
e2e         prometheus           promtool
interop     qemu-system-x86      qemu-system-x86_64
interop     linux-image-amd64    -
interop     busybox-static       busybox
interop     cpio                 cpio
interop     ipxe                 -
interop     fio                  fio
interop     e2fsprogs            mke2fs debugfs e2fsck
interop     libc-bin             ldd
passthrough sg3-utils            sg_raw sg_sat_identify
passthrough hdparm               hdparm
passthrough smartmontools        smartctl
passthrough binutils             strip
bench       fio                  fio
bench       vblade               vblade
bench       jq                   jq
bench       gnuplot-nox          gnuplot
rbd         ceph-mon             ceph-mon
rbd         ceph-osd             ceph-osd
rbd         ceph-mgr             ceph-mgr
rbd         ceph-base            monmaptool
rbd         ceph-common          ceph rbd
rbd         tcpdump              tcpdump
rbd         jq                   jq
rbd         util-linux           unshare
rbd         mount                mount
rbd         libc-bin             ldconfig ldd
bench       ceph-mon             ceph-mon
bench       ceph-osd             ceph-osd
bench       ceph-mgr             ceph-mgr
bench       ceph-base            monmaptool
bench       ceph-common          ceph rbd
'
DEPS_GROUPS="build demo e2e interop passthrough rbd bench"

# deps_packages GROUP...: the packages of those groups, once each.
deps_packages() {
    local g
    for g in "$@"; do
        awk -v g="$g" '$1 == g { print $2 }' <<<"$DEPS_TABLE"
    done | awk '!seen[$0]++'
}

# deps_package_of TOOL: the package that provides TOOL, or nothing when the table does not list it.
deps_package_of() {
    awk -v t="$1" 'NF >= 3 { for (i = 3; i <= NF; i++) if ($i == t) { print $2; exit } }' <<<"$DEPS_TABLE"
}

# deps_missing GROUP...: the packages of those groups that dpkg does not have installed.
deps_missing() {
    local p
    for p in $(deps_packages "$@"); do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

# deps_ensure GROUP...: installs what is missing when root; otherwise names the command and fails.
deps_ensure() {
    local missing
    missing=$(deps_missing "$@" | tr '\n' ' ')
    missing=${missing% }
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: $missing; install them with: sudo scripts/install-deps.sh $*" >&2
        return 1
    fi
    echo "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists: update once, then install everything in one call.
    apt-get update -qq >/dev/null &&
        apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
        { echo "could not install: $missing (apt-get install failed)" >&2; return 1; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    check=0
    if [ "${1:-}" = "--check" ]; then check=1; shift; fi
    if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
    groups=("$@")
    [ ${#groups[@]} -eq 0 ] && read -ra groups <<<"$DEPS_GROUPS"
    for g in "${groups[@]}"; do
        case " $DEPS_GROUPS " in *" $g "*) ;; *) echo "install-deps: unknown group '$g' (groups: $DEPS_GROUPS)" >&2; exit 2 ;; esac
    done
    if [ $check -eq 1 ]; then
        missing=$(deps_missing "${groups[@]}" | tr '\n' ' ')
        [ -z "$missing" ] && { echo "all packages present for: ${groups[*]}"; exit 0; }
        echo "missing: $missing"; exit 1
    fi
    deps_ensure "${groups[@]}"
    command -v swift >/dev/null || echo "install-deps: no swift on PATH: install the Swift toolchain (6.0 or newer)" >&2
fi
