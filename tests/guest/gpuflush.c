// SPDX-License-Identifier: Apache-2.0
// The test guest's screen flusher (bench/gpu_flush.py): takes the first
// connected DRM connector with its preferred mode, shows a dumb buffer of
// that size on it, then for SECONDS repaints the whole buffer in a new
// colour and flushes all of it (DRM_IOCTL_MODE_DIRTYFB: virtio_gpu sends
// TRANSFER_TO_HOST_2D and RESOURCE_FLUSH), one frame every PERIOD_US
// (default 16667, 60 a second) or as fast as the flushes return.
// Prints "NESTBOX-RESULT gpuflush w=W h=H frames=N seconds=S
// flush_p50_us=.. flush_p99_us=.." (the DIRTYFB round trip as the guest
// sees it).
//
// The DRM uapi structures and ioctl numbers are written out here (from the
// kernel's include/uapi/drm/drm.h and drm_mode.h): the host has no
// libdrm or kernel DRM headers installed.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct mode_card_res {
    uint64_t fb_id_ptr, crtc_id_ptr, connector_id_ptr, encoder_id_ptr;
    uint32_t count_fbs, count_crtcs, count_connectors, count_encoders;
    uint32_t min_width, max_width, min_height, max_height;
};

struct mode_modeinfo {
    uint32_t clock;
    uint16_t hdisplay, hsync_start, hsync_end, htotal, hskew;
    uint16_t vdisplay, vsync_start, vsync_end, vtotal, vscan;
    uint32_t vrefresh, flags, type;
    char name[32];
};

struct mode_crtc {
    uint64_t set_connectors_ptr;
    uint32_t count_connectors, crtc_id, fb_id, x, y, gamma_size, mode_valid;
    struct mode_modeinfo mode;
};

struct mode_get_connector {
    uint64_t encoders_ptr, modes_ptr, props_ptr, prop_values_ptr;
    uint32_t count_modes, count_props, count_encoders;
    uint32_t encoder_id, connector_id, connector_type, connector_type_id;
    uint32_t connection, mm_width, mm_height, subpixel, pad;
};

struct mode_fb_cmd {
    uint32_t fb_id, width, height, pitch, bpp, depth, handle;
};

struct mode_fb_dirty_cmd {
    uint32_t fb_id, flags, color, num_clips;
    uint64_t clips_ptr;
};

struct mode_create_dumb {
    uint32_t height, width, bpp, flags, handle, pitch;
    uint64_t size;
};

struct mode_map_dumb {
    uint32_t handle, pad;
    uint64_t offset;
};

