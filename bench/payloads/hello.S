/* SPDX-License-Identifier: Apache-2.0 */
/* The boot benchmark's guest: prints a line on COM1 and exits through the
 * debug-exit port, from the reset vector, with no firmware. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    movw $message, %si
    movw $COM1, %dx
next:
    movb %cs:(%si), %al
    testb %al, %al
    jz done
    outb %al, %dx
    incw %si
    jmp next
done:
    EXIT 0x00
message:
    .asciz "hello from the guest\n"
    RESET_VECTOR
