/* SPDX-License-Identifier: Apache-2.0 */
/* An interrupt through the in-kernel irqchip: the UART's transmit-empty
 * interrupt (IRQ 4, delivered by irqfd) reaches the 8259 PIC, which
 * vectors to our handler; the handler exits the VM with 0x42. If no
 * interrupt arrives the guest sleeps in hlt with interrupts on forever. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    /* IVT entry for vector 0x0C (IRQ 4 with the PIC based at 8). */
    movw $irq_handler, 0x30
    movw $0xf000, 0x32
    /* Initialise the master PIC: edge, cascade, vector base 8, 8086 mode. */
    movb $0x11, %al
    outb %al, $0x20
    movb $0x08, %al
    outb %al, $0x21
    movb $0x04, %al
    outb %al, $0x21
    movb $0x01, %al
    outb %al, $0x21
    movb $0xef, %al        /* unmask IRQ 4 only */
    outb %al, $0x21
    /* UART: interrupt on transmitter empty, OUT2 set. */
    movw $COM1+1, %dx
    movb $0x02, %al
    outb %al, %dx
    movw $COM1+4, %dx
    movb $0x08, %al
    outb %al, %dx
    sti
    movw $COM1, %dx
    movb $'I', %al
    outb %al, %dx
wait:
    hlt
    jmp wait
irq_handler:
    movw $COM1+2, %dx      /* reading IIR acknowledges THR empty */
    inb %dx, %al
    movb $0x20, %al        /* end of interrupt */
    outb %al, $0x20
    EXIT 0x42
    RESET_VECTOR
