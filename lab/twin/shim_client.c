/* The lab twin's host-command shim client (lab/twin/shim_server.py; see lab/twin/README-host.md).
 *
 * usage: gnc-shim SOCKET ROOT NAME PYTHON PYSHIM [ARG...]
 * Sends ROOT, NAME and the ARGs (NUL-terminated) to the lab's shim server on the unix socket SOCKET and
 * prints its answer ("RC OUTLEN ERRLEN\n" then stdout then stderr); exits with RC. When no server answers
 * (no lab running: a host view used on its own), it runs the Python shim instead: PYTHON PYSHIM ARG...
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) { if (errno == EINTR) continue; return -1; }
        buf += n; len -= (size_t)n;
    }
    return 0;
}

static void fallback(int argc, char **argv) {
    char **args = calloc((size_t)argc, sizeof(char *));
    if (!args) _exit(127);
    args[0] = argv[4];
    args[1] = argv[5];
    for (int i = 6; i < argc; i++) args[i - 4] = argv[i];
    args[argc - 4] = NULL;
    execv(argv[4], args);
    perror("gnc-shim: exec the Python shim");
    _exit(127);
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: gnc-shim SOCKET ROOT NAME PYTHON PYSHIM [ARG...]\n"); return 2; }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (fd < 0 || strlen(argv[1]) >= sizeof addr.sun_path) fallback(argc, argv);
    strcpy(addr.sun_path, argv[1]);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { close(fd); fallback(argc, argv); }
    if (write_all(fd, argv[2], strlen(argv[2]) + 1) || write_all(fd, argv[3], strlen(argv[3]) + 1)) return 125;
    for (int i = 6; i < argc; i++)
        if (write_all(fd, argv[i], strlen(argv[i]) + 1)) return 125;
    shutdown(fd, SHUT_WR);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) return 125;
        if (len == cap) { cap *= 2; buf = realloc(buf, cap); if (!buf) return 125; }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) { if (errno == EINTR) continue; perror("gnc-shim: read"); return 125; }
        if (n == 0) break;
        len += (size_t)n;
    }
    char *nl = memchr(buf, '\n', len);
    int rc; size_t out, err;
    if (!nl || sscanf(buf, "%d %zu %zu", &rc, &out, &err) != 3 || (size_t)(nl + 1 - buf) + out + err != len) {
        fprintf(stderr, "gnc-shim: the shim server's answer is cut or garbled (%zu bytes)\n", len);
        return 125;
    }
    char *body = nl + 1;
    if (write_all(1, body, out) || write_all(2, body + out, err)) return 125;
    return rc;
}
