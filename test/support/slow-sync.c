// Loaded with LD_PRELOAD into a server under test: every fdatasync and fsync
// of the process first sleeps SLOW_SYNC_MS milliseconds, as on a slow disk.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow_down(void) {
  const char *value = getenv("SLOW_SYNC_MS");
  long ms = value ? atol(value) : 0;
  struct timespec pause = { ms / 1000, (ms % 1000) * 1000000L };
  if (ms > 0) nanosleep(&pause, NULL);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  slow_down();
  return real(fd);
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  slow_down();
  return real(fd);
}
