/* SPDX-License-Identifier: Apache-2.0 */
/* The suspend benchmark's guest: fills TOUCH_MIB of RAM from 16 MiB with
 * a pattern at CPL3 (64-bit user mode, paging on: native speed even on a
 * software-only KVM), prints "TOUCHED" on COM1 and then spins at CPL3 for
 * ever. The first GiB is identity-mapped with 2 MiB pages. */
#include "payload.h"

#define TOUCH_MIB 300
#define PML4 0x2000
#define PDPT 0x3000
#define PD 0x4000
#define USER_CS 0x1b
#define USER_SS 0x23
#define KERNEL_CS64 0x28

    .code16
    .text
start:
    REAL_MODE_SETUP
    ENTER_PROTECTED_MODE kernel32
    .code32
kernel32:
    FLAT_DATA_SEGMENTS
    movl $0x7000, %esp
    movl $PML4, %edi
    xorl %eax, %eax
    movl $(3 * 1024), %ecx
    rep stosl
    movl $(PDPT | 7), PML4
    movl $(PD | 7), PDPT
    /* 512 user-accessible 2 MiB pages: the first GiB. */
    movl $PD, %edi
    movl $0x87, %eax
1:  movl %eax, (%edi)
    addl $(2 << 20), %eax
    addl $8, %edi
    cmpl $(PD + 4096), %edi
    jb 1b
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $PML4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    ljmpl $KERNEL_CS64, $(0xf0000 + kernel64)
    /* Label addresses as differences from `start` (offset 0): the 32-bit
     * object format holds them without relocations. */
    .code64
kernel64:
    pushq $USER_SS
    pushq $0x6000
    pushq $0x3002
    pushq $USER_CS
    pushq $(0xf0000 + user - start)
    iretq
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

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00affa000000ffff
    .quad 0x00cff2000000ffff
    .quad 0x00af9a000000ffff
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long 0xf0000 + gdt
empty_idt_descriptor:
    .word 0
    .long 0
    RESET_VECTOR
