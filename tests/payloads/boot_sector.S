/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector for firmware boot tests: loaded by the BIOS at 0:7C00, it
 * prints a line on COM1 and exits the VM with 0x10. Linked at 0, so
 * addresses add 0x7C00. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    PRINT_COM1 (message + 0x7c00)
    EXIT 0x10
message:
    .asciz "NESTBOX-BOOT-SECTOR-OK\r\n"
    .org 510
    .word 0xaa55
