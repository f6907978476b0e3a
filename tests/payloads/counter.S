/* SPDX-License-Identifier: Apache-2.0 */
/* Counts forever, writing each value to port 0x5f0, so the host can see
 * whether the vCPU runs (pause, resume and stop tests). */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    xorl %eax, %eax
    movw $0x5f0, %dx
count:
    incl %eax
    outl %eax, %dx
    jmp count
    RESET_VECTOR
