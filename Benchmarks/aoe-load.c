/*
 * aoe-load: a small single-threaded AoE (AoEr11) initiator used as the reference load generator for
 * Benchmarks/run.sh. It is not part of the product and shares no code with it.
 *
 *   aoe-load -i IF SHELF.SLOT [--rw randread|randwrite|read|write] [--bs N] [--qd N] [--seconds S]
 *            [--region START:LEN] [--timeout-ms MS] [--seed N]
 *
 * Finds SHELF.SLOT with a broadcast Query Config (learns its MAC, Buffer Count and sectors per frame),
 * reads its size with IDENTIFY DEVICE, then keeps --qd I/Os of --bs bytes in flight for --seconds seconds.
 * Each I/O is split into frames of the target's sectors per frame (capped by the interface MTU); frames are
 * sent and received in batches of up to 32 with sendmmsg/recvmmsg; at most Buffer Count frames are in flight.
 * A frame unanswered after --timeout-ms is sent again with a fresh tag (tags carry bit 31). Prints one JSON
 * line: iops, mbps (10^6 bytes/s), p50_us, p99_us (per-I/O latency), retransmits, errors, and a few details.
 *
 * Build: gcc -O2 -Wall -o aoe-load aoe-load.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ETH_P_AOE 0x88A2
#define HDR 24          /* Ethernet (14) + AoE common header (10) */
#define ATA_HDR 36      /* + ATA argument (12) */
#define BATCH 32
#define MAX_FRAME 9216
#define HIST_US 100000  /* 1 us buckets up to 100 ms, then one overflow bucket */

enum { RANDREAD, RANDWRITE, SEQREAD, SEQWRITE };

struct io {
    uint64_t lba;        /* first sector */
    uint64_t start_ns;   /* when the I/O was issued */
    int frames_left;     /* frames not yet answered */
    int error;           /* some frame got an error */
};

struct frame {
    int io;              /* owning I/O, -1 when the slot is free */
    uint64_t lba;
    int count;           /* sectors */
    int data_off;        /* offset of this frame's data inside the I/O */
    uint32_t tag;        /* current tag (fresh on every send) */
    uint16_t gen;
    uint64_t sent_ns;    /* 0: waiting to be sent */
};

static int sock, ifindex, mtu;
static uint8_t my_mac[6], tgt_mac[6];
static int shelf = -1, slot = -1;
static int rw = RANDREAD, bs = 4096, qd = 1, spf, bufcnt;
static double seconds = 5;
static uint64_t region_start, region_len, timeout_ns = 200000000ull, rng = 0x9E3779B97F4A7C15ull, seq_next;
static struct io *ios;
static struct frame *frames;
static int frames_per_io, nframes, inflight;
static int *pending; static int pend_head, pend_tail, pend_cap;  /* ring of frame indices waiting to be sent */
static uint64_t hist[HIST_US + 1], completed, errors, retransmits, late, bytes_done;
static uint8_t *wbuf;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what) { fprintf(stderr, "aoe-load: %s: %s\n", what, strerror(errno)); exit(1); }
static void fail(const char *msg) { fprintf(stderr, "aoe-load: %s\n", msg); exit(1); }

