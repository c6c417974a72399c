// The calling thread's last error message, for embstore_last_error. The Swift side sets it
// through embstore_set_error (not in the public header); each thread has its own.
#include <stdlib.h>
#include <string.h>
#include "embstore.h"
#include "embstore_internal.h"

static _Thread_local char *last_error = NULL;

const char *embstore_last_error(void) {
    return last_error ? last_error : "";
}

void embstore_set_error(const char *message) {
    free(last_error);
    last_error = message ? strdup(message) : NULL;
}
