/* SPDX-License-Identifier: Apache-2.0 */
/* An MSI-X interrupt from a virtio-pci device: the virtio-console at
 * 00:02.0 gets BAR 0 at 0xE0000000, MSI-X enabled with vector 0 aimed at
 * the local APIC as vector 0x51, and both queues set up; transmitq is
 * assigned MSI-X vector 0 (read back to check the device accepted it). A
 * buffer with "msix\n" on transmitq and a notify make the device use it
 * and fire the vector; the IDT handler writes 'M' to the debug console
 * and exits with 0x4D. Failures exit with 0x1x (which step). With no
 * interrupt the guest sleeps in hlt with interrupts on. */
#include "payload.h"

#define PCI_ADDR 0x80001000   /* bus 0, device 2, function 0 */
#define BAR 0xe0000000
#define COMMON BAR
#define NOTIFY (BAR + 0x3000)
#define MSIX_TABLE (BAR + 0x4000)
#define LAPIC 0xfee00000
#define VECTOR 0x51
#define IDT 0x1000
#define TXQ 0x10000           /* desc; avail +0x1000; used +0x2000 */
#define RXQ 0x20000
#define TXBUF 0x30000

    .code16
    .text
start:
    REAL_MODE_SETUP
    ENTER_PROTECTED_MODE pm
    .code32
pm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $0x7000, %esp

    /* The function at 00:02.0 must be a modern virtio-console. */
    movl $PCI_ADDR, %eax
    call cfg_read
    cmpl $0x10431af4, %eax
    jne fail_id
    /* BAR 0, then memory decoding and bus mastering. */
    movl $(PCI_ADDR | 0x10), %eax
    movl $BAR, %ecx
    call cfg_write
    movl $(PCI_ADDR | 0x04), %eax
    movl $0x06, %ecx
    call cfg_write

    /* Walk the capability list for MSI-X (ID 0x11). */
    movl $(PCI_ADDR | 0x34), %eax
    call cfg_read
    movzbl %al, %ebx
find_cap:
    testl %ebx, %ebx
    jz fail_cap
    movl %ebx, %eax
    orl $PCI_ADDR, %eax
    call cfg_read
    cmpb $0x11, %al
    je found_cap
    movzbl %ah, %ebx
    jmp find_cap
found_cap:
    /* Message control (upper half of the dword): set MSI-X enable. */
    shrl $16, %eax
    orl $0x8000, %eax
    shll $16, %eax
    movl %eax, %ecx
    movl %ebx, %eax
    orl $PCI_ADDR, %eax
    call cfg_write

    /* Table entry 0: the BSP's local APIC, fixed vector, unmasked. */
    movl $LAPIC, MSIX_TABLE
    movl $0, MSIX_TABLE + 4
    movl $VECTOR, MSIX_TABLE + 8
    movl $0, MSIX_TABLE + 12

    /* Local APIC software-enabled (spurious vector 0xFF), TPR 0. */
    movl $0x1ff, LAPIC + 0xf0
    movl $0, LAPIC + 0x80
    /* IDT gate for VECTOR: 32-bit interrupt gate to the handler. */
    movl $(IDT + VECTOR * 8), %edi
    movl $(0xf0000 + handler), %eax
    movw %ax, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8e00, 4(%edi)
    shrl $16, %eax
    movw %ax, 6(%edi)
    lidtl 0xf0000 + idt_descriptor

    /* The buffer the device will consume. */
    movl $0x7869736d, TXBUF      /* "msix" */
    movb $0x0a, TXBUF + 4

    /* Virtio: reset, ACKNOWLEDGE | DRIVER, VERSION_1, FEATURES_OK. */
    movb $0, COMMON + 0x14
    movb $3, COMMON + 0x14
    movl $1, COMMON + 0x08
    movl $1, COMMON + 0x0c
    movb $0x0b, COMMON + 0x14
    movb COMMON + 0x14, %al
    testb $0x08, %al
    jz fail_features

    /* Queue 0 (receiveq): set up, no buffers. */
    movw $0, COMMON + 0x16
    movw $8, COMMON + 0x18
    movl $RXQ, COMMON + 0x20
    movl $(RXQ + 0x1000), COMMON + 0x28
    movl $(RXQ + 0x2000), COMMON + 0x30
    movw $1, COMMON + 0x1c
    /* Queue 1 (transmitq) on MSI-X vector 0. */
    movw $1, COMMON + 0x16
    movw $8, COMMON + 0x18
    movw $0, COMMON + 0x1a
    movw COMMON + 0x1a, %ax
    testw %ax, %ax
    jnz fail_vector
    movl $TXQ, COMMON + 0x20
    movl $(TXQ + 0x1000), COMMON + 0x28
    movl $(TXQ + 0x2000), COMMON + 0x30
    movw $1, COMMON + 0x1c
    movb $0x0f, COMMON + 0x14
    movb COMMON + 0x14, %al
    cmpb $0x0f, %al
    jne fail_status

    /* Descriptor 0: the 5-byte buffer; avail ring: one entry, index 0. */
    movl $TXBUF, TXQ
    movl $0, TXQ + 4
    movl $5, TXQ + 8
    movw $0, TXQ + 12
    movw $0, TXQ + 0x1000 + 4
    movw $1, TXQ + 0x1000 + 2

    sti
    movw $1, NOTIFY + 1 * 4
wait:
    hlt
    jmp wait

handler:
    movw $DEBUG_CON, %dx
    movb $'M', %al
    outb %al, %dx
    movl $0, LAPIC + 0xb0       /* end of interrupt */
    EXIT 0x4d

fail_id:
    EXIT 0x11
fail_cap:
    EXIT 0x12
fail_features:
    EXIT 0x13
fail_vector:
    EXIT 0x14
fail_status:
    EXIT 0x15

/* Reads the configuration dword at address %eax into %eax. */
cfg_read:
    movw $0xcf8, %dx
    outl %eax, %dx
    movw $0xcfc, %dx
    inl %dx, %eax
    ret

/* Writes %ecx to the configuration dword at address %eax. */
cfg_write:
    movw $0xcf8, %dx
    outl %eax, %dx
    movw $0xcfc, %dx
    movl %ecx, %eax
    outl %eax, %dx
    ret

    .balign 8
idt_descriptor:
    .word VECTOR * 8 + 7
    .long IDT
    .code16
    GDT_TABLE
    RESET_VECTOR
