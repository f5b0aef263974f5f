#!/usr/bin/env bash
# The repository's own promises about setting a machine up:
# - README's "Set up" holds exactly two commands, the demo and the tests, and the test command is the line
#   .ci/run runs (CI runs as root, so a leading sudo in the README is the only difference allowed);
# - every tool a test or script asks for (need_tool, or `command -v NAME`) is in scripts/install-deps.sh, so
#   a fresh machine that installed the list has it. The scan also runs once on a made-up script asking for a
#   tool nobody lists, and must catch it there.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
. scripts/install-deps.sh
FAILURES=0
pass() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; FAILURES=$((FAILURES + 1)); }

# ---- README and .ci/run
setup=$(awk '/^## /{ on = ($0 == "## Set up") } on && /^    [^ ]/ { sub(/^    /, ""); print }' README.md)
n=$(grep -c . <<<"$setup")
[ "$n" = 2 ] && pass "README's Set up has exactly two commands" || fail "README's Set up has $n commands, want 2: $(tr '\n' '|' <<<"$setup")"
readme_test=$(grep 'Tests/' <<<"$setup" | head -1 | sed 's/^sudo //')
ci_test=$(grep -vE '^\s*(#|$|set |cd |export )' .ci/run | tail -1)
[ -n "$readme_test" ] && [ "$readme_test" = "$ci_test" ] &&
    pass "README's test command is what .ci/run runs: $ci_test" ||
    fail "README's test command '$readme_test' is not .ci/run's '$ci_test'"
grep -q 'scripts/demo.sh' <<<"$setup" && pass "README's other Set up command is the demo" || fail "no scripts/demo.sh in README's Set up"

# ---- tools against the package list
# tools_asked DIR...: "FILE TOOL" for every literal tool name a script asks for.
tools_asked() {
    find "$@" -name '*.sh' ! -name 'guest-*.sh' ! -name need.sh ! -name install-deps.sh ! -name test-setup-commands.sh -print0 |
        xargs -0 awk '
            { line = $0; sub(/#.*/, "", line) }
            match(line, /need_tool( +[^;|&)]+)/) {
                n = split(substr(line, RSTART + 9, RLENGTH - 9), w, " ")
                for (i = 1; i <= n; i++) if (w[i] !~ /[$"]/) print FILENAME, w[i]
            }
            { rest = line
              while (match(rest, /command -v [A-Za-z0-9_.+-]+/)) { print FILENAME, substr(rest, RSTART + 11, RLENGTH - 11); rest = substr(rest, RSTART + RLENGTH) } }
            { rest = line
              while (match(rest, /QEMU:-[A-Za-z0-9_.+-]+/)) { print FILENAME, substr(rest, RSTART + 6, RLENGTH - 6); rest = substr(rest, RSTART + RLENGTH) } }'
}
# The Swift toolchain is the one requirement that is not a Debian package.
unlisted() { while read -r file tool; do [ "$tool" = swift ] || [ -n "$(deps_package_of "$tool")" ] || echo "$file asks for '$tool'"; done; }

asked=$(tools_asked Tests scripts Benchmarks | sort -u)
count=$(awk '{ print $2 }' <<<"$asked" | sort -u | grep -c .)
missing=$(unlisted <<<"$asked")
[ "$count" -ge 20 ] && [ -z "$missing" ] && pass "all $count tools the scripts ask for are in scripts/install-deps.sh" ||
    fail "tools not in scripts/install-deps.sh (or too few found: $count): $missing"

# Negative control: a script asking for an unlisted tool, both ways, is caught.
fixture=$(mktemp -d /tmp/aoe-setup-check.XXXXXX)
trap 'rm -rf "$fixture"' EXIT
printf 'need_tool jq aoe-no-such-tool\ncommand -v aoe-other-missing >/dev/null\n' >"$fixture/test-fixture.sh"
caught=$(tools_asked "$fixture" | unlisted)
grep -q "'aoe-no-such-tool'" <<<"$caught" && grep -q "'aoe-other-missing'" <<<"$caught" && ! grep -q "'jq'" <<<"$caught" &&
    pass "negative control: the scan names unlisted tools in a made-up script and only those" ||
    fail "negative control: the scan missed an unlisted tool (got: $caught)"

# The table says which package provides each tool: check it against dpkg for every tool installed here
# (a wrong row would install the wrong package on a fresh machine and the tool would still be missing).
# wrong_rows TABLE: "tool(package, dpkg says owner)" for each row dpkg contradicts.
wrong_rows() {
    local _ pkg tools t path real owner
    while read -r _ pkg tools; do
        [ "$tools" = - ] && continue
        for t in $tools; do
            path=$(command -v "$t") || continue
            real=$(readlink -f "$path")
            owner=$( { dpkg -S "$real" || dpkg -S "${real/#\/usr\/bin\//\/bin\/}" || dpkg -S "${real/#\/usr\/sbin\//\/sbin\/}"; } 2>/dev/null | head -1 | cut -d: -f1)
            # First on PATH may be a copy outside dpkg (a pyenv shim for python3): the system's own then decides.
            [ -z "$owner" ] && [ -e "/usr/bin/$t" ] && owner=$(dpkg -S "/usr/bin/$t" 2>/dev/null | head -1 | cut -d: -f1)
            # The package itself, or one it depends on (binutils -> binutils-x86-64-linux-gnu; python3 pre-depends on
            # python3-minimal, which holds /usr/bin/python3).
            [ -n "$owner" ] && { [ "$owner" = "$pkg" ] || dpkg-query -W -f='${Depends} ${Pre-Depends}' "$pkg" 2>/dev/null | grep -qw -- "$owner"; } ||
                echo " $t($pkg, dpkg says ${owner:-nothing})"
        done
    done < <(grep -E '^[a-z]' <<<"$1")
}
wrong=$(wrong_rows "$DEPS_TABLE")
[ -z "$wrong" ] && pass "each listed tool found here belongs to the package the table names" || fail "wrong package for:$wrong"
wrong=$(wrong_rows "e2e vblade jq")
grep -q 'jq(vblade' <<<"$wrong" && pass "negative control: a row naming the wrong package for jq is caught" ||
    fail "negative control: the row check accepted 'vblade provides jq'"

# Every package named in the table is one Debian knows (a typo would make every fresh install fail).
if command -v apt-cache >/dev/null; then
    bad=$(for p in $(deps_packages $DEPS_GROUPS); do apt-cache show "$p" >/dev/null 2>&1 || echo "$p"; done)
    [ -z "$bad" ] && pass "every package in the list is known to apt" || fail "unknown to apt: $bad"
fi

echo "$([ $FAILURES -eq 0 ] && echo PASS || echo FAIL): setup commands ($FAILURES failures)"
[ $FAILURES -eq 0 ]
