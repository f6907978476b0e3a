/* SPDX-License-Identifier: Apache-2.0 */
/* String port I/O: `rep outsw` and `rep insb` exit once for many accesses;
 * the device at port 0x5f0 must still see them one at a time. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    movw %cs, %ax
    movw %ax, %ds
    /* Three words out, one access each. */
    movw $words, %si
    movw $0x5f0, %dx
    movw $3, %cx
    cld
    rep outsw
    /* Four bytes in from port 0x5f2 (each read answers the last byte
     * written there plus one: 0x11 once, as nothing more was written). */
    movw $0x5f2, %dx
    movb $0x10, %al
    outb %al, %dx
    xorw %ax, %ax
    movw %ax, %es
    movw $0x500, %di
    movw $4, %cx
    rep insb
    cmpl $0x11111111, %es:0x500
    jne fail
    EXIT 0x10
fail:
    EXIT 0x21
words:
    .word 0x1111, 0x2222, 0x3333
    RESET_VECTOR
