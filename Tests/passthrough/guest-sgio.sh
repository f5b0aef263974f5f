#!/bin/sh
. /test/config
T=$PT_TAG
i=0; while [ ! -e /sys/block/sda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
ls /sys/block; cat /sys/class/scsi_host/host*/proc_name; cat /sys/block/sda/device/model /sys/block/sda/size
run() { echo "### $*"; "$@" 2>&1; echo "### rc=$?"; }
run hdparm -C /dev/sda
run sg_raw -v /dev/sda 85 06 20 00 00 00 00 00 00 00 00 00 00 00 e5 00
run sg_raw -v -r 512 -o /tmp/smart.bin /dev/sda 85 08 0e 00 d0 00 01 00 00 00 4f 00 c2 00 b0 00
run sg_raw -v -r 512 /dev/sda 85 09 0e 00 00 00 01 00 00 00 00 00 00 40 2f 00
run sg_raw -v -r 512 /dev/sda 85 09 0e 00 00 00 01 00 00 00 02 00 00 40 24 00
run sg_raw -v /dev/sda 85 07 20 00 00 00 00 00 00 00 00 00 00 40 ea 00
run hdparm -I /dev/sda
run smartctl -H -A -d sat /dev/sda
run sg_sat_identify /dev/sda
run sg_sat_read_gplog --log=0 /dev/sda
ip link add v0 type veth peer name v1; ip link; 
echo "$T DONE"
