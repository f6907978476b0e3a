/* SPDX-License-Identifier: Apache-2.0 */
/* The suspend benchmark's guest: fills TOUCH_MIB of RAM from 16 MiB with
 * a pattern at CPL3 (64-bit user mode, paging on: native speed even on a
 * software-only KVM), prints "TOUCHED" on COM1 and then spins at CPL3 for
 * ever. The first GiB is identity-mapped with 2 MiB pages. */
#include "payload.h"

#define TOUCH_MIB 300

    .code16
    .text
start:
    REAL_MODE_SETUP
    ENTER_PROTECTED_MODE kernel32
    .code32
kernel32:
    FLAT_DATA_SEGMENTS
    movl $0x7000, %esp
    ENTER_LONG_MODE kernel64, 512
    .code64
kernel64:
    ENTER_USER_MODE user
user:
    movq $(16 << 20), %rdi
    movq $(TOUCH_MIB << 17), %rcx      /* 8-byte words */
    movabsq $0x5a5aa5a5c3c33c3c, %rax
    rep stosq
    movw $COM1, %dx
    leaq (0xf0000 + touched - start), %rsi
2:  movb (%rsi), %al
    testb %al, %al
    jz 3f
    outb %al, %dx
    incq %rsi
    jmp 2b
3:  pause
    jmp 3b
touched:
    .asciz "TOUCHED\n"
    GDT64_TABLE
    RESET_VECTOR
