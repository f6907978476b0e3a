/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector for reboot tests: loaded at 0:7C00 by SeaBIOS, it writes
 * to every page of the 32 MiB above 1 MiB from 32-bit protected mode, so
 * each boot makes the host back 32 MiB of guest RAM (a VMM that kept old
 * machines' memory after a reboot would grow by that much each time),
 * then resets the machine through the keyboard controller. Linked at 0,
 * so addresses add 0x7C00. */
#include "payload.h"
#define AT(label) (label + 0x7c00)
    .code16
    .text
start:
    REAL_MODE_SETUP
    BOOT_SECTOR_PROTECTED_MODE touch
    .code32
touch:
    FLAT_DATA_SEGMENTS
    TOUCH_32_MIB_AND_RESET
    GDT_TABLE 0x7c00
    .org 510
    .word 0xaa55
