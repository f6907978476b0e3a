/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector that writes like a guest that never flushes (DOS, most
 * older systems): loaded by the BIOS at 0:7C00 from the boot disk, it
 * writes itself to sector k * 128 for k = 1..CLUSTERS through int 13h
 * extended write (one sector in each 64 KiB qcow2 cluster after the
 * first, so every write allocates a cluster), never asks for a flush,
 * prints NESTBOX-WRITES-DONE through the BIOS and idles until the host
 * ends the VM. Linked at 0, so addresses add 0x7C00. */
#include "payload.h"
#define CLUSTERS 24
#define AT(label) (label + 0x7c00)
    .code16
    .text
start:
    REAL_MODE_SETUP
    movb %dl, AT(drive)
    sti
    movw $1, %cx
next:
    movw %cx, %ax
    shlw $7, %ax
    movw %ax, AT(dap_lba)
    movw $AT(dap), %si
    movw $0x4300, %ax
    movb AT(drive), %dl
    pushw %cx
    int $0x13
    popw %cx
    jc failed
    incw %cx
    cmpw $(CLUSTERS + 1), %cx
    jne next
    movw $AT(done), %si
    call print
idle:
    hlt
    jmp idle
failed:
    movw $AT(failure), %si
    call print
    EXIT 0x11

/* Prints the NUL-terminated string at %si through the BIOS (int 10h
 * teletype), which SeaBIOS's serial console mirrors on COM1 in order with
 * its own text (direct COM1 writes would interleave with it). */
print:
1:  movb (%si), %al
    testb %al, %al
    jz 2f
    movb $0x0e, %ah
    xorw %bx, %bx
    pushw %si
    int $0x10
    popw %si
    incw %si
    jmp 1b
2:  ret

/* The disk address packet: 16 bytes, one sector from 0:7C00 to dap_lba. */
dap:
    .byte 16, 0
    .word 1
    .word 0x7c00, 0
dap_lba:
    .quad 0
drive:
    .byte 0
done:
    .asciz "NESTBOX-WRITES-DONE\r\n"
failure:
    .asciz "NESTBOX-WRITE-FAILED\r\n"
    .org 510
    .word 0xaa55
