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
 * programs do (and as a software-only KVM runs natively): real mode,
 * then 32-bit protected mode, identity-mapped page tables for the first
 * 2 MiB, long mode, and an iretq to ring 3 with IOPL 3. */
#include "payload.h"

#define COUNT_COPY 0x1000
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
    movl $0, COUNT_COPY
    /* One 2 MiB page at 0, user-accessible, through PML4 -> PDPT -> PD. */
    movl $PML4, %edi
    xorl %eax, %eax
    movl $(3 * 1024), %ecx
    rep stosl
    movl $(PDPT | 7), PML4
    movl $(PD | 7), PDPT
    movl $0x87, PD
    movl %cr4, %eax
    orl $0x20, %eax            /* PAE */
    movl %eax, %cr4
    movl $PML4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx     /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax      /* paging on: long mode */
    movl %eax, %cr0
    ljmpl $KERNEL_CS64, $(0xf0000 + kernel64)
    /* 64-bit code: label addresses as differences from `start` (offset
     * 0), which the 32-bit object format can hold without relocations. */
    .code64
kernel64:
    pushq $USER_SS
    pushq $0x6000
    pushq $0x3002              /* IOPL 3, interrupts off */
    pushq $USER_CS
    pushq $(0xf0000 + user - start)
    iretq
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

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff   /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff   /* 0x10: flat data */
    .quad 0x00affa000000ffff   /* 0x18: 64-bit code, ring 3 */
    .quad 0x00cff2000000ffff   /* 0x20: flat data, ring 3 */
    .quad 0x00af9a000000ffff   /* 0x28: 64-bit code */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long 0xf0000 + gdt
empty_idt_descriptor:
    .word 0
    .long 0
    RESET_VECTOR
