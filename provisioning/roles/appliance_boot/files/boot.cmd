# The appliance's boot script, run by U-Boot from the boot partition: the same script on a
# Raspberry Pi (the firmware starts U-Boot) and under qemu (U-Boot is the machine's firmware),
# so the tests walk the path a card walks. Compiled to boot.scr by the appliance_boot role.
#
# The box has two root slots, a and b. Each slot's kernel and initramfs are on this partition
# in slot-a/ and slot-b/ (a kernel hook in each slot copies them there). bootslot.env, 512
# bytes that `appliance boot` also writes, holds:
#   BOOT_ORDER       the slots to try, preferred first: "a b"
#   a_left, b_left   how many more times a slot may be started before it counts as failed
#   BOOT_TRIAL       the slot being tried ("none" when none is): Linux's note, kept as it is
# Every boot takes one try from the first slot in BOOT_ORDER that has one left and saves
# that before starting it. A healthy box gives its slot the tries back (`appliance boot
# commit`). A kernel that never comes up (a panic reboots; a hang is ended by the watchdog or
# the power switch) uses up its tries, and the next slot in the order boots: the rollback.
# The counters count down by spelled-out steps, not arithmetic: U-Boot for x86 has no setexpr.

setenv BOOT_ORDER "a b"
setenv a_left 3
setenv b_left 0
setenv BOOT_TRIAL none
setenv bootpart ${devtype} ${devnum}:${distro_bootpart}
# ${scriptaddr} holds this script while it runs: scratch memory starts at the kernel's address.
if load ${bootpart} ${kernel_addr_r} bootslot.env; then
    env import -t ${kernel_addr_r} ${filesize} BOOT_ORDER BOOT_TRIAL a_left b_left
else
    echo "appliance boot: no bootslot.env, starting slot a"
fi

setenv take_try 'if test "${left}" = "3"; then setenv left 2; setenv slot ${s}; else if test "${left}" = "2"; then setenv left 1; setenv slot ${s}; else if test "${left}" = "1"; then setenv left 0; setenv slot ${s}; fi; fi; fi'
setenv slot
for s in ${BOOT_ORDER}; do
    if test -z "${slot}"; then
        if test "${s}" = "a"; then
            setenv left ${a_left}; run take_try; setenv a_left ${left}
        fi
        if test "${s}" = "b"; then
            setenv left ${b_left}; run take_try; setenv b_left ${left}
        fi
    fi
done
if test -z "${slot}"; then
    # No slot has a try left: both failed, or the power failed three times in a row before
    # Linux gave the tries back. Start the preferred slot again with full tries rather than
    # stop: a box that does not boot at all helps nobody.
    echo "appliance boot: no slot has a try left; starting the preferred one again"
    setenv a_left 3
    setenv b_left 3
    for s in ${BOOT_ORDER}; do
        if test -z "${slot}"; then setenv slot ${s}; fi
    done
fi

# Saved before the kernel starts, so a kernel that hangs has still used its try. One sector,
# the same size every time: the file's clusters and the FAT never change, only its content.
mw.b ${kernel_addr_r} 0 0x200
env export -t ${kernel_addr_r} BOOT_ORDER BOOT_TRIAL a_left b_left
fatwrite ${bootpart} ${kernel_addr_r} bootslot.env 0x200
echo "appliance boot: slot ${slot} (order ${BOOT_ORDER}; tries left a=${a_left} b=${b_left})"

if test "${slot}" = "b"; then setenv rootlabel appliance-root-b; else setenv rootlabel appliance-root; fi
# The serial console of each machine: the Pi's GPIO UART (ttyS1; ttyAMA0 is Bluetooth) and its
# screen, qemu's first serial port.
if test "${board}" = "rpi"; then
    setenv consoles "console=tty0 console=ttyS1,115200"
elif test "${arch}" = "x86"; then
    setenv consoles "console=ttyS0,115200"
else
    setenv consoles "console=ttyAMA0,115200"
fi
setenv bootargs "root=LABEL=${rootlabel} rw rootwait fsck.repair=yes net.ifnames=0 ${consoles} panic=10 appliance.slot=${slot}"

if test "${arch}" = "x86"; then
    # The kernel decompresses itself from 16 MiB upwards over tens of MiB: the initramfs goes
    # well above that (at U-Boot's default 64 MiB the kernel overwrote it).
    load ${bootpart} ${kernel_addr_r} slot-${slot}/vmlinuz
    setenv kernel_size ${filesize}
    load ${bootpart} 0x8000000 slot-${slot}/initrd.img
    zboot ${kernel_addr_r} ${kernel_size} 0x8000000 ${filesize}
else
    # A Pi's RAM starts at 0 and the kernel (about 35 MiB unpacked) at 512 KiB: the initramfs
    # goes above it. The device tree is the one the firmware (Pi) or qemu handed over.
    if test "${board}" = "rpi"; then setenv initrd_addr 0x06000000; else setenv initrd_addr ${ramdisk_addr_r}; fi
    if test -n "${fdt_addr}"; then setenv dtb ${fdt_addr}; else setenv dtb ${fdtcontroladdr}; fi
    load ${bootpart} ${kernel_addr_r} slot-${slot}/vmlinuz
    load ${bootpart} ${initrd_addr} slot-${slot}/initrd.img
    booti ${kernel_addr_r} ${initrd_addr}:${filesize} ${dtb}
fi
# Only reached when the slot's kernel could not even be started (a missing or damaged file):
# that try is spent; the next boot moves on.
echo "appliance boot: slot ${slot} could not be started; restarting"
sleep 3
reset
