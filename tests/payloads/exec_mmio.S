/* SPDX-License-Identifier: Apache-2.0 */
/* Jumps into the legacy VGA hole, where no memory backs the code: KVM
 * cannot fetch instructions from MMIO, which ends in an emulation failure
 * (or, where KVM reads it as all-ones, an invalid-opcode triple fault). */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    lidt %cs:empty_idt
    ljmp $0xa000, $0
empty_idt:
    .word 0
    .long 0
    RESET_VECTOR
