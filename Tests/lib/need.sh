# need_tool TOOL...: every test asks for the programs it runs here, so that Tests/repo checks each one is in
# the project's package list (scripts/install-deps.sh). A missing one is a loud skip (exit 77) naming the
# Debian package; Tests/run.sh installs the whole list first, and CI counts any skip as a failure.
# Functions only: sourcing this file changes nothing else.

# shellcheck source=../../scripts/install-deps.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/install-deps.sh"

need_tool() {
    local t pkg
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 && continue
        pkg=$(deps_package_of "$t")
        printf 'SKIP: missing tool: %s (Debian package %s; install: sudo scripts/install-deps.sh)\n' \
            "$t" "${pkg:-not in scripts/install-deps.sh}" >&2
        exit 77
    done
}
