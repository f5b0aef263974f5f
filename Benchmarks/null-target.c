/*
 * null-target: the smallest AoE (AoEr11) target that batches, the plain-socket reference for Benchmarks/run.sh
 * (row "cnull"). It is not part of the product and shares no code with it.
 *
 *   null-target IF SHELF SLOT [--sectors N] [--buffers N]
 *
 * One thread, one AF_PACKET socket bound to IF: recvmmsg (up to 32 frames, blocking for the first), every
 * frame answered in place, sendmmsg of the batch. Reads return zeros, writes are discarded, IDENTIFY DEVICE
 * reports --sectors (default 8 GiB worth), FLUSH and anything else succeed; Query Config (read) is answered
 * with --buffers (default 256) and the sectors per frame the MTU allows. No ordering, no state, no device:
 * what is left is the cost of the packet path itself, which aoe-target's null: export is measured against.
 *
 * Build: gcc -O2 -Wall -o null-target null-target.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define ETH_P_AOE 0x88A2
#define ATA_HDR 36      /* Ethernet (14) + AoE common header (10) + ATA argument (12) */
#define BATCH 32
#define MAX_FRAME 9216

static volatile sig_atomic_t stopping;
static void on_signal(int s) { (void)s; stopping = 1; }
static void die(const char *what) { fprintf(stderr, "null-target: %s: %s\n", what, strerror(errno)); exit(1); }
static void usage(void) { fprintf(stderr, "usage: null-target IF SHELF SLOT [--sectors N] [--buffers N]\n"); exit(2); }

static uint8_t my_mac[6], identify[512];
static int shelf, slot, buffers = 256, spf;

static void put16le(uint8_t *p, unsigned v) { p[0] = v; p[1] = v >> 8; }

/* The words an initiator reads: LBA and LBA48 support, the 28- and 48-bit capacities, FLUSH CACHE (EXT). */
static void build_identify(uint64_t sectors) {
    put16le(identify + 2 * 49, 1 << 9);
    uint32_t lba28 = sectors > 0x0fffffff ? 0x0fffffff : (uint32_t)sectors;
    put16le(identify + 2 * 60, lba28 & 0xffff);
    put16le(identify + 2 * 61, lba28 >> 16);
    put16le(identify + 2 * 83, 1 << 14 | 1 << 13 | 1 << 12 | 1 << 10);
    put16le(identify + 2 * 86, 1 << 13 | 1 << 12 | 1 << 10);
    for (int i = 0; i < 4; i++) put16le(identify + 2 * (100 + i), (unsigned)(sectors >> (16 * i)) & 0xffff);
}

/* Turns the request in f (n bytes) into its reply; returns the reply's length, or 0 to stay silent. */
static int answer(uint8_t *f, int n) {
    if (n < 24 || f[12] != 0x88 || f[13] != 0xA2) return 0;
    int broadcast = !memcmp(f, "\xff\xff\xff\xff\xff\xff", 6);
    if (!broadcast && memcmp(f, my_mac, 6)) return 0;
    if ((f[14] >> 4) != 1 || (f[14] & 0x08)) return 0;                  /* version 1, requests only */
    int major = f[16] << 8 | f[17], minor = f[18];
    if ((major != shelf && major != 0xffff) || (minor != slot && minor != 0xff)) return 0;
    memcpy(f, f + 6, 6);
    memcpy(f + 6, my_mac, 6);
    f[14] |= 0x08;
    f[15] = 0;
    f[16] = shelf >> 8; f[17] = shelf; f[18] = slot;
    int len;
    if (f[19] == 0) {                                                   /* ATA */
        if (n < ATA_HDR) return 0;
        int cmd = f[27], count = f[26];
        len = ATA_HDR;
        if (cmd == 0xEC) { memcpy(f + ATA_HDR, identify, 512); len += 512; }
        else if (!(f[24] & 0x01) && (cmd == 0x20 || cmd == 0x24) && count <= spf) {
            memset(f + ATA_HDR, 0, count * 512);
            len += count * 512;
        }
        f[25] = 0;                                                      /* error */
        f[27] = 0x40;                                                   /* status: DRDY */
    } else if (f[19] == 1) {                                            /* Query Config, read */
        if (n < 32 || (f[29] & 0x0f) != 0) return 0;
        f[24] = buffers >> 8; f[25] = buffers;
        f[26] = 0; f[27] = 1;                                           /* firmware */
        f[28] = spf;
        f[29] = 0x10;                                                   /* AoE version 1, ccmd read */
        f[30] = f[31] = 0;                                              /* no config string */
        len = 32;
    } else {
        f[14] |= 0x04;                                                  /* E: unrecognized command */
        f[15] = 1;
        len = n < 60 ? n : 60;
    }
    if (len < 60) { memset(f + len, 0, 60 - len); len = 60; }
    return len;
}

