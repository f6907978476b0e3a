/* SPDX-License-Identifier: Apache-2.0 */
/* PCI enumeration through configuration mechanism #1: for every present
 * function 0 on bus 0, writes its ID dword and class dword to the debug
 * console, then exits with 0x10. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    xorl %ebx, %ebx
next_device:
    movl %ebx, %eax
    shll $11, %eax
    orl $0x80000000, %eax
    movl %eax, %esi
    movw $0xcf8, %dx
    outl %eax, %dx
    movw $0xcfc, %dx
    inl %dx, %eax
    cmpl $0xffffffff, %eax
    je skip
    call emit_dword
    movl %esi, %eax
    orl $0x08, %eax        /* revision and class */
    movw $0xcf8, %dx
    outl %eax, %dx
    movw $0xcfc, %dx
    inl %dx, %eax
    call emit_dword
skip:
    incl %ebx
    cmpl $32, %ebx
    jne next_device
    EXIT 0x10
/* Writes %eax to the debug console, least significant byte first. */
emit_dword:
    movw $DEBUG_CON, %dx
    movw $4, %cx
1:  outb %al, %dx
    shrl $8, %eax
    loop 1b
    ret
    RESET_VECTOR