static uint64_t xorshift(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void put_header(uint8_t *f, int command, uint32_t tag) {
    memcpy(f, tgt_mac, 6);
    memcpy(f + 6, my_mac, 6);
    f[12] = ETH_P_AOE >> 8; f[13] = ETH_P_AOE & 0xff;
    f[14] = 0x10;                 /* version 1, no flags */
    f[15] = 0;                    /* error */
    f[16] = shelf >> 8; f[17] = shelf & 0xff;
    f[18] = slot;
    f[19] = command;
    f[20] = tag >> 24; f[21] = tag >> 16; f[22] = tag >> 8; f[23] = tag;
}

/* ATA argument: aflags, feature, sector count, command/status, lba0..lba5, 2 reserved bytes. */
static int put_ata(uint8_t *f, int aflags, int count, int cmd, uint64_t lba) {
    f[24] = aflags; f[25] = 0; f[26] = count; f[27] = cmd;
    for (int i = 0; i < 6; i++) f[28 + i] = lba >> (8 * i);
    f[34] = f[35] = 0;
    return ATA_HDR;
}

static int pad(uint8_t *f, int len) { if (len < 60) { memset(f + len, 0, 60 - len); len = 60; } return len; }

/* Receives one frame from the target with the response flag and this tag; returns its length or 0. */
static int await_reply(uint8_t *buf, uint32_t tag, int ms) {
    uint64_t end = now_ns() + (uint64_t)ms * 1000000;
    for (;;) {
        int64_t left = (int64_t)(end - now_ns()) / 1000000;
        if (left < 0) return 0;
        struct pollfd p = { sock, POLLIN, 0 };
        if (poll(&p, 1, (int)left + 1) <= 0) continue;
        ssize_t n = recv(sock, buf, MAX_FRAME, MSG_DONTWAIT);
        if (n < HDR) continue;
        uint32_t t = (uint32_t)buf[20] << 24 | buf[21] << 16 | buf[22] << 8 | buf[23];
        if (!(buf[14] & 0x08) || t != tag) continue;
        if (((buf[16] << 8) | buf[17]) != shelf || buf[18] != slot) continue;
        return (int)n;
    }
}

static void discover(void) {
    uint8_t f[MAX_FRAME], r[MAX_FRAME];
    for (int attempt = 0; attempt < 5; attempt++) {
        uint32_t tag = 0x80000000u | (uint32_t)(now_ns() & 0x7fff0000u) | attempt;
        memset(tgt_mac, 0xff, 6);
        put_header(f, 1, tag);
        memset(f + 24, 0, 8);     /* buffer count, firmware, sector count, ver|ccmd 0 (read), string length */
        int len = pad(f, 32);
        if (send(sock, f, len, 0) < 0) die("send query config");
        int n = await_reply(r, tag, 500);
        if (n < 32) continue;
        if (r[14] & 0x04) continue;           /* error flag */
        memcpy(tgt_mac, r + 6, 6);
        bufcnt = r[24] << 8 | r[25];
        spf = r[28];
        int mtu_spf = (mtu - 36) / 512;       /* what the MTU carries: 2 at 1500, 17 at 9000 */
        if (spf == 0 || spf > mtu_spf) spf = mtu_spf;
        if (spf > 255) spf = 255;
        if (bufcnt < 1) bufcnt = 1;
        return;
    }
    fail("no Query Config reply from the target (is it up on this interface?)");
}

static uint64_t identify_sectors(void) {
    uint8_t f[MAX_FRAME], r[MAX_FRAME];
    for (int attempt = 0; attempt < 5; attempt++) {
        uint32_t tag = 0x80000000u | 0x7fff0000u | attempt;
        put_header(f, 0, tag);
        int len = pad(f, put_ata(f, 0, 1, 0xEC, 0));
        if (send(sock, f, len, 0) < 0) die("send identify");
        int n = await_reply(r, tag, 500);
        if (n < ATA_HDR + 512) continue;
        if (r[27] & 0x01) fail("IDENTIFY DEVICE failed (ATA status ERR)");
        const uint8_t *w = r + ATA_HDR;
        uint64_t s48 = 0;
        for (int i = 3; i >= 0; i--) s48 = s48 << 16 | (uint64_t)(w[2 * (100 + i)] | w[2 * (100 + i) + 1] << 8);
        uint64_t s28 = (uint64_t)(w[2 * 60] | w[2 * 60 + 1] << 8) | (uint64_t)(w[2 * 61] | w[2 * 61 + 1] << 8) << 16;
        return s48 ? s48 : s28;
    }
    fail("no IDENTIFY DEVICE reply");
    return 0;
}

static void push_pending(int fi) { pending[pend_tail] = fi; pend_tail = (pend_tail + 1) % pend_cap; }

static void start_io(int i, uint64_t t) {
    uint64_t blocks = region_len / (bs / 512), lba;
    if (rw == RANDREAD || rw == RANDWRITE) {
        lba = region_start + (xorshift() % blocks) * (bs / 512);
    } else {
        lba = region_start + seq_next;
        seq_next += bs / 512;
        if (seq_next + bs / 512 > region_len) seq_next = 0;
    }
    ios[i].lba = lba; ios[i].start_ns = t; ios[i].frames_left = frames_per_io; ios[i].error = 0;
    int sectors = bs / 512;
    for (int k = 0; k < frames_per_io; k++) {
        struct frame *fr = &frames[i * frames_per_io + k];
        int off = k * spf;
        fr->io = i; fr->lba = lba + off; fr->count = sectors - off < spf ? sectors - off : spf;
        fr->data_off = off * 512; fr->sent_ns = 0;
        push_pending(i * frames_per_io + k);
    }
}

static int build_frame(uint8_t *buf, int fi) {
    struct frame *fr = &frames[fi];
    fr->gen = (fr->gen + 1) & 0x7fff;
    fr->tag = 0x80000000u | (uint32_t)fr->gen << 16 | (uint32_t)fi;
    put_header(buf, 0, fr->tag);
    int write = rw == RANDWRITE || rw == SEQWRITE;
    int len = put_ata(buf, 0x40 | (write ? 0x01 : 0), fr->count, write ? 0x34 : 0x24, fr->lba);
    if (write) { memcpy(buf + len, wbuf + fr->data_off, fr->count * 512); len += fr->count * 512; }
    return pad(buf, len);
}

static void usage(void) {
    fprintf(stderr, "usage: aoe-load -i IF SHELF.SLOT [--rw randread|randwrite|read|write] [--bs N] [--qd N]\n"
                    "                [--seconds S] [--region START:LEN] [--timeout-ms MS] [--seed N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *ifname = NULL;
    long long rstart = -1, rlen = -1;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
#define VAL() do { if (!v) usage(); a++; } while (0)
        if (!strcmp(o, "-i") || !strcmp(o, "--interface")) { VAL(); ifname = v; }
        else if (!strcmp(o, "--rw")) {
            VAL();
            if (!strcmp(v, "randread")) rw = RANDREAD; else if (!strcmp(v, "randwrite")) rw = RANDWRITE;
            else if (!strcmp(v, "read")) rw = SEQREAD; else if (!strcmp(v, "write")) rw = SEQWRITE; else usage();
        } else if (!strcmp(o, "--bs")) {
            VAL(); char *e; long n = strtol(v, &e, 10);
            if (*e == 'k' || *e == 'K') n *= 1024; else if (*e == 'm' || *e == 'M') n *= 1048576; else if (*e) usage();
            bs = (int)n;
        } else if (!strcmp(o, "--qd")) { VAL(); qd = atoi(v); }
        else if (!strcmp(o, "--seconds")) { VAL(); seconds = atof(v); }
        else if (!strcmp(o, "--timeout-ms")) { VAL(); timeout_ns = (uint64_t)atoll(v) * 1000000ull; }
        else if (!strcmp(o, "--seed")) { VAL(); rng ^= (uint64_t)atoll(v) * 0x2545F4914F6CDD1Dull; if (!rng) rng = 1; }
        else if (!strcmp(o, "--region")) { VAL(); if (sscanf(v, "%lld:%lld", &rstart, &rlen) != 2) usage(); }
        else if (o[0] != '-' && shelf < 0) { if (sscanf(o, "%d.%d", &shelf, &slot) != 2) usage(); }
        else usage();
    }
    if (!ifname || shelf < 0 || shelf > 65534 || slot < 0 || slot > 254) usage();
    if (bs < 512 || bs % 512 || bs > 16 * 1048576 || qd < 1 || qd > 4096 || seconds <= 0 || timeout_ns == 0) usage();

    sock = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_AOE));
    if (sock < 0) die("socket(AF_PACKET) (needs root or CAP_NET_RAW)");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(sock, SIOCGIFINDEX, &ifr) < 0) die(ifname);
    ifindex = ifr.ifr_ifindex;
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) die("SIOCGIFHWADDR");
    memcpy(my_mac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(sock, SIOCGIFMTU, &ifr) < 0) die("SIOCGIFMTU");
    mtu = ifr.ifr_mtu;
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_AOE), .sll_ifindex = ifindex };
    if (bind(sock, (struct sockaddr *)&sll, sizeof sll) < 0) die("bind");
    int one = 1, big = 8 << 20;
