/* The ceiling server of the trio-obs benchmarks: the floor of any design on this machine.
 *
 * One thread, epoll, non-blocking sockets. It accepts WebSocket clients on a loopback
 * port (any GET with a Sec-WebSocket-Key is upgraded), greets each with one
 * `observability:connected` text frame, and, on EMIT, builds each event's frame ONCE
 * (the same ~400-byte `tool:output` JSON as the other servers, its chunk stamped with
 * the event's scheduled CLOCK_MONOTONIC time) and writes it to every connected socket.
 * It is paced by a timerfd armed at the next scheduled time, so no thread and no
 * timer grain stand between the schedule and the write. Overdue events (at most 200)
 * go out together: one write per socket per wake-up, which is what the best possible
 * design does when it is behind. What a socket cannot take now waits in that
 * connection's buffer (EPOLLOUT); a frame is never cut.
 *
 * Same control protocol as the other benchmark servers, on stdin/stdout:
 *   prints READY <port> once listening;
 *   COUNT                                    -> COUNT <n>   (upgraded connections)
 *   EMIT <run> <rate> <count> <max_seconds>  -> EMITTED {"run":..,"emitted":..,...}
 *   QUIT (or end of input)                   -> exits
 * Built by the benchmark itself: cc -O2 -o ceiling ceiling.c
 * Options: --event-bytes N (400), --max-seconds S (1200, a hard lifetime limit).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 200
#define MAX_EVENTS 256
#define HEAD_MAX 16384

/* ------------------------------------------------------------------ SHA-1 (RFC 3174) */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *buf = calloc(total, 1);
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) buf[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)buf[off + 4 * i] << 24 | (uint32_t)buf[off + 4 * i + 1] << 16 |
                   (uint32_t)buf[off + 4 * i + 2] << 8 | buf[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(buf);
    for (int i = 0; i < 20; i++) out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < len ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? t[v & 63] : '=';
    }
    out[o] = 0;
}

/* ------------------------------------------------------------------ connections */

typedef struct Conn {
    int fd;
    int upgraded;
    int dead; /* dropped: freed after this round of events */
    char *head; /* the request head while handshaking */
    size_t head_len;
    char *out; /* bytes the socket could not take yet */
    size_t out_len, out_cap, out_off;
    struct Conn *prev, *next; /* upgraded connections, a doubly linked list */
} Conn;

