# Building blocks for QEMU guest initramfs images, shared by Tests/interop and Tests/passthrough.
# Functions only: sourcing this file changes nothing else.

# guest_mod_resolve MODDIR NAME...: module paths (relative to MODDIR), dependencies first, each once,
# resolved recursively from MODDIR/modules.dep.
guest_mod_resolve() {
    local moddir=$1; shift
    local -A dep_of=() path_of=() seen=()
    local line mod key out=() n
    while IFS= read -r line; do
        mod=${line%%:*}
        key=${mod##*/}; key=${key%%.ko*}; key=${key//-/_}
        path_of[$key]=$mod
        dep_of[$mod]=${line#*:}
    done <"$moddir/modules.dep"
    guest__visit() {
        local m=$1 d
        [ -n "${seen[$m]:-}" ] && return 0
        seen[$m]=1
        for d in ${dep_of[$m]}; do guest__visit "$d"; done
        out+=("$m")
    }
    for n in "$@"; do
        key=${n//-/_}
        [ -n "${path_of[$key]:-}" ] || { echo "module $n is not in $moddir/modules.dep" >&2; return 1; }
        guest__visit "${path_of[$key]}"
    done
    printf '%s\n' "${out[@]}"
}

# guest_copy_with_libs BIN DEST ROOT: BIN at ROOT/DEST plus every library ldd lists, at the same paths.
guest_copy_with_libs() {
    local bin=$1 dest=$2 root=$3 lib
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$bin" "$root$dest"
    for lib in $(ldd "$bin" 2>/dev/null | awk '/=> \//{print $3} /^\t\//{print $1}'); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# guest_cpio_dir DIR OUT: a newc cpio archive of DIR's contents, in a stable order.
guest_cpio_dir() { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$2"; }

# guest_kernel_version: $KVER, else the newest /boot/vmlinuz-* that has a modules.dep; nothing if none.
guest_kernel_version() {
    local v found=""
    if [ -n "${KVER:-}" ]; then echo "$KVER"; return; fi
    for v in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|/boot/vmlinuz-||' | sort -V); do
        [ -f "/lib/modules/$v/modules.dep" ] && found=$v
    done
    [ -n "$found" ] && echo "$found"
}

# guest_qemu_lock: one QEMU at a time on this 2-core machine. Takes /tmp/interop-qemu.lock on fd 9 (release
# with `flock -u 9`), then waits for QEMUs that anything else started. Returns 1, saying why, after
# ${IT_LOCK_WAIT:-900} s.
guest_qemu_lock() {
    local limit=${IT_LOCK_WAIT:-900} waited=0
    exec 9>/tmp/interop-qemu.lock
    flock -w "$limit" 9 || { echo "QEMU lock /tmp/interop-qemu.lock busy for $limit s" >&2; return 1; }
    while pgrep -x 'qemu-system-x86_64|qemu-system-i386' >/dev/null 2>&1; do
        [ $waited = 0 ] && echo "waiting for another QEMU on this machine to finish" >&2
        waited=$((waited + 5))
        [ $waited -ge "$limit" ] && { echo "another QEMU kept running for ${waited}s" >&2; return 1; }
        sleep 5
    done
}

# guest_sector TEXT: 512 bytes, TEXT then random bytes (a sector that says what it is).
guest_sector() { { printf '%s' "$1"; head -c $((512 - ${#1})) /dev/urandom; } | head -c 512; }

# guest_wait_qemu PID SERIAL TAG: while QEMU (PID, started with -serial file:SERIAL and its own output in
# SERIAL.qemu-out) runs, streams the guest's lines marked TAG (every line with VERBOSE=1); then waits for it,
# prints what QEMU itself said, releases the QEMU lock (fd 9) and returns QEMU's exit status.
guest_wait_qemu() {
    local pid=$1 serial=$2 tag=$3 tpid rc
    if [ "${VERBOSE:-0}" = 1 ]; then
        tail -n +1 -F --pid="$pid" "$serial" 2>/dev/null | sed -u 's/\r//g; s/^/  serial| /' &
    else
        tail -n +1 -F --pid="$pid" "$serial" 2>/dev/null | sed -u 's/\r//g' |
            grep --line-buffered -F "$tag" | sed -u "s/^.*$tag/  guest|/" &
    fi
    tpid=$!
    wait "$pid"
    rc=$?
    sleep 0.3
    kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null
    flock -u 9
    [ -s "$serial.qemu-out" ] && sed 's/^/  qemu| /' "$serial.qemu-out"
    return $rc
}
