/* SPDX-License-Identifier: Apache-2.0 */
/* Counts at CPL3, for ever: each count goes to COM1 as eight hex digits
 * and a newline. The count lives in %ebx and, in step, in RAM at
 * COUNT_COPY; a difference between the two (a register or RAM not
 * restored) prints '!' and ends in a triple fault (hlt at CPL3 faults,
 * and there is no IDT). The saved-state tests stop it, save it and
 * restore it in another process: the lines must go on from where they
 * were, none missing and none repeated.
 *
 * The count runs in 64-bit user mode with paging on, as a real OS's
 * programs do (and as a software-only KVM runs natively). */
#include "payload.h"

#define COUNT_COPY 0x1000

    .code16
    .text
start:
    REAL_MODE_SETUP
    ENTER_PROTECTED_MODE kernel32
    .code32
kernel32:
    FLAT_DATA_SEGMENTS
    movl $0x7000, %esp
    movl $0, COUNT_COPY
    ENTER_LONG_MODE kernel64
    .code64
kernel64:
    ENTER_USER_MODE user
user:
    xorl %ebx, %ebx
next:
    incl %ebx
    incl COUNT_COPY
    cmpl COUNT_COPY, %ebx
    jne mismatch
    movl %ebx, %esi
    movl $8, %ecx
    movw $COM1, %dx
digit:
    roll $4, %esi
    movl %esi, %eax
    andl $0xf, %eax
    movb (0xf0000 + hex - start)(%rax), %al
    outb %al, %dx
    loop digit
    movb $'\n', %al
    outb %al, %dx
    jmp next
mismatch:
    movb $'!', %al
    outb %al, %dx
    hlt
hex:
    .ascii "0123456789abcdef"
    GDT64_TABLE
    RESET_VECTOR
