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
