// For the Swift implementation of the C API only: not part of the public header.
#ifndef EMBSTORE_INTERNAL_H
#define EMBSTORE_INTERNAL_H
__attribute__((visibility("hidden"))) void embstore_set_error(const char *message);
#endif
