/* SPDX-License-Identifier: Apache-2.0 */
/* cluster_writes.S that resets the machine once its writes are done. */
#define RESET_WHEN_DONE
#include "cluster_writes.S"
