/* SPDX-License-Identifier: Apache-2.0 */
/* A triple fault: in protected mode with an empty IDT, ud2's #UD cannot
 * be delivered, nor can the #GP and the double fault that follow. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    ENTER_PROTECTED_MODE pm32
    .code32
pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %ss
    ud2
    EXIT 0x21
    .code16
    GDT_TABLE
    RESET_VECTOR
