/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal bzImage (boot protocol 2.15, 64-bit entry) that checks what
 * the loader handed it: entered in long mode with %rsi at the zero page,
 * it writes to the debug console the command line (from cmd_line_ptr), the
 * e820 entry count, type_of_loader, the low byte of ramdisk_size and the
 * initrd's first byte, then exits with 0x10. */
#include "payload.h"
    .text
    .code16
    .org 0x1f1
    .byte 1                 /* setup_sects: one sector after the boot sector */
    .org 0x1fe
    .word 0xaa55            /* boot_flag */
    .byte 0xeb, 0x66        /* jump over the header: it ends at 0x268 */
    .ascii "HdrS"
    .word 0x020f            /* protocol version */
    .org 0x211
    .byte 0x01              /* loadflags: LOADED_HIGH */
    .org 0x214
    .long 0x100000          /* code32_start */
    .org 0x22c
    .long 0x7fffffff        /* initrd_addr_max */
    .long 0x200000          /* kernel_alignment */
    .byte 0, 0              /* relocatable, min_alignment */
    .word 0x0001            /* xloadflags: XLF_KERNEL_64 */
    .long 2047              /* cmdline_size */
    .org 0x400              /* the protected-mode kernel, loaded at 1 MiB */
    .org 0x600              /* its 64-bit entry, 0x200 in */
    .code64
entry64:
    movw $DEBUG_CON, %dx
    movl 0x228(%rsi), %ebx  /* cmd_line_ptr */
1:  movb (%rbx), %al
    testb %al, %al
    jz 2f
    outb %al, %dx
    incq %rbx
    jmp 1b
2:  movb 0x1e8(%rsi), %al   /* e820_entries */
    outb %al, %dx
    movb 0x210(%rsi), %al   /* type_of_loader */
    outb %al, %dx
    movb 0x21c(%rsi), %al   /* ramdisk_size, low byte */
    outb %al, %dx
    movl 0x218(%rsi), %ebx  /* ramdisk_image */
    movb (%rbx), %al
    outb %al, %dx
    movb $0x10, %al
    movw $DEBUG_EXIT, %dx
    outb %al, %dx
3:  hlt
    jmp 3b