int main(int argc, char **argv) {
    if (argc < 4) usage();
    const char *ifname = argv[1];
    shelf = atoi(argv[2]); slot = atoi(argv[3]);
    unsigned long long sectors = 8ull << 21;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--sectors") && i + 1 < argc) sectors = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--buffers") && i + 1 < argc) buffers = atoi(argv[++i]);
        else usage();
    }
    if (shelf < 0 || shelf > 65534 || slot < 0 || slot > 254 || buffers < 1 || buffers > 65535 || sectors == 0) usage();
    build_identify(sectors);

    int sock = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_AOE));
    if (sock < 0) die("socket(AF_PACKET) (needs root or CAP_NET_RAW)");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(sock, SIOCGIFINDEX, &ifr) < 0) die(ifname);
    int ifindex = ifr.ifr_ifindex;
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) die("SIOCGIFHWADDR");
    memcpy(my_mac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(sock, SIOCGIFMTU, &ifr) < 0) die("SIOCGIFMTU");
    spf = (ifr.ifr_mtu + 14 - ATA_HDR) / 512;                          /* whole sectors after the ATA header */
    if (spf > 255) spf = 255;
    if (spf < 1) { errno = EINVAL; die("MTU too small for one sector"); }
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_AOE), .sll_ifindex = ifindex };
    if (bind(sock, (struct sockaddr *)&sll, sizeof sll) < 0) die("bind");
    int one = 1, big = 8 << 20;
    setsockopt(sock, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0) setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0) setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);

    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    static uint8_t bufs[BATCH][MAX_FRAME];
    struct iovec rxv[BATCH], txv[BATCH];
    struct mmsghdr rx[BATCH], tx[BATCH];
    memset(rx, 0, sizeof rx);
    memset(tx, 0, sizeof tx);
    for (int i = 0; i < BATCH; i++) {
        rxv[i] = (struct iovec){ bufs[i], MAX_FRAME };
        rx[i].msg_hdr.msg_iov = &rxv[i];
        rx[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long received = 0, sent = 0;
    fprintf(stderr, "null-target: e%d.%d on %s, %llu sectors, %d sectors per frame, %d buffers\n",
            shelf, slot, ifname, sectors, spf, buffers);
    while (!stopping) {
        int n = recvmmsg(sock, rx, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) { if (errno == EINTR) continue; die("recvmmsg"); }
        received += n;
        int m = 0;
        for (int i = 0; i < n; i++) {
            int len = answer(bufs[i], (int)rx[i].msg_len);
            if (len == 0) continue;
            txv[m] = (struct iovec){ bufs[i], (size_t)len };
            tx[m].msg_hdr.msg_iov = &txv[m];
            tx[m].msg_hdr.msg_iovlen = 1;
            m++;
        }
        for (int done = 0; done < m;) {
            int r = sendmmsg(sock, tx + done, m - done, 0);
            if (r < 0) { if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) continue; die("sendmmsg"); }
            done += r;
            sent += r;
        }
    }
    fprintf(stderr, "null-target: stopping; frames received %llu, sent %llu\n", received, sent);
    return 0;
}
