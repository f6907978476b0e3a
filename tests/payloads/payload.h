/* SPDX-License-Identifier: Apache-2.0 */
/* Shared definitions for the firmware-slot test payloads: each payload is
 * a 64 KiB flat image mapped just under 4 GiB (and shadowed at 0xF0000),
 * entered in real mode at its reset vector, that reports through the
 * debug-exit port (0x501) and the debug console (0x402). */

#define DEBUG_EXIT 0x501
#define DEBUG_CON 0x402
#define COM1 0x3f8

/* Ends the VM with exit code `code`. */
.macro EXIT code
    movb $\code, %al
    movw $DEBUG_EXIT, %dx
    outb %al, %dx
9:  hlt
    jmp 9b
.endm

/* Real mode: writes the zero-terminated string at `addr` (an address in
 * data segment 0) to COM1. Uses %si, %dx and %al. */
.macro PRINT_COM1 addr
    movw $\addr, %si
    movw $COM1, %dx
8:  movb (%si), %al
    testb %al, %al
    jz 7f
    outb %al, %dx
    incw %si
    jmp 8b
7:
.endm

/* Real-mode entry: flat data segments at 0, a stack below 0x7000. */
.macro REAL_MODE_SETUP
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7000, %sp
.endm

/* The reset vector at 0xFFFF_FFF0, jumping to `start` in the F000 shadow.
 * Assembled as 16-bit code whatever came before: after a .code32 part the
 * far jump would otherwise take a 32-bit offset and land at 0:0. */
.macro RESET_VECTOR
    .code16
    .org 0xfff0
    ljmp $0xf000, $start
    .org 0x10000
.endm

/* Switches to 32-bit flat protected mode and continues at `label`
 * (assembled with .code32), with an empty IDT so any exception ends in a
 * triple fault. Needs GDT_TABLE somewhere in the image. */
.macro ENTER_PROTECTED_MODE label
    lgdtl %cs:gdt_descriptor
    lidtl %cs:empty_idt_descriptor
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(0xf0000 + \label)
.endm

/* A flat GDT and the descriptors ENTER_PROTECTED_MODE and
 * BOOT_SECTOR_PROTECTED_MODE load; `base` is where the image's offset 0
 * sits in memory (0xF0000 for firmware images, 0x7C00 for boot sectors). */
.macro GDT_TABLE base=0xf0000
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff   /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff   /* 0x10: flat data */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long \base + gdt
empty_idt_descriptor:
    .word 0
    .long 0
.endm

/* For boot sectors (loaded at 0:7C00 by the BIOS, linked at 0): switches
 * to 32-bit flat protected mode and continues at `label` (assembled with
 * .code32). Needs `GDT_TABLE 0x7c00` in the sector. */
.macro BOOT_SECTOR_PROTECTED_MODE label
    lgdtl (0x7c00 + gdt_descriptor)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(0x7c00 + \label)
.endm

/* Loads GDT_TABLE's flat data segment (from .code32). */
.macro FLAT_DATA_SEGMENTS
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
.endm

/* From 32-bit flat protected mode: writes to every page of the 32 MiB
 * above 1 MiB, so the host must back 32 MiB of guest RAM for this boot,
 * then resets the machine through the keyboard controller (the reboot
 * tests' payloads). */
.macro TOUCH_32_MIB_AND_RESET
    movl $0x100000, %edi
1:  movl %edi, (%edi)
    addl $4096, %edi
    cmpl $(0x100000 + (32 << 20)), %edi
    jb 1b
    movb $0xfe, %al
    outb %al, $0x64
2:  hlt
    jmp 2b
.endm

/* From 32-bit flat protected mode: identity-maps the first `pages` 2 MiB
 * pages (user-accessible; page tables at 0x2000-0x4FFF), turns on PAE,
 * long mode and paging, and continues at `label` in 64-bit code (ring 0,
 * selector 0x28 of GDT64_TABLE). */
.macro ENTER_LONG_MODE label, pages=1
    movl $0x2000, %edi
    xorl %eax, %eax
    movl $(3 * 1024), %ecx
    rep stosl
    movl $(0x3000 | 7), 0x2000
    movl $(0x4000 | 7), 0x3000
    movl $0x4000, %edi
    movl $0x87, %eax
91: movl %eax, (%edi)
    addl $(2 << 20), %eax
    addl $8, %edi
    cmpl $(0x4000 + 8 * \pages), %edi
    jb 91b
    movl %cr4, %eax
    orl $0x20, %eax            /* PAE */
    movl %eax, %cr4
    movl $0x2000, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx     /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax      /* paging on: long mode */
    movl %eax, %cr0
    ljmpl $0x28, $(0xf0000 + \label)
.endm

/* From 64-bit ring 0: iretq to 64-bit ring 3 at `label`, with IOPL 3
 * (port I/O allowed), interrupts off and the stack at 0x6000. The label's
 * address is taken as a difference from `start` (which must be at offset
 * 0), which the 32-bit object format holds without a relocation. */
.macro ENTER_USER_MODE label
    pushq $0x23
    pushq $0x6000
    pushq $0x3002
    pushq $0x1b
    pushq $(0xf0000 + \label - start)
    iretq
.endm

/* The GDT of ENTER_PROTECTED_MODE, ENTER_LONG_MODE and ENTER_USER_MODE:
 * flat 32-bit code (0x08) and data (0x10), 64-bit ring 3 code (0x18),
 * ring 3 data (0x20) and 64-bit ring 0 code (0x28), with the descriptors
 * ENTER_PROTECTED_MODE loads (firmware images only). */
.macro GDT64_TABLE
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
.endm
