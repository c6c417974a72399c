#ifndef EMB_LMDB_GUARD_H
#define EMB_LMDB_GUARD_H

/* Makes a SIGSEGV or SIGBUS raised inside liblmdb's code (LMDB trusts its file's pages: a
   damaged branch or leaf page can send it through a wild pointer) end the process with exit
   status 3 and a message naming the cause, as LMDB's own failed checks do, instead of a crash.
   A fault anywhere else goes on to the handler installed before (or the default action).
   For processes that only read or write stores, such as the embstore command: it replaces the
   process's handlers for the two signals. Returns 0, or -1 if liblmdb's code was not found. */
int emb_lmdb_guard_install(void);

#endif
