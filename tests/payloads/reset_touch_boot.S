/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector for reboot tests: loaded at 0:7C00 by SeaBIOS, it writes
 * to every page of the 32 MiB above 1 MiB from 32-bit protected mode, so
 * each boot makes the host back 32 MiB of guest RAM (a VMM that kept old
 * machines' memory after a reboot would grow by that much each time),
 * then resets the machine through the keyboard controller. Linked at 0,
 * so addresses add 0x7C00. */
#include "payload.h"
#define AT(label) (label + 0x7c00)
#define TOUCH_FROM 0x100000
#define TOUCH_BYTES (32 << 20)
    .code16
    .text
start:
    REAL_MODE_SETUP
    lgdtl AT(gdt_descriptor)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $AT(touch)
    .code32
touch:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movl $TOUCH_FROM, %edi
1:  movl %edi, (%edi)
    addl $4096, %edi
    cmpl $(TOUCH_FROM + TOUCH_BYTES), %edi
    jb 1b
    movb $0xfe, %al
    outb %al, $0x64
2:  hlt
    jmp 2b
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff      /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff      /* 0x10: flat data */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long AT(gdt)
    .org 510
    .word 0xaa55