#define DRM_IOWR_(nr, type) _IOWR('d', nr, type)
#define IOCTL_GETRESOURCES DRM_IOWR_(0xA0, struct mode_card_res)
#define IOCTL_SETCRTC DRM_IOWR_(0xA2, struct mode_crtc)
#define IOCTL_GETCONNECTOR DRM_IOWR_(0xA7, struct mode_get_connector)
#define IOCTL_ADDFB DRM_IOWR_(0xAE, struct mode_fb_cmd)
#define IOCTL_DIRTYFB DRM_IOWR_(0xB1, struct mode_fb_dirty_cmd)
#define IOCTL_CREATE_DUMB DRM_IOWR_(0xB2, struct mode_create_dumb)
#define IOCTL_MAP_DUMB DRM_IOWR_(0xB3, struct mode_map_dumb)
#define CONNECTED 1

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void fail(const char *what) {
    printf("NESTBOX-RESULT gpuflush error=%s\n", what);
    fflush(stdout);
    exit(1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    double period = argc > 2 ? atof(argv[2]) : 16667;
    int fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        fail("no-card0");

    uint32_t crtcs[8], connectors[8];
    struct mode_card_res res = {0};
    if (ioctl(fd, IOCTL_GETRESOURCES, &res) < 0)
        fail("getresources");
    if (res.count_crtcs == 0 || res.count_connectors == 0)
        fail("no-crtc-or-connector");
    if (res.count_crtcs > 8)
        res.count_crtcs = 8;
    if (res.count_connectors > 8)
        res.count_connectors = 8;
    res.count_fbs = res.count_encoders = 0;
    res.crtc_id_ptr = (uintptr_t)crtcs;
    res.connector_id_ptr = (uintptr_t)connectors;
    if (ioctl(fd, IOCTL_GETRESOURCES, &res) < 0)
        fail("getresources-ids");

    struct mode_modeinfo modes[64];
    struct mode_get_connector conn;
    uint32_t connector = 0;
    for (uint32_t i = 0; i < res.count_connectors && !connector; i++) {
        memset(&conn, 0, sizeof conn);
        conn.connector_id = connectors[i];
        if (ioctl(fd, IOCTL_GETCONNECTOR, &conn) < 0)
            continue;
        if (conn.connection != CONNECTED || conn.count_modes == 0)
            continue;
        if (conn.count_modes > 64)
            conn.count_modes = 64;
        conn.count_props = conn.count_encoders = 0;
        conn.modes_ptr = (uintptr_t)modes;
        if (ioctl(fd, IOCTL_GETCONNECTOR, &conn) == 0)
            connector = connectors[i];
    }
    if (!connector)
        fail("no-connected-connector");
    // The first mode is the preferred one (the host's display size).
    struct mode_modeinfo mode = modes[0];
    uint32_t w = mode.hdisplay, h = mode.vdisplay;

    struct mode_create_dumb dumb = {.height = h, .width = w, .bpp = 32};
    if (ioctl(fd, IOCTL_CREATE_DUMB, &dumb) < 0)
        fail("create-dumb");
    struct mode_map_dumb map = {.handle = dumb.handle};
    if (ioctl(fd, IOCTL_MAP_DUMB, &map) < 0)
        fail("map-dumb");
    uint32_t *pixels = mmap(0, dumb.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, map.offset);
    if (pixels == MAP_FAILED)
        fail("mmap");
    struct mode_fb_cmd fb = {
        .width = w, .height = h, .pitch = dumb.pitch, .bpp = 32, .depth = 24, .handle = dumb.handle};
    if (ioctl(fd, IOCTL_ADDFB, &fb) < 0)
        fail("addfb");
    memset(pixels, 0, dumb.size);
    struct mode_crtc crtc = {
        .set_connectors_ptr = (uintptr_t)&connector,
        .count_connectors = 1,
        .crtc_id = crtcs[0],
        .fb_id = fb.fb_id,
        .mode_valid = 1,
        .mode = mode,
    };
    if (ioctl(fd, IOCTL_SETCRTC, &crtc) < 0)
        fail("setcrtc");
    printf("NESTBOX-GPUFLUSH-SHOWING w=%u h=%u\n", w, h);
    fflush(stdout);

    size_t max_frames = (size_t)(seconds * 1e6 / (period > 1000 ? period : 1000)) + 16;
    double *flush_us = calloc(max_frames, sizeof(double));
    if (!flush_us)
        fail("calloc");
    size_t frames = 0;
    double start = now_us(), next = start;
    while (frames < max_frames && now_us() - start < seconds * 1e6) {
        // A colour no two frames in a row share: every pixel changes.
        uint32_t colour = 0x00101010u * (uint32_t)(frames % 15 + 1);
        size_t words = dumb.size / 4;
        for (size_t i = 0; i < words; i++)
            pixels[i] = colour;
        struct mode_fb_dirty_cmd dirty = {.fb_id = fb.fb_id};
        double t0 = now_us();
        if (ioctl(fd, IOCTL_DIRTYFB, &dirty) < 0)
            fail("dirtyfb");
        flush_us[frames++] = now_us() - t0;
        next += period;
        double wait = next - now_us();
        if (wait > 0)
            usleep((useconds_t)wait);
        else
            next = now_us();
    }
    double elapsed = (now_us() - start) / 1e6;
    qsort(flush_us, frames, sizeof(double), cmp_double);
    printf("NESTBOX-RESULT gpuflush w=%u h=%u frames=%zu seconds=%.2f flush_p50_us=%.0f "
           "flush_p99_us=%.0f\n",
           w, h, frames, elapsed, frames ? flush_us[frames / 2] : 0.0,
           frames ? flush_us[frames * 99 / 100] : 0.0);
    fflush(stdout);
    return 0;
}
