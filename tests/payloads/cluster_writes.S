/* SPDX-License-Identifier: Apache-2.0 */
/* A boot sector that writes like a guest that never flushes (DOS, most
 * older systems): loaded by the BIOS at 0:7C00 from the boot disk, it
 * writes itself to sector k * 128 for k = 1..CLUSTERS through int 13h
 * extended write (one sector in each 64 KiB qcow2 cluster after the
 * first, so every write allocates a cluster), never asks for a flush,
 * prints NESTBOX-WRITES-DONE through the BIOS and idles until the host
 * ends the VM. Linked at 0, so addresses add 0x7C00.
 *
 * Variants (files that define these and include this one):
 * FLUSH_EACH: after each write, ATA FLUSH CACHE to the primary channel's
 *   selected drive (the IDE boot disk), so every write is acknowledged
 *   durable before the next;
 * RESET_WHEN_DONE: after the message, resets the machine through the
 *   keyboard controller (0xFE to port 0x64) instead of idling. */
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
#ifdef FLUSH_EACH
    movw $0x1f7, %dx
    movb $0xe7, %al
    outb %al, %dx
1:  inb %dx, %al
    testb $0x80, %al
    jnz 1b
    testb $0x01, %al
    jnz failed
#endif
    incw %cx
    cmpw $(CLUSTERS + 1), %cx
    jne next
    movw $AT(done), %si
    call print
#ifdef RESET_WHEN_DONE
    movb $0xfe, %al
    outb %al, $0x64
#endif
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
