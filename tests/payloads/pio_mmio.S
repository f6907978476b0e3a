/* SPDX-License-Identifier: Apache-2.0 */
/* Port I/O and MMIO dispatch: writes to a test port and to a test MMIO
 * window in the legacy VGA hole, reads them back through the devices. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    /* Port 0x5f0 answers a read with the last dword written plus one. */
    movw $0x5f0, %dx
    movl $0x12345678, %eax
    outl %eax, %dx
    inl %dx, %eax
    cmpl $0x12345679, %eax
    jne fail_pio
    movw $0x5f2, %dx
    movb $0xab, %al
    outb %al, %dx
    /* MMIO at 0xA0000 answers with the complement of what was written. */
    movw $0xa000, %ax
    movw %ax, %es
    movl $0xcafebabe, %es:0x10
    movl %es:0x10, %eax
    cmpl $0x35014541, %eax
    jne fail_mmio
    movw $0xbeef, %es:0x20
    EXIT 0x10
fail_pio:
    EXIT 0x21
fail_mmio:
    EXIT 0x22
    RESET_VECTOR
