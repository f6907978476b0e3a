/* SPDX-License-Identifier: Apache-2.0 */
/* A guest that hangs itself: halt with interrupts disabled. */
#include "payload.h"
    .code16
    .text
start:
    REAL_MODE_SETUP
    hlt
    EXIT 0x21
    RESET_VECTOR
