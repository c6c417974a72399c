// emb_lmdb_guard_install: see include/lmdb_guard.h.
#define _GNU_SOURCE
#include "lmdb_guard.h"

#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>
#include <lmdb.h>

// liblmdb's executable segments (at most a few), found once at install.
static struct { uintptr_t start, end; } text[4];
static int text_count;
static struct sigaction previous_segv, previous_bus;

static int find_lmdb(struct dl_phdr_info *info, size_t size, void *unused) {
    (void)size; (void)unused;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "liblmdb")) return 0;
    for (int i = 0; i < info->dlpi_phnum && text_count < 4; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        if (segment->p_type == PT_LOAD && (segment->p_flags & PF_X)) {
            text[text_count].start = info->dlpi_addr + segment->p_vaddr;
            text[text_count].end = text[text_count].start + segment->p_memsz;
            text_count++;
        }
    }
    return 1;
}

static uintptr_t fault_pc(void *context) {
    const ucontext_t *uc = context;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

static void handler(int signal_number, siginfo_t *info, void *context) {
    uintptr_t pc = fault_pc(context);
    for (int i = 0; i < text_count; i++) {
        if (pc >= text[i].start && pc < text[i].end) {
            static const char message[] =
                "Error: LMDB crashed reading a damaged page of the store (a wild pointer in liblmdb); "
                "the store is damaged: run `embstore verify` on a copy, or restore it from one\n";
            ssize_t ignored = write(2, message, sizeof message - 1);
            (void)ignored;
            _exit(3);
        }
    }
    // Not LMDB's: hand the signal to whoever handled it before; the fault repeats on return.
    const struct sigaction *before = signal_number == SIGSEGV ? &previous_segv : &previous_bus;
    sigaction(signal_number, before, NULL);
    if (!(before->sa_flags & SA_SIGINFO) && before->sa_handler == SIG_IGN) signal(signal_number, SIG_DFL);
    (void)info;
}

int emb_lmdb_guard_install(void) {
    (void)mdb_version(NULL, NULL, NULL);   // liblmdb is loaded: the program links it
    text_count = 0;
    dl_iterate_phdr(find_lmdb, NULL);
    if (text_count == 0) return -1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handler;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous_segv);
    sigaction(SIGBUS, &action, &previous_bus);
    return 0;
}
