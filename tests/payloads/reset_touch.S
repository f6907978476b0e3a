/* SPDX-License-Identifier: Apache-2.0 */
/* A firmware image for the reboot tests: each boot enters 32-bit
 * protected mode, writes to every page of the 32 MiB above 1 MiB, so the
 * host must back 32 MiB of guest RAM (a VMM that kept an old machine's
 * memory after a reboot would grow by that much each time), and resets
 * the machine through the keyboard controller. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    ENTER_PROTECTED_MODE touch
    .code32
touch:
    FLAT_DATA_SEGMENTS
    TOUCH_32_MIB_AND_RESET
    GDT_TABLE
    RESET_VECTOR
