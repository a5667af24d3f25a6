/* loadgen: the bench's HTTP/1.1 load generator. One thread, epoll, N keep-alive connections to
 * 127.0.0.1:PORT, one request in flight per connection; response heads parsed, bodies discarded in
 * the kernel (recv MSG_TRUNC: no copy), so the client stays far from saturation at 1 MiB and more.
 *
 *   loadgen PORT PATH CONNECTIONS SECONDS [HEADER]
 *
 * PATH may contain "{n}": each request then gets its own number there (distinct URLs, for misses).
 * HEADER ("Name: value") is added to every request. Prints one JSON line:
 *   {"requests":N,"req_s":..,"mib_s":..,"p50_ms":..,"p99_ms":..,"errors":N}
 * Built by loadtests/bench.py with gcc -O2; the bench pins it to core 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define DISCARD (4 << 20)

enum { IDLE, HEAD, BODY };

struct conn {
    int fd;
    int state;
    size_t head_len;
    long long remaining;
    double started;
    char head[HEAD_MAX];
};

static int port;
static const char *path, *header;
static unsigned long long next_n;
static uint32_t *lat_us;
static size_t lat_len, lat_cap;
static unsigned long long requests, errors, bytes;
static char discard[DISCARD];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void record(double seconds) {
    if (lat_len == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 16;
        lat_us = realloc(lat_us, lat_cap * sizeof *lat_us);
        if (!lat_us) { perror("realloc"); exit(1); }
    }
    lat_us[lat_len++] = (uint32_t)(seconds * 1e6);
}

static int open_conn(int ep, struct conn *c) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) { perror("socket"); return -1; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return -1; }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK); /* after a blocking loopback connect */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->state = IDLE;
    return 0;
}

static int send_request(struct conn *c) {
    char target[2048], req[4096];
    const char *mark = strstr(path, "{n}");
    if (mark)
        snprintf(target, sizeof target, "%.*s%llu%s", (int)(mark - path), path, next_n++, mark + 3);
    else
        snprintf(target, sizeof target, "%s", path);
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s\r\n", target,
                     header ? header : "", header ? "\r\n" : "");
    if (send(c->fd, req, n, MSG_NOSIGNAL) != n) return -1; /* a fresh small request always fits */
    c->state = HEAD;
    c->head_len = 0;
    c->started = now();
    return 0;
}

static void finish(struct conn *c) {
    requests++;
    record(now() - c->started);
    c->state = IDLE;
}

/* Parse the head in c->head; returns 1 when complete, 0 when more is needed, -1 on error. */
static int parse_head(struct conn *c) {
    char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
    if (!end) return c->head_len == HEAD_MAX ? -1 : 0;
    size_t head = end + 4 - c->head;
    int status = atoi(c->head + 9);
    if (status < 200 || status > 299) errors++;
    long long length = -1;
    for (char *line = c->head; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "content-length:", 15) == 0) length = atoll(line + 15);
    }
    if (length < 0) return -1; /* every answer of the bench has a Content-Length */
    c->remaining = length - (long long)(c->head_len - head);
    if (c->remaining < 0) return -1; /* more than one response: no pipelining here */
    c->state = BODY;
    return 1;
}

static int on_readable(struct conn *c) {
    for (;;) {
        ssize_t n;
        if (c->state == HEAD) {
            n = recv(c->fd, c->head + c->head_len, HEAD_MAX - c->head_len, 0);
            if (n > 0) {
                bytes += n;
                c->head_len += n;
                int done = parse_head(c);
                if (done < 0) return -1;
                if (done == 0) continue;
                if (c->remaining == 0) { finish(c); return 0; }
                continue;
            }
        } else if (c->state == BODY) {
            size_t want = c->remaining < DISCARD ? (size_t)c->remaining : DISCARD;
            n = recv(c->fd, discard, want, MSG_TRUNC);
            if (n > 0) {
                bytes += n;
                c->remaining -= n;
                if (c->remaining == 0) { finish(c); return 0; }
                continue;
            }
        } else {
            char b;
            n = recv(c->fd, &b, 1, MSG_PEEK);
            if (n > 0) return -1; /* bytes nobody asked for */
        }
        if (n == 0) return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EINTR) continue;
        return -1;
    }
}

static int cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: loadgen PORT PATH CONNECTIONS SECONDS [HEADER]\n");
        return 2;
    }
    port = atoi(argv[1]);
    path = argv[2];
    int nconn = atoi(argv[3]);
    double seconds = atof(argv[4]);
    header = argc > 5 ? argv[5] : NULL;
    int ep = epoll_create1(0);
    struct conn *conns = calloc(nconn, sizeof *conns);
    for (int i = 0; i < nconn; i++) {
        if (open_conn(ep, &conns[i]) < 0 || send_request(&conns[i]) < 0) return 1;
    }
    double t0 = now(), deadline = t0 + seconds;
    struct epoll_event events[256];
    while (now() < deadline) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (on_readable(c) < 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                if (open_conn(ep, c) < 0) return 1;
            }
            if (c->state == IDLE && now() < deadline && send_request(c) < 0) {
                errors++;
                c->state = IDLE;
            }
        }
    }
    double wall = now() - t0;
    double p50 = 0, p99 = 0;
    if (lat_len) {
        qsort(lat_us, lat_len, sizeof *lat_us, cmp);
        p50 = lat_us[lat_len / 2] / 1e3;
        p99 = lat_us[(size_t)(lat_len * 0.99)] / 1e3;
    }
    printf("{\"requests\":%llu,\"req_s\":%.1f,\"mib_s\":%.2f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"errors\":%llu}\n",
           requests, requests / wall, bytes / wall / 1048576.0, p50, p99, errors);
    return 0;
}
