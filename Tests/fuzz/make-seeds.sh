#!/usr/bin/env bash
# Makes the seed corpora in Tests/fuzz/corpus/{frames,replies} from real traffic: aoe-target (--pcap) serving e1.1 on a
# veth pair in a private namespace, driven by aoectl (discover, identify, smart, ata, read, write, config,
# mask, reserve, a short verified bench) and aoeping. Run once as root; the corpus is committed.
. "$(dirname "$0")/../e2e/lib.sh"
need_tool aoeping
net_up 1500
truncate -s 16M "$WORK/disk.img"
start_target "$WORK/t.log" --pcap "$WORK/seed.pcap" 1 1 t0 "$WORK/disk.img"
aoectl discover -i i0 >/dev/null
aoectl identify -i i0 1.1 >/dev/null
aoectl smart -i i0 1.1 >/dev/null
aoectl ata -i i0 1.1 --command 0xE5 >/dev/null
aoectl ata -i i0 1.1 --command 0xEA >/dev/null
aoectl ata -i i0 1.1 --command 0xEF --feature 0x82 >/dev/null
head -c 4096 /dev/urandom | aoectl write -i i0 1.1 --lba 8 >/dev/null
aoectl read -i i0 1.1 --lba 8 --count 8 >/dev/null
aoectl discard -i i0 1.1 --lba 8 --count 8 >/dev/null
aoectl config -i i0 1.1 set seed >/dev/null
aoectl config -i i0 1.1 test seed >/dev/null
aoectl config -i i0 1.1 prefix se >/dev/null
aoectl mask -i i0 1.1 add "$(mac_of i0)" >/dev/null
aoectl mask -i i0 1.1 delete "$(mac_of i0)" >/dev/null
aoectl reserve -i i0 1.1 set >/dev/null
aoectl reserve -i i0 1.1 release >/dev/null
aoectl bench -i i0 1.1 --rw randrw --qd 4 --count 40 --verify --seed 3 >/dev/null
in_ns timeout 10 aoeping -s 2 -I 1 1 i0 >/dev/null 2>&1
stop_target
"$BIN/aoe-fuzz" seeds "$WORK/seed.pcap" "$WORK/all"
# Only the frames that add coverage (libFuzzer merge, needs the fuzzing build of Tests/fuzz/run.sh).
for t in frames replies; do
    rm -rf "$ROOT/Tests/fuzz/corpus/$t"; mkdir -p "$ROOT/Tests/fuzz/corpus/$t"
    AOE_FUZZ_TARGET=$t "$ROOT/.build-fuzz/debug/aoe-fuzz" -merge=1 "$ROOT/Tests/fuzz/corpus/$t" "$WORK/all" >/dev/null 2>&1 || fail "merge for $t (build it first: Tests/fuzz/run.sh 1)"
done
pass "seed corpus: $(ls "$ROOT/Tests/fuzz/corpus/frames" | wc -l) frames, $(ls "$ROOT/Tests/fuzz/corpus/replies" | wc -l) replies"
finish
