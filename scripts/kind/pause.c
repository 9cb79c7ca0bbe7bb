/* The sandbox process of every pod in Swell's kind node image (registry.k8s.io/pause cannot be pulled
 * here). It only has to exist: it holds the pod's namespaces, reaps the zombies it inherits as pid 1,
 * and exits on SIGINT/SIGTERM so that a pod stops promptly. Built static by scripts/kind/build.sh. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) {
  (void)signal_number;
  _exit(0);
}

static void reap(int signal_number) {
  (void)signal_number;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = stop;
  if (sigaction(SIGINT, &action, NULL) != 0 || sigaction(SIGTERM, &action, NULL) != 0) return 1;
  action.sa_handler = reap;
  action.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &action, NULL) != 0) return 2;
  for (;;) pause();
}
