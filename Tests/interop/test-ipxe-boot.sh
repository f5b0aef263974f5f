#!/usr/bin/env bash
# iPXE sanboot over AoE against the target under test.
#
# The image's LBA 0 is a 512-byte boot sector assembled here (bytes below, with the assembly in
# comments). iPXE (ipxe.lkrn in QEMU, NIC on a tap in a private namespace) runs
# `ifopen net0 && sanboot aoe:e0.1`: it sends Query Config, IDENTIFY and READs of 2 sectors per frame,
# loads LBA 0 at 0000:7C00 and jumps to it. The boot sector then
#   1. prints  AOEBOOT-<nonce>-STAGE1           on COM1,
#   2. reads LBAs 1..64 into 0000:7E00 with INT 13h AH=42h (served by iPXE over AoE),
#   3. checks that dword 508 of each of those sectors holds its own LBA,
#   4. jumps to the code that came from LBA 1, which prints  AOEBOOT-<nonce>-PASS-64-SECTORS
#      and leaves QEMU through isa-debug-exit (exit status 33).
# On a failed read or a wrong tag it prints AOEBOOT-<nonce>-FAIL-... and exits with status 65.
#
# env: TARGET (default .build/debug/aoe-target), SHIFT (target's -o; with SHIFT != 0 the target is
#      deliberately wrong and this test must FAIL), MTU (default 1500), TIMEOUT (QEMU, default 120 s),
#      VERBOSE=1 (whole serial console), KEEP=1 (keep /tmp/interop-ipxe-*), CAPTURE is always on when
#      tcpdump exists (counts the READs iPXE sent).
# exit: 0 pass, 1 fail, 77 skip.  Last line: RESULT: PASS | RESULT: FAIL data | RESULT: FAIL infra
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MTU=${MTU:-1500}
SHIFT=${SHIFT:-0}
TIMEOUT=${TIMEOUT:-120}
SHELF=0
SLOT=1
NSECT_STAGE2=64            # LBAs 1..64 read by the boot sector (must match the code below)

it_need_root
need_tool ip timeout flock od dd truncate cmp realpath pgrep "$IT_QEMU"
IPXE=""
for f in /usr/lib/ipxe/ipxe.lkrn /boot/ipxe.lkrn; do
    [ -r "$f" ] && { IPXE=$f; break; }
done
[ -n "$IPXE" ] || it_skip "no ipxe.lkrn (apt-get install ipxe)"
[ -e /dev/net/tun ] || it_skip "no /dev/net/tun"
it_resolve_target
it_workdir ipxe
NONCE=$(it_nonce)
IMG=$IT_WORK/boot.img
T_START=$SECONDS

