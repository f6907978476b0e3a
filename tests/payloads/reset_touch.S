/* SPDX-License-Identifier: Apache-2.0 */
/* Like reset_loop.S, but each boot first writes to every page of the
 * 32 MiB above 1 MiB from 32-bit protected mode, so each boot makes the
 * host back 32 MiB of guest RAM (a VMM that kept an old machine's memory
 * after a reboot would grow by that much each time); then it resets the
 * machine through the keyboard controller. */
#include "payload.h"
#define TOUCH_FROM 0x100000
#define TOUCH_BYTES (32 << 20)
    .code16
    .text
start:
    REAL_MODE_SETUP
    ENTER_PROTECTED_MODE touch
    .code32
touch:
    FLAT_DATA_SEGMENTS
    movl $TOUCH_FROM, %edi
1:  movl %edi, (%edi)
    addl $4096, %edi
    cmpl $(TOUCH_FROM + TOUCH_BYTES), %edi
    jb 1b
    movb $0xfe, %al
    outb %al, $0x64
2:  hlt
    jmp 2b
    GDT_TABLE
    RESET_VECTOR
