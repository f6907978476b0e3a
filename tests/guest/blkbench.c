// SPDX-License-Identifier: Apache-2.0
// The guest side of bench/blk.py: reads a block device with O_DIRECT (no
// guest page cache), first sequentially in 1 MiB requests over its first
// SEQ_MIB MiB, then RANDOM requests of 4 KiB at spread 4 KiB-aligned
// offsets, and prints one NESTBOX-RESULT line with the rates and a
// checksum of what it read (so both VMMs can be checked to serve the same
// bytes). SEQ_MIB past the end of the disk starts over at its beginning. One process does all the requests: a dd per random read would
// measure process start-up under TCG, not the disk.
//   blkbench DEVICE SEQ_MIB RANDOM
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: blkbench DEVICE SEQ_MIB RANDOM\n");
        return 2;
    }
    long seq_mib = atol(argv[2]);
    long random = atol(argv[3]);
    int fd = open(argv[1], O_RDONLY | O_DIRECT);
    if (fd < 0) {
        printf("NESTBOX-RESULT blkbench error=open\n");
        return 1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 1 << 20) {
        printf("NESTBOX-RESULT blkbench error=small-disk\n");
        return 1;
    }
    unsigned char *buf;
    if (posix_memalign((void **)&buf, 4096, 1 << 20) != 0) {
        return 1;
    }
    uint32_t sum = 0;
    double start = now();
    for (long i = 0; i < seq_mib; i++) {
        if (pread(fd, buf, 1 << 20, (off_t)(i % (size >> 20)) << 20) != 1 << 20) {
            printf("NESTBOX-RESULT blkbench error=seq-read\n");
            return 1;
        }
        for (int j = 0; j < 64; j++) {
            sum = sum * 31 + buf[j * 16384];
        }
    }
    double seq_s = now() - start;
    uint64_t x = 12345;
    uint64_t blocks = (uint64_t)size / 4096;
    start = now();
    for (long i = 0; i < random; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        off_t at = (off_t)((x >> 33) % blocks) * 4096;
        if (pread(fd, buf, 4096, at) != 4096) {
            printf("NESTBOX-RESULT blkbench error=random-read\n");
            return 1;
        }
        sum = sum * 31 + buf[(x >> 20) % 4096];
    }
    double rand_s = now() - start;
    printf("NESTBOX-RESULT blkbench seq_mib=%ld seq_s=%.3f seq_mbps=%.1f random=%ld "
           "random_s=%.3f iops=%.0f sum=%08x\n",
           seq_mib, seq_s, seq_mib * 1.048576 / seq_s, random, rand_s, random / rand_s, sum);
    return 0;
}
