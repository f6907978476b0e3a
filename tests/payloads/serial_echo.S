/* SPDX-License-Identifier: Apache-2.0 */
/* Waits for a byte on COM1 (polling the line status register) and exits
 * the VM with that byte as the code: proves host input reaches the UART. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
wait:
    movw $COM1+5, %dx
    inb %dx, %al
    testb $1, %al
    jz wait
    movw $COM1, %dx
    inb %dx, %al
    movw $DEBUG_EXIT, %dx
    outb %al, %dx
1:  hlt
    jmp 1b
    RESET_VECTOR
