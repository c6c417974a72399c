#ifndef EMBSTORE_FUZZ_DRIVER_H
#define EMBSTORE_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer's driver on `test_one_input` with the process's arguments. SwiftPM links an
/// executable target's `main` to `<Module>_main`, so each fuzz target defines that and calls
/// this instead of relying on libFuzzer's own `main`.
int embstore_fuzz_main(int argc, char **argv, int (*test_one_input)(const uint8_t *data, size_t size));

#endif
