/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector that stops its guest for good: loaded at 0:7C00 by
 * SeaBIOS, it writes a line on the screen (through the VGA BIOS) and on
 * COM1, then halts with interrupts off, which nothing can wake. For the
 * app's plain-words account of a guest that stopped, with its last
 * screen. Linked at 0, so addresses add 0x7C00. */
#include "payload.h"
#define AT(label) (label + 0x7c00)
    .code16
    .text
start:
    REAL_MODE_SETUP
    movw $AT(message), %si
1:  movb (%si), %al
    testb %al, %al
    jz 2f
    movb $0x0e, %ah
    movw $0x0007, %bx
    int $0x10
    incw %si
    jmp 1b
2:  PRINT_COM1 AT(message)
    cli
3:  hlt
    jmp 3b
message:
    .asciz "NESTBOX-HALT-TEST: this guest stops itself now\r\n"
    .org 510
    .word 0xaa55