static int ep, listener, timer;
static Conn *live;
static long live_count;
static Conn *graveyard; /* dropped connections, linked by `next`, freed between rounds */
static int event_bytes = 400;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void say(const char *line) {
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void drop(Conn *c) {
    if (c->dead) return;
    c->dead = 1;
    if (c->upgraded) {
        if (c->prev) c->prev->next = c->next;
        else live = c->next;
        if (c->next) c->next->prev = c->prev;
        live_count--;
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->next = graveyard;
    graveyard = c;
}

static void bury(void) {
    while (graveyard) {
        Conn *c = graveyard;
        graveyard = c->next;
        free(c->head);
        free(c->out);
        free(c);
    }
}

static void watch_out(Conn *c, int on) {
    struct epoll_event e = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Write `data` after whatever is queued; queue what the socket cannot take. 0 if dropped. */
static int send_bytes(Conn *c, const char *data, size_t len) {
    if (c->dead) return 0;
    if (c->out_len == c->out_off) {
        while (len) {
            ssize_t n = write(c->fd, data, len);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0) {
                drop(c);
                return 0;
            }
            data += n;
            len -= (size_t)n;
        }
        if (!len) return 1;
        c->out_len = c->out_off = 0;
        watch_out(c, 1);
    }
    if (c->out_len + len > c->out_cap) {
        c->out_cap = (c->out_len + len) * 2;
        c->out = realloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 1;
}

static void flush_out(Conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) {
            drop(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    c->out_len = c->out_off = 0;
    watch_out(c, 0);
}

/* A server-to-client text frame (unmasked) of `len` payload bytes into `out`. */
static size_t frame_header(unsigned char *out, size_t len) {
    out[0] = 0x81;
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126, out[2] = (unsigned char)(len >> 8), out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

static void iso_now(char *out, size_t size) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void upgrade(Conn *c) {
    char *key = strcasestr(c->head, "\r\nSec-WebSocket-Key:");
    if (!key) {
        const char *no = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        if (write(c->fd, no, strlen(no)) < 0) { /* dropped below anyway */ }
        drop(c);
        return;
    }
    key += strlen("\r\nSec-WebSocket-Key:");
    while (*key == ' ') key++;
    size_t klen = strcspn(key, "\r\n ");
    char joined[128];
    snprintf(joined, sizeof joined, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)klen, key);
    unsigned char digest[20];
    char accept[32];
    sha1((unsigned char *)joined, strlen(joined), digest);
    base64(digest, 20, accept);
    char reply[512];
    int n = snprintf(reply, sizeof reply,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    char ts[40], json[256];
    iso_now(ts, sizeof ts);
    int jn = snprintf(json, sizeof json,
                      "{\"type\":\"observability:connected\",\"executionId\":\"all\","
                      "\"message\":\"Connected to all observability events\","
                      "\"bufferedEventCount\":0,\"timestamp\":\"%s\"}",
                      ts);
    size_t h = frame_header((unsigned char *)reply + n, (size_t)jn);
    memcpy(reply + n + h, json, (size_t)jn);
    free(c->head);
    c->head = NULL;
    c->upgraded = 1;
    c->next = live;
    if (live) live->prev = c;
    live = c;
    live_count++;
    send_bytes(c, reply, (size_t)n + h + (size_t)jn);
}

static void on_readable(Conn *c) {
    char buf[4096];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            drop(c);
            return;
        }
        if (!c->upgraded) {
            if (c->head_len + (size_t)n > HEAD_MAX) {
                drop(c);
                return;
            }
            c->head = realloc(c->head, c->head_len + (size_t)n + 1);
            memcpy(c->head + c->head_len, buf, (size_t)n);
            c->head_len += (size_t)n;
            c->head[c->head_len] = 0;
            if (strstr(c->head, "\r\n\r\n")) {
                upgrade(c);
                return;
            }
        } else if ((buf[0] & 0x0f) == 0x8) {
            /* A close frame: answer it (1000) and close. Anything else is ignored. */
            const char close_frame[] = {(char)0x88, 0x02, 0x03, (char)0xe8};
            send_bytes(c, close_frame, sizeof close_frame);
            drop(c);
            return;
        }
    }
}

/* ------------------------------------------------------------------ the emission */

static struct {
    int active;
    char run[64];
    double rate, t0, deadline, worst_lag;
    long count, emitted, batches, seq;
    int pad;
} em;

static char *batch;
static size_t batch_cap;

static void arm(double at) {
    struct itimerspec its = {0};
    if (at > 0) {
        its.it_value.tv_sec = (time_t)at;
        its.it_value.tv_nsec = (long)((at - floor(at)) * 1e9);
        if (!its.it_value.tv_sec && !its.it_value.tv_nsec) its.it_value.tv_nsec = 1;
    }
    timerfd_settime(timer, TFD_TIMER_ABSTIME, &its, NULL);
}

static size_t event_json(char *out, size_t size, double scheduled, long seq, int pad) {
    char ts[40];
    iso_now(ts, sizeof ts);
    int n = snprintf(out, size,
                     "{\"type\":\"tool:output\",\"executionId\":\"bench-exec\","
                     "\"toolUseId\":\"toolu_bench_0001\",\"chunk\":\"R%s:%.6f:",
                     em.run, scheduled);
    memset(out + n, 'x', (size_t)pad);
    n += pad;
    n += snprintf(out + n, size - (size_t)n, "\",\"isStderr\":false,\"timestamp\":\"%s\",\"seq\":%ld}",
                  ts, seq);
    return (size_t)n;
}

static void finish(void) {
    char line[512];
    snprintf(line, sizeof line,
             "EMITTED {\"run\":\"%s\",\"emitted\":%ld,\"count\":%ld,\"batches\":%ld,"
             "\"worstLagMs\":%.3f,\"seconds\":%.3f}",
             em.run, em.emitted, em.count, em.batches, em.worst_lag * 1000, now_s() - em.t0);
    em.active = 0;
    arm(0);
    say(line);
}

static void emit_due(void) {
    uint64_t expirations;
    if (read(timer, &expirations, sizeof expirations) < 0) { /* spurious: go on */ }
    if (!em.active) return;
    double now = now_s();
    if (now > em.deadline) {
        finish();
        return;
    }
    long due = now >= em.t0 ? (long)floor((now - em.t0) * em.rate) + 1 : 0;
    if (due > em.count) due = em.count;
    if (due > em.emitted + MAX_BATCH) due = em.emitted + MAX_BATCH;
    if (due > em.emitted) {
        double lag = now - (em.t0 + em.emitted / em.rate);
        if (lag > em.worst_lag) em.worst_lag = lag;
        /* Each due event's frame, built once, then one write of them all per socket. */
        size_t need = (size_t)(due - em.emitted) * ((size_t)event_bytes + 512);
        if (need > batch_cap) batch = realloc(batch, batch_cap = need);
        size_t len = 0;
        char json[65536 + 512];
        for (long i = em.emitted; i < due; i++) {
            size_t jn = event_json(json, sizeof json, em.t0 + i / em.rate, ++em.seq, em.pad);
            len += frame_header((unsigned char *)batch + len, jn);
            memcpy(batch + len, json, jn);
            len += jn;
        }
        for (Conn *c = live, *next; c; c = next) {
            next = c->next;
            send_bytes(c, batch, len);
        }
        em.emitted = due;
        em.batches++;
    }
    if (em.emitted >= em.count) finish();
    else arm(em.t0 + em.emitted / em.rate);
}

static int pad_for(void) {
    char probe[1024];
    snprintf(em.run, sizeof em.run, "0");
    size_t n = event_json(probe, sizeof probe, 0.0, 100000, 0);
    return (int)n >= event_bytes ? 0 : event_bytes - (int)n;
}

/* ------------------------------------------------------------------ control */

static char cmd[4096];
static size_t cmd_len;

static void command(char *line) {
    char name[16] = {0}, run[64];
    double rate, max_seconds;
    long count;
    if (sscanf(line, "%15s", name) != 1) return;
    if (!strcmp(name, "COUNT")) {
        char out[64];
        snprintf(out, sizeof out, "COUNT %ld", live_count);
        say(out);
    } else if (!strcmp(name, "EMIT") &&
               sscanf(line, "%*s %63s %lf %ld %lf", run, &rate, &count, &max_seconds) == 4) {
        int pad = pad_for();
        snprintf(em.run, sizeof em.run, "%s", run);
        em.active = 1, em.rate = rate, em.count = count, em.emitted = 0, em.batches = 0;
        em.worst_lag = 0, em.pad = pad;
        em.t0 = now_s() + 0.05;
        em.deadline = em.t0 + max_seconds;
        arm(em.t0);
    } else if (!strcmp(name, "QUIT")) {
        exit(0);
    } else {
        char out[64];
        snprintf(out, sizeof out, "ERROR unknown command %s", name);
        say(out);
    }
}

static void on_stdin(void) {
    ssize_t n = read(0, cmd + cmd_len, sizeof cmd - 1 - cmd_len);
    if (n <= 0) exit(0); /* the runner went away */
    cmd_len += (size_t)n;
    cmd[cmd_len] = 0;
    char *nl;
    while ((nl = memchr(cmd, '\n', cmd_len))) {
        *nl = 0;
        command(cmd);
        size_t used = (size_t)(nl - cmd) + 1;
        memmove(cmd, nl + 1, cmd_len - used);
        cmd_len -= used;
        cmd[cmd_len] = 0;
    }
    if (cmd_len == sizeof cmd - 1) cmd_len = 0; /* an absurd line: forget it */
}

static void on_accept(void) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        Conn *c = calloc(1, sizeof *c);
        c->fd = fd;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    }
}

int main(int argc, char **argv) {
    int max_seconds = 1200;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--event-bytes")) event_bytes = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-seconds")) max_seconds = atoi(argv[++i]);
    }
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)max_seconds);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096) ||
        getsockname(listener, (struct sockaddr *)&addr, &alen)) {
        perror("listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    static int tag_listener, tag_stdin, tag_timer;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &tag_listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &e);
    e.data.ptr = &tag_stdin;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e);
    e.data.ptr = &tag_timer;
    epoll_ctl(ep, EPOLL_CTL_ADD, timer, &e);
    char ready[64];
    snprintf(ready, sizeof ready, "READY %d", ntohs(addr.sin_port));
    say(ready);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &tag_timer) emit_due();
            else if (p == &tag_listener) on_accept();
            else if (p == &tag_stdin) on_stdin();
            else {
                Conn *c = p;
                if (!c->dead && (events[i].events & EPOLLOUT)) flush_out(c);
                if (!c->dead && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
            }
        }
        bury(); /* no event of this round refers to them any more */
    }
}