#ifdef PACKET_IGNORE_OUTGOING
    setsockopt(sock, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
#endif
    (void)one;
    if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0) setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0) setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);

    discover();
    uint64_t size = identify_sectors();
    region_start = rstart >= 0 ? (uint64_t)rstart : 0;
    region_len = rlen >= 0 ? (uint64_t)rlen : size - region_start;
    if (region_start + region_len > size) fail("--region goes past the end of the target");
    if (region_len < (uint64_t)bs / 512) fail("region smaller than one block");

    frames_per_io = (bs / 512 + spf - 1) / spf;
    nframes = qd * frames_per_io;
    if (nframes > 65535) fail("--qd x frames per I/O must stay below 65536");
    ios = calloc(qd, sizeof *ios);
    frames = calloc(nframes, sizeof *frames);
    pend_cap = nframes + 1;
    pending = calloc(pend_cap, sizeof *pending);
    wbuf = malloc(bs);
    if (!ios || !frames || !pending || !wbuf) fail("out of memory");
    for (int i = 0; i < bs; i++) wbuf[i] = (uint8_t)(i * 7 + 1);

    static uint8_t txbuf[BATCH][MAX_FRAME], rxbuf[BATCH][MAX_FRAME];
    struct iovec txio[BATCH], rxio[BATCH];
    struct mmsghdr txm[BATCH], rxm[BATCH];
    int txidx[BATCH];
    memset(txm, 0, sizeof txm);
    memset(rxm, 0, sizeof rxm);
    for (int b = 0; b < BATCH; b++) {
        rxio[b].iov_base = rxbuf[b]; rxio[b].iov_len = MAX_FRAME;
        rxm[b].msg_hdr.msg_iov = &rxio[b]; rxm[b].msg_hdr.msg_iovlen = 1;
        txm[b].msg_hdr.msg_iov = &txio[b]; txm[b].msg_hdr.msg_iovlen = 1;
    }

    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(seconds * 1e9), next_scan = t0 + timeout_ns / 4;
    for (int i = 0; i < qd; i++) start_io(i, t0);
    int running = 1;
    uint64_t t_end = deadline;
    while (running) {
        /* Send what is waiting, up to Buffer Count frames in flight. */
        while (pend_head != pend_tail && inflight < bufcnt) {
            int nb = 0;
            while (pend_head != pend_tail && inflight + nb < bufcnt && nb < BATCH) {
                int fi = pending[pend_head];
                pend_head = (pend_head + 1) % pend_cap;
                txidx[nb] = fi;
                txio[nb].iov_base = txbuf[nb];
                txio[nb].iov_len = build_frame(txbuf[nb], fi);
                nb++;
            }
            int sent = 0;
            while (sent < nb) {
                int r = sendmmsg(sock, txm + sent, nb - sent, 0);
                if (r < 0) {
                    if (errno == EINTR) continue;
                    if (errno == ENOBUFS || errno == EAGAIN) { struct timespec ts = { 0, 50000 }; nanosleep(&ts, NULL); continue; }
                    die("sendmmsg");
                }
                sent += r;
            }
            uint64_t t = now_ns();
            for (int b = 0; b < nb; b++) frames[txidx[b]].sent_ns = t;
            inflight += nb;
        }

        /* Wait for replies, at most until the next retransmission scan or the end. */
        uint64_t t = now_ns();
        uint64_t wake = next_scan < deadline ? next_scan : deadline;
        int wait_ms = t >= wake ? 0 : (int)((wake - t + 999999) / 1000000);
        struct pollfd p = { sock, POLLIN, 0 };
        int pr = poll(&p, 1, wait_ms);
        if (pr < 0 && errno != EINTR) die("poll");
        if (pr > 0) {
            int n = recvmmsg(sock, rxm, BATCH, MSG_DONTWAIT, NULL);
            if (n < 0 && errno != EAGAIN && errno != EINTR) die("recvmmsg");
            t = now_ns();
            for (int b = 0; b < n; b++) {
                const uint8_t *r = rxbuf[b];
                int len = (int)rxm[b].msg_len;
                if (len < ATA_HDR || !(r[14] & 0x08) || r[19] != 0) continue;
                if (((r[16] << 8) | r[17]) != shelf || r[18] != slot) continue;
                uint32_t tag = (uint32_t)r[20] << 24 | r[21] << 16 | r[22] << 8 | r[23];
                uint32_t fi = tag & 0xffff;
                if (!(tag & 0x80000000u) || fi >= (uint32_t)nframes) continue;
                struct frame *fr = &frames[fi];
                if (fr->io < 0 || fr->sent_ns == 0 || fr->tag != tag) { late++; continue; }
                struct io *io = &ios[fr->io];
                int write = rw == RANDWRITE || rw == SEQWRITE;
                if ((r[14] & 0x04) || (r[27] & 0x01) || (!write && len < ATA_HDR + fr->count * 512)) io->error = 1;
                fr->sent_ns = 0;
                fr->tag = 0;
                inflight--;
                if (--io->frames_left == 0) {
                    int i = fr->io;
                    if (t <= deadline) {
                        if (io->error) errors++;
                        else {
                            uint64_t us = (t - io->start_ns) / 1000;
                            hist[us < HIST_US ? us : HIST_US]++;
                            completed++;
                            bytes_done += bs;
                        }
                        start_io(i, t);
                    }
                }
            }
        }

        t = now_ns();
        if (t >= deadline) { t_end = deadline; running = 0; break; }
        if (t >= next_scan) {
            /* Retransmit every frame in flight for longer than the timeout, with a fresh tag. */
            int nb = 0;
            for (int fi = 0; fi < nframes; fi++) {
                struct frame *fr = &frames[fi];
                if (fr->sent_ns == 0 || t - fr->sent_ns < timeout_ns) continue;
                txidx[nb] = fi;
                txio[nb].iov_base = txbuf[nb];
                txio[nb].iov_len = build_frame(txbuf[nb], fi);
                nb++;
                retransmits++;
                if (nb == BATCH || fi == nframes - 1) {
                    int sent = 0;
                    while (sent < nb) {
                        int r = sendmmsg(sock, txm + sent, nb - sent, 0);
                        if (r < 0) { if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) continue; die("sendmmsg"); }
                        sent += r;
                    }
                    for (int b = 0; b < nb; b++) frames[txidx[b]].sent_ns = t;
                    nb = 0;
                }
            }
            if (nb) {
                int sent = 0;
                while (sent < nb) {
                    int r = sendmmsg(sock, txm + sent, nb - sent, 0);
                    if (r < 0) { if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) continue; die("sendmmsg"); }
                    sent += r;
                }
                for (int b = 0; b < nb; b++) frames[txidx[b]].sent_ns = t;
            }
            next_scan = t + timeout_ns / 4;
        }
    }

    double secs = (double)(t_end - t0) / 1e9;
    uint64_t p50 = 0, p99 = 0, acc = 0;
    int got50 = 0;
    for (int u = 0; u <= HIST_US && completed; u++) {
        acc += hist[u];
        if (!got50 && acc * 100 >= completed * 50) { p50 = u; got50 = 1; }
        if (acc * 100 >= completed * 99) { p99 = u; break; }
    }
    printf("{\"iops\":%.1f,\"mbps\":%.2f,\"p50_us\":%llu,\"p99_us\":%llu,\"retransmits\":%llu,\"errors\":%llu,"
           "\"ios\":%llu,\"seconds\":%.3f,\"late\":%llu,\"bs\":%d,\"qd\":%d,\"sectors_per_frame\":%d,\"buffer_count\":%d,"
           "\"frames_per_io\":%d,\"sectors\":%llu}\n",
           completed / secs, bytes_done / secs / 1e6, (unsigned long long)p50, (unsigned long long)p99,
           (unsigned long long)retransmits, (unsigned long long)errors, (unsigned long long)completed, secs,
           (unsigned long long)late, bs, qd, spf, bufcnt, frames_per_io, (unsigned long long)size);
    return 0;
}