# ---------------------------------------------------------------- the disk image
# hex "aa bb cc" -> bytes at byte OFFSET of FILE (no truncation)
put_hex() {
    local file=$1 off=$2 hex=$3 esc="" b
    for b in $hex; do esc+="\\x$b"; done
    printf "$esc" | dd of="$file" bs=1 seek="$off" conv=notrunc status=none
}
# NUL-terminated string at byte OFFSET
put_str() { printf '%s\0' "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

build_image() {
    local img=$1 k base
    truncate -s 4M "$img"
    # Stage 1: LBA 0, loaded at 0000:7C00 (assembled by hand, verified with GNU as --32/.code16).
    put_hex "$img" 0 "
        ea 05 7c 00 00
        fa
        31 c0
        8e d8
        8e c0
        8e d0
        bc 00 7c
        fb
        88 d3
        ba fb 03
        b0 03
        ee
        be 00 7d
        e8 3a 00
        88 da
        be e0 7d
        b4 42
        cd 13
        72 1d
        bb fc 7f
        b9 01 00
        39 0f
        75 18
        83 7f 02 00
        75 12
        81 c3 00 02
        41
        83 f9 41
        75 ec
        e9 b8 01
        be 40 7d
        eb 03
        be 80 7d
        e8 07 00
        b0 20
        e6 f4
        f4
        eb fd
        ba f8 03
        ac
        84 c0
        74 03
        ee
        eb f8
        c3"
    #  00 ljmp $0,$0x7c05        normalise CS:IP to 0000:7C05
    #  05 cli; xor ax,ax; mov ds/es/ss,ax; mov sp,0x7c00; sti
    #  12 mov bl,dl              keep the BIOS drive number (iPXE passes 0x80)
    #  14 mov dx,0x3fb; mov al,3; out dx,al      COM1 LCR = 8N1, DLAB off
    #  1a mov si,0x7d00; call puts               "AOEBOOT-<nonce>-STAGE1"
    #  20 mov dl,bl; mov si,0x7de0; mov ah,0x42; int 0x13; jc eread
    #  2b mov bx,0x7ffc; mov cx,1                tag of the first loaded sector (0x7e00+508)
    #  31 chk: cmp [bx],cx; jne etag; cmp word [bx+2],0; jne etag
    #  3b add bx,512; inc cx; cmp cx,65; jne chk
    #  45 jmp 0x7e00                            stage 2, the code read from LBA 1
    #  48 eread: mov si,0x7d40; jmp die
    #  4d etag:  mov si,0x7d80
    #  50 die: call puts; mov al,0x20; out 0xf4,al (isa-debug-exit: status 65); hlt; jmp $-1
    #  5a puts: mov dx,0x3f8; lodsb; test al,al; jz ret; out dx,al; jmp lodsb; ret
    put_str "$img" $((0x100)) "AOEBOOT-$NONCE-STAGE1"$'\r\n'
    put_str "$img" $((0x140)) "AOEBOOT-$NONCE-FAIL-INT13-READ"$'\r\n'
    put_str "$img" $((0x180)) "AOEBOOT-$NONCE-FAIL-LBA-TAG"$'\r\n'
    # Disk address packet at 0x1e0: size 16, 64 sectors, buffer 0000:7E00, LBA 1
    put_hex "$img" $((0x1e0)) "10 00 40 00 00 7e 00 00 01 00 00 00 00 00 00 00"
    put_hex "$img" 510 "55 aa"
    # LBAs 1..64: text naming the LBA, and the tag (LBA, u32 little endian) at byte 508.
    for ((k = 1; k <= NSECT_STAGE2; k++)); do
        base=$((k * 512))
        printf '%-64s' "aoe-interop lba=$k nonce=$NONCE" | dd of="$img" bs=1 seek=$((base + 0x140)) conv=notrunc status=none
        put_hex "$img" $((base + 508)) "$(printf '%02x %02x 00 00' $((k & 255)) $((k >> 8)))"
    done
    # Stage 2 (LBA 1, runs at 0000:7E00):
    #  00 mov si,0x7f00; call 0x7c5a (stage-1 puts)      "AOEBOOT-<nonce>-PASS-64-SECTORS"
    #  06 mov al,0x10; out 0xf4,al  (isa-debug-exit: status 33); hlt; jmp $-1
    put_hex "$img" 512 "be 00 7f e8 54 fe b0 10 e6 f4 f4 eb fd"
    put_str "$img" $((512 + 0x100)) "AOEBOOT-$NONCE-PASS-${NSECT_STAGE2}-SECTORS"$'\r\n'
}

build_image "$IMG"
it_log "image: $IMG (4 MiB; boot sector at LBA 0, LBA-tagged stage 2 at LBAs 1..$NSECT_STAGE2), nonce $NONCE"

it_net_setup "$MTU"
HAVE_PCAP=0
if command -v tcpdump >/dev/null 2>&1; then
    CAPTURE=1 it_capture_start
    HAVE_PCAP=1
    sleep 1
fi
it_target_start "$SHIFT" "$SHELF" "$SLOT" "$IMG"

it_log "booting ipxe.lkrn: ifopen net0 && sanboot aoe:e$SHELF.$SLOT (timeout ${TIMEOUT}s)"
SERIAL=$IT_WORK/serial.log
T_Q=$SECONDS
it_qemu_run "$TIMEOUT" "$SERIAL" "AOEBOOT-$NONCE" \
    -m 128 -kernel "$IPXE" \
    -append "ifopen net0 && sanboot aoe:e$SHELF.$SLOT" \
    -machine graphics=off -boot reboot-timeout=1000 \
    -netdev "tap,id=n0,ifname=$IT_TAP,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,romfile=" \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04
QRC=$?
T_Q=$((SECONDS - T_Q))
sleep 1

# ---------------------------------------------------------------- verdict
READS=unknown
if [ "$HAVE_PCAP" = 1 ] && [ -s "$IT_WORK/target.pcap" ]; then
    # AoE requests (R flag clear), command 0 (ATA), ATA command READ SECTORS (EXT) 0x20/0x24
    READS=$(tcpdump -nr "$IT_WORK/target.pcap" \
        'ether proto 0x88a2 and ether[14] & 0x08 = 0 and ether[19] = 0 and (ether[27] = 0x20 or ether[27] = 0x24)' 2>/dev/null | wc -l)
fi
it_log "QEMU exit status $QRC after ${T_Q}s; iPXE sent $READS ATA READ requests"
it_target_alive || it_fail "[target] target process died during the run (see $IT_WORK/target.log)"

STAGE1=0; PASSM=0; FAILM=""
IPXE_ERR=$(tr -d '\r' <"$SERIAL" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | grep -m1 -E 'failed|No such|Connection timed out|Could not' || true)
tr -d '\r' <"$SERIAL" | grep -q "AOEBOOT-$NONCE-STAGE1" && STAGE1=1
tr -d '\r' <"$SERIAL" | grep -q "AOEBOOT-$NONCE-PASS-${NSECT_STAGE2}-SECTORS" && PASSM=1
FAILM=$(tr -d '\r' <"$SERIAL" | grep -o "AOEBOOT-$NONCE-FAIL-[A-Z0-9-]*" | head -1)

[ "$STAGE1" = 1 ] && it_pass "boot sector from LBA 0 ran (marker AOEBOOT-$NONCE-STAGE1)"
if [ "$PASSM" = 1 ] && [ "$QRC" = 33 ]; then
    it_pass "LBAs 1..$NSECT_STAGE2 read via INT 13h carried their own LBA tags; stage 2 printed AOEBOOT-$NONCE-PASS-${NSECT_STAGE2}-SECTORS"
elif [ "$PASSM" = 1 ]; then
    it_fail "[infra] PASS marker seen but QEMU exit status $QRC (expected 33 from isa-debug-exit)"
elif [ "$READS" = 0 ]; then
    it_fail "[target] iPXE sent no ATA READ: it never got a usable Config/IDENTIFY answer${IPXE_ERR:+; iPXE said: $IPXE_ERR}"
elif [ "$STAGE1" = 0 ]; then
    it_fail "[data] boot sector marker AOEBOOT-$NONCE-STAGE1 never appeared: iPXE read from the target but did not boot our LBA 0${IPXE_ERR:+; iPXE said: $IPXE_ERR} (this iPXE reports a sector 0 without the 55 AA signature as an Input/output error)"
elif [ -n "$FAILM" ]; then
    it_fail "[data] boot sector reported $FAILM"
elif [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    it_fail "[target] stage 1 ran but no result before the ${TIMEOUT}s timeout (INT 13h read hung?)"
else
    it_fail "[data] stage 1 ran but no PASS marker (QEMU exit status $QRC)"
fi
if [ "$IT_FAILED" != 0 ]; then
    echo "--- serial console (last 20 lines) ---"
    tr -d '\r' <"$SERIAL" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | grep -v '^ *$' | tail -20 | sed 's/^/  serial| /'
    echo "--- target log ---"
    tail -20 "$IT_WORK/target.log" | sed 's/^/  target| /'
fi
echo "wall time: $((SECONDS - T_START)) s"
it_result
