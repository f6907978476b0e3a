/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector that uses the ACPI tables the firmware published, as an
 * OS's ACPI core would: loaded by the BIOS at 0:7C00, it enters 32-bit
 * protected mode, finds the RSDP in the BIOS area (0xE0000-0xFFFFF),
 * checks the checksums of the RSDP, the XSDT, the FADT and the DSDT,
 * reads the PM1a event and control ports and the SCI's IRQ from the FADT,
 * prints "NESTBOX-ACPI-OK sci=XX" on COM1 and enables the power button
 * event. It then waits for the power button: when PWRBTN_STS is set it
 * reads the slave PIC's request register (whether the SCI line is up)
 * and prints "NESTBOX-SCI irr=XX", and powers the machine off by writing
 * S5 (SLP_TYP 5, the DSDT's _S5) with SLP_EN to PM1a_CNT. Any check that
 * fails prints "NESTBOX-ACPI-BAD" and stops. Linked at 0, so addresses
 * add 0x7C00. */
#include "payload.h"
#define AT(label) (label + 0x7c00)
#define PWRBTN (1 << 8)
    .code16
    .text
start:
    REAL_MODE_SETUP
    BOOT_SECTOR_PROTECTED_MODE flat

    .code32
flat:
    FLAT_DATA_SEGMENTS
    movl $0x7000, %esp
    /* The RSDP: "RSD PTR " on a 16-byte boundary. */
    movl $0xe0000, %esi
1:  cmpl $0x20445352, (%esi)
    jne 2f
    cmpl $0x20525450, 4(%esi)
    je rsdp
2:  addl $16, %esi
    cmpl $0x100000, %esi
    jb 1b
    jmp bad
rsdp:
    movl $20, %ecx
    call sum
    movl $36, %ecx
    call sum
    movl 24(%esi), %esi
    cmpl $0x54445358, (%esi)      /* "XSDT" */
    jne bad
    call table_sum
    /* The FADT ("FACP") among the XSDT's entries. */
    movl 4(%esi), %ecx
    subl $36, %ecx
    shrl $3, %ecx
    leal 36(%esi), %edi
3:  movl (%edi), %ebx
    cmpl $0x50434146, (%ebx)
    je fadt
    addl $8, %edi
    loop 3b
    jmp bad
fadt:
    movl %ebx, %esi
    call table_sum
    movl 56(%esi), %ebp           /* PM1a_EVT_BLK */
    movl 64(%esi), %eax           /* PM1a_CNT_BLK */
    movw %ax, AT(pm1_cnt)
    movw 46(%esi), %ax            /* SCI_INT */
    movb %al, AT(sci)
    movl 40(%esi), %esi           /* DSDT */
    cmpl $0x54445344, (%esi)      /* "DSDT" */
    jne bad
    call table_sum
    movl $AT(ok), %esi
    call print
    movb AT(sci), %al
    call print_hex
    /* Power button events raise the SCI from now on. */
    leal 2(%ebp), %edx
    movw $PWRBTN, %ax
    outw %ax, %dx
wait:
    movl %ebp, %edx
    inw %dx, %ax
    testw $PWRBTN, %ax
    jz wait
    /* OCW3: read the slave PIC's IRR (IRQs 8-15). */
    movb $0x0a, %al
    outb %al, $0xa0
    inb $0xa0, %al
    movb %al, %bl
    movl $AT(seen), %esi
    call print
    movb %bl, %al
    call print_hex
    /* Acknowledge, then S5. */
    movl %ebp, %edx
    movw $PWRBTN, %ax
    outw %ax, %dx
    movw AT(pm1_cnt), %dx
    movw $((5 << 10) | (1 << 13) | 1), %ax
    outw %ax, %dx
4:  hlt
    jmp 4b

/* The byte sum of the table at %esi (its length at offset 4) must be 0. */
table_sum:
    movl 4(%esi), %ecx
/* The byte sum of %ecx bytes at %esi must be 0; else "bad". */
sum:
    xorb %al, %al
    xorl %edx, %edx
5:  addb (%esi, %edx), %al
    incl %edx
    cmpl %ecx, %edx
    jb 5b
    testb %al, %al
    jnz bad
    ret

bad:
    movl $AT(failure), %esi
    call print
6:  hlt
    jmp 6b

/* Prints the NUL-terminated string at %esi on COM1. */
print:
    movb (%esi), %al
    testb %al, %al
    jz 8f
    call putc
    incl %esi
    jmp print
8:  ret

/* Prints %al as two hex digits and a line end. */
print_hex:
    movb %al, %ah
    shrb $4, %al
    call hex_digit
    movb %ah, %al
    andb $0x0f, %al
    call hex_digit
    movb $'\r', %al
    call putc
    movb $'\n', %al
    jmp putc
hex_digit:
    addb $'0', %al
    cmpb $'9', %al
    jbe putc
    addb $('a' - '9' - 1), %al
/* Writes %al to COM1 once its transmitter is empty. */
putc:
    pushl %eax
    movw $(COM1 + 5), %dx
7:  inb %dx, %al
    testb $0x20, %al
    jz 7b
    popl %eax
    movw $COM1, %dx
    outb %al, %dx
    ret

    GDT_TABLE 0x7c00
pm1_cnt:
    .word 0
sci:
    .byte 0
ok:
    .asciz "\r\nNESTBOX-ACPI-OK sci="
seen:
    .asciz "NESTBOX-SCI irr="
failure:
    .asciz "\r\nNESTBOX-ACPI-BAD\r\n"
    .org 510
    .word 0xaa55
