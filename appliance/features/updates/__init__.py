"""Updates that cannot brick the box: two root slots, a and b, chosen at each boot by the boot
script on the boot partition (U-Boot), with a boot counter that falls back to the other slot
when a new system does not come up."""
