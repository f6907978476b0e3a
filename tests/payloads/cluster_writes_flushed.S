/* SPDX-License-Identifier: Apache-2.0 */
/* cluster_writes.S with an ATA FLUSH CACHE after every write. */
#define FLUSH_EACH
#include "cluster_writes.S"
