/* SPDX-License-Identifier: Apache-2.0 */
/* Resets the machine at once through the keyboard controller (0xFE to
 * port 0x64), so `nestbox run` boots it again and again: the reboot test
 * watches that the VMM's fds, threads and memory stay flat. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    movb $0xfe, %al
    outb %al, $0x64
1:  hlt
    jmp 1b
    RESET_VECTOR
