/* SPDX-License-Identifier: Apache-2.0 */
/* The IDE benchmark's guest: from the reset vector, with no firmware,
 * reads the first SECTORS sectors of the primary master with READ
 * SECTORS (128 at a time, PIO: a status read and a `rep insw` per
 * sector), then exits through the debug-exit port (0x31 on an error). */
#include "payload.h"
#define SECTORS 65536
#define PER_COMMAND 128
    .code16
    .text
start:
    REAL_MODE_SETUP
    movw $0x1000, %ax
    movw %ax, %es
    xorl %ebx, %ebx
command:
    cmpl $SECTORS, %ebx
    jae done
    movw $0x1f2, %dx
    movb $PER_COMMAND, %al
    outb %al, %dx
    movw $0x1f3, %dx
    movb %bl, %al
    outb %al, %dx
    movw $0x1f4, %dx
    movb %bh, %al
    outb %al, %dx
    movl %ebx, %eax
    shrl $16, %eax
    movw $0x1f5, %dx
    outb %al, %dx
    movw $0x1f6, %dx
    movb $0xe0, %al
    outb %al, %dx
    movw $0x1f7, %dx
    movb $0x20, %al
    outb %al, %dx
    movw $PER_COMMAND, %bp
sector:
    movw $0x1f7, %dx
1:  inb %dx, %al
    testb $0x80, %al
    jnz 1b
    testb $0x01, %al
    jnz fail
    testb $0x08, %al
    jz fail
    movw $0x1f0, %dx
    xorw %di, %di
    movw $256, %cx
    cld
    rep insw
    decw %bp
    jnz sector
    addl $PER_COMMAND, %ebx
    jmp command
done:
    EXIT 0x00
fail:
    EXIT 0x31
    RESET_VECTOR
