/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector whose guest stops itself once the firmware has shown its
 * screen: it prints a line on COM1, then halts with interrupts disabled
 * (nothing can wake it). Linked at 0, so addresses add 0x7C00. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    PRINT_COM1 (message + 0x7c00)
2:  cli
    hlt
    jmp 2b
message:
    .asciz "NESTBOX-HANG-BOOT\r\n"
    .org 510
    .word 0xaa55
