/* Packet engine kernel: pcap record scanning and the common decode paths, as offsets and fields.
 *
 * The pure-Python decoder (engine.py) is the reference. This kernel only takes a frame when the Python
 * decoder would turn it into exactly one record and touch no counter other than "tunnel.<name>"; for
 * everything else (malformed, truncated, fragments, ARP, ICMP, SCTP, L2TP, HEP, AudioCodes, IPFIX, ...) it
 * marks the frame "slow" and Python decodes it. tests/sensor/decode/test_kernel.py holds both to the same
 * records and counters on random and mutated frames.
 *
 * All offsets are absolute positions in one buffer (a pcap read chunk or the frames of a batch joined),
 * so Python slices the record's bytes straight from that buffer.
 */
#include <stdint.h>
#include <stddef.h>
#include <string.h>

enum {
    VM_T_NONE = 0, VM_T_GRE = 1, VM_T_ERSPAN1 = 2, VM_T_ERSPAN2 = 3, VM_T_ERSPAN3 = 4,
    VM_T_VXLAN = 5, VM_T_TZSP = 6, VM_T_IPIP = 7, VM_T_COUNT = 8
};

/* Bits of vm_cols.uniform: the column holds one value for every record of the batch. */
enum {
    VM_U_VER = 1, VM_U_PROTO = 2, VM_U_SEQ = 4, VM_U_FLAGS = 8, VM_U_VLAN = 16, VM_U_TUNNEL = 32, VM_U_TTL = 64,
    VM_U_TO_END = 128  /* every payload runs to the end of its IP packet */
};

typedef struct {
    uint16_t vxlan_port;       /* 0: off */
    uint16_t tzsp_port;        /* 0: off */
    int32_t ipv6;              /* options.ipv6 */
    int32_t max_depth;         /* options.max_tunnel_depth */
    uint8_t udp_watch[65536];  /* ports that leave Python's fast path for a tunnel check */
    uint8_t tcp_watch[65536];
} vm_cfg;

typedef struct {
    uint32_t *src_off, *dst_off, *dst_end, *ip_off, *ip_end;
    uint32_t *pay_off, *pay_end;  /* relative to ip_off: the payload is ip_packet[pay_off:pay_end] */
    uint32_t *src4, *dst4;     /* IPv4 addresses as numbers (0 for IPv6) */
    uint32_t *seq;
    int32_t *vlan;
    uint16_t *sport, *dport;
    uint8_t *ver, *proto, *ttl, *flags, *tunnel;
    uint32_t uniform;
} vm_cols;

static inline uint32_t rd16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t rd32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint32_t rd32le(const uint8_t *p) {
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}
static inline int is_vlan_tpid(uint32_t et) { return et == 0x8100 || et == 0x88A8 || et == 0x9100; }

/* 802.1Q/QinQ tags from `*off`: the innermost id wins. Returns 0, or -1 when truncated. */
static int vlan_tags(const uint8_t *b, uint64_t *off, uint64_t n, uint32_t *et, int32_t *vlan) {
    while (is_vlan_tpid(*et)) {
        if (*off + 4 > n) return -1;
        *vlan = (int32_t)(rd16(b + *off) & 0xFFF);
        *et = rd16(b + *off + 2);
        *off += 4;
    }
    return 0;
}

/* MPLS label stack: offset after the bottom-of-stack entry, or 0 when truncated (offsets are never 0
 * there: a label stack always follows some header). */
static uint64_t mpls(const uint8_t *b, uint64_t off, uint64_t n) {
    for (;;) {
        if (off + 4 >= n) return 0;
        int bottom = b[off + 2] & 1;
        off += 4;
        if (bottom) return off;
    }
}

/* An Ethernet header at `*off` (engine._ether): sets the L3 offset, ethertype and VLAN id (-1 if none). */
static int ether(const uint8_t *b, uint64_t *off, uint64_t n, uint32_t *et, int32_t *vlan) {
    uint64_t o = *off;
    if (o + 14 > n) return -1;
    *et = rd16(b + o + 12);
    o += 14;
    *vlan = -1;
    if (is_vlan_tpid(*et) && vlan_tags(b, &o, n, et, vlan)) return -1;
    if (*et == 0x8864) {  /* PPPoE session */
        if (o + 8 > n) return -1;
        uint32_t ppp = rd16(b + o + 6);
        o += 8;
        *et = ppp == 0x21 ? 0x0800 : ppp == 0x57 ? 0x86DD : 0;
    } else if (*et == 0x8847 || *et == 0x8848) {
        o = mpls(b, o, n);
        if (!o) return -1;
        *et = (b[o] >> 4) == 6 ? 0x86DD : 0x0800;
    }
    *off = o;
    return 0;
}

/* Offset after an ERSPAN type III header at q, or 0 when truncated. */
static uint64_t erspan3(const uint8_t *b, uint64_t q, uint64_t end) {
    if (q + 12 > end) return 0;
    return q + 12 + ((b[q + 11] & 1) ? 8 : 0);
}

#define SLOW return 0
#define ENTER_TUNNEL(code)                          \
    do {                                            \
        if (depth >= cfg->max_depth) SLOW;          \
        cnt[(code)]++;                              \
        if (!tunnel) tunnel = (code);               \
        depth++;                                    \
    } while (0)

/* One frame [s, e). Returns 1 and fills record slot k when it is a plain one-record case, else 0.
 * `cnt` receives this frame's tunnel counters (the caller commits them only on success). */
static int decode_one(const uint8_t *b, uint64_t s, uint64_t e, int linktype, const vm_cfg *cfg,
                      vm_cols *c, uint32_t k, uint32_t *cnt) {
    uint64_t off, lim = e;
    uint32_t et;
    int32_t vlan = -1;
    int tunnel = VM_T_NONE, depth = 0;

    switch (linktype) {
    case 1:  /* EN10MB */
        off = s;
        if (ether(b, &off, e, &et, &vlan)) SLOW;
        break;
    case 113:  /* LINUX_SLL */
        if (e - s < 16) SLOW;
        et = rd16(b + s + 14);
        off = s + 16;
        if (is_vlan_tpid(et) && vlan_tags(b, &off, e, &et, &vlan)) SLOW;
        break;
    case 276:  /* LINUX_SLL2 */
        if (e - s < 20) SLOW;
        et = rd16(b + s);
        off = s + 20;
        if (is_vlan_tpid(et) && vlan_tags(b, &off, e, &et, &vlan)) SLOW;
        break;
    case 12: case 14: case 101: case 228: case 229:  /* raw IP */
        off = s;
        et = 0x0800;
        break;
    case 0: case 108: {  /* NULL / LOOP */
        if (e - s < 4) SLOW;
        uint32_t fam = rd32(b + s);
        if (linktype == 0 && fam >= 256) fam = rd32le(b + s);
        if (fam == 2) et = 0x0800;
        else if (fam == 10 || fam == 24 || fam == 28 || fam == 30) et = 0x86DD;
        else SLOW;
        off = s + 4;
        break;
    }
    default:
        SLOW;
    }
    if (et != 0x0800 && et != 0x86DD) SLOW;

    for (;;) {
        /* IP header at off, bounded by lim (engine._ip / _ipv4 / _ipv6) */
        uint64_t end, p, src, alen;
        uint32_t proto, ttl, ver;
        if (off >= lim) SLOW;
        ver = b[off] >> 4;
        if (ver == 4) {
            if (off + 20 > lim) SLOW;
            uint32_t ihl = (uint32_t)(b[off] & 15) << 2;
            if (ihl < 20 || off + ihl > lim) SLOW;
            uint32_t tot = rd16(b + off + 2);
            uint32_t frag = rd16(b + off + 6);
            if (tot == 0 || tot < ihl) SLOW;          /* zero length (TSO) is counted by Python */
            end = off + tot;
            if (end > lim) SLOW;                      /* snaplen cut: counted by Python */
            if (frag & 0x3FFF) SLOW;                  /* fragments: Python's reassembler */
            ttl = b[off + 8];
            proto = b[off + 9];
            src = off + 12;
            alen = 4;
            p = off + ihl;
        } else if (ver == 6) {
            if (!cfg->ipv6) SLOW;
            if (off + 40 > lim) SLOW;
            uint32_t plen = rd16(b + off + 4);
            if (plen == 0) SLOW;
            end = off + 40 + plen;
            if (end > lim) SLOW;
            proto = b[off + 6];
            ttl = b[off + 7];
            src = off + 8;
            alen = 16;
            p = off + 40;
            for (;;) {
                if (proto == 0 || proto == 43 || proto == 60 || proto == 135 || proto == 139 || proto == 140 ||
                    proto == 253 || proto == 254 || proto == 51) {
                    if (p + 8 > end) SLOW;
                    uint64_t size = proto == 51 ? ((uint64_t)b[p + 1] + 2) * 4 : ((uint64_t)b[p + 1] + 1) * 8;
                    proto = b[p];
                    p += size;
                    if (p > end) SLOW;
                } else if (proto == 44) {
                    if (p + 8 > end) SLOW;
                    if (rd16(b + p + 2) & 0xFFF9) SLOW;  /* a real fragment */
                    proto = b[p];
                    p += 8;
                } else {
                    break;
                }
            }
        } else {
            SLOW;
        }

        /* transport (engine._l4) */
        if (proto == 17) {
            if (p + 8 > end) SLOW;
            uint32_t sport = rd16(b + p), dport = rd16(b + p + 2), ulen = rd16(b + p + 4);
            if (ulen < 8) SLOW;
            uint64_t pend = p + ulen < end ? p + ulen : end;
            if (cfg->udp_watch[sport] || cfg->udp_watch[dport]) {
                uint64_t q = p + 8;
                if (cfg->vxlan_port && dport == cfg->vxlan_port) {
                    if (pend - q >= 8 + 14 && (b[q] & 0x08)) {
                        ENTER_TUNNEL(VM_T_VXLAN);
                        int32_t v;
                        off = q + 8;
                        if (ether(b, &off, pend, &et, &v)) SLOW;
                        if (v >= 0) vlan = v;
                        if (et != 0x0800 && et != 0x86DD) SLOW;
                        lim = pend;
                        continue;
                    }
                    /* not VXLAN after all: a plain datagram, as in Python */
                } else if (cfg->tzsp_port && (dport == cfg->tzsp_port || sport == cfg->tzsp_port)) {
                    if (pend - q < 5 || b[q] != 1) SLOW;  /* Python tries the next decoder */
                    uint32_t ptype = b[q + 1], encap = rd16(b + q + 2);
                    if (ptype > 1) SLOW;
                    uint64_t r = q + 4;
                    for (;;) {
                        if (r >= pend) SLOW;
                        uint32_t tag = b[r];
                        if (tag == 1) { r++; break; }
                        if (tag == 0) { r++; continue; }
                        if (r + 2 > pend) SLOW;
                        r += 2 + (uint64_t)b[r + 1];
                    }
                    if (encap != 1) SLOW;
                    ENTER_TUNNEL(VM_T_TZSP);
                    int32_t v;
                    off = r;
                    if (ether(b, &off, pend, &et, &v)) SLOW;
                    if (v >= 0) vlan = v;
                    if (et != 0x0800 && et != 0x86DD) SLOW;
                    lim = pend;
                    continue;
                } else {
                    SLOW;  /* L2TP, HEP, AudioCodes: Python */
                }
            }
            c->pay_off[k] = (uint32_t)(p + 8 - off);
            c->pay_end[k] = (uint32_t)(pend - off);
            c->sport[k] = (uint16_t)sport;
            c->dport[k] = (uint16_t)dport;
            c->seq[k] = 0;
            c->flags[k] = 0;
        } else if (proto == 6) {
            if (p + 20 > end) SLOW;
            uint32_t sport = rd16(b + p), dport = rd16(b + p + 2);
            uint32_t doff = (uint32_t)(b[p + 12] >> 4) << 2;
            if (doff < 20 || p + doff > end) SLOW;
            if (cfg->tcp_watch[sport] || cfg->tcp_watch[dport]) SLOW;
            c->pay_off[k] = (uint32_t)(p + doff - off);
            c->pay_end[k] = (uint32_t)(end - off);
            c->sport[k] = (uint16_t)sport;
            c->dport[k] = (uint16_t)dport;
            c->seq[k] = rd32(b + p + 4);
            c->flags[k] = b[p + 13];
        } else if (proto == 4 || proto == 41) {
            ENTER_TUNNEL(VM_T_IPIP);
            off = p;
            lim = end;
            continue;
        } else if (proto == 47) {
            /* GRE (engine._gre); the depth check comes first there too */
            if (depth >= cfg->max_depth) SLOW;
            if (p + 4 > end) SLOW;
            uint32_t gflags = rd16(b + p), gproto = rd16(b + p + 2);
            if (gflags & 7) SLOW;
            if (gflags & 0x4000) SLOW;
            uint64_t q = p + 4 + ((gflags & 0x8000) ? 4 : 0) + ((gflags & 0x2000) ? 4 : 0) +
                         ((gflags & 0x1000) ? 4 : 0);
            if (q > end) SLOW;
            int code, inner_ether;
            if (gproto == 0x0800 || gproto == 0x86DD) {
                code = VM_T_GRE;
                inner_ether = 0;
            } else if (gproto == 0x6558) {
                code = VM_T_GRE;
                inner_ether = 1;
            } else if (gproto == 0x88BE) {
                if (gflags & 0x1000) {
                    if (q + 8 > end) SLOW;
                    if ((b[q] >> 4) == 2) {
                        q = erspan3(b, q, end);
                        if (!q) SLOW;
                        code = VM_T_ERSPAN3;
                    } else {
                        q += 8;
                        code = VM_T_ERSPAN2;
                    }
                } else {
                    code = VM_T_ERSPAN1;
                }
                inner_ether = 1;
            } else if (gproto == 0x22EB) {
                q = erspan3(b, q, end);
                if (!q) SLOW;
                code = VM_T_ERSPAN3;
                inner_ether = 1;
            } else if (gproto == 0x8847 || gproto == 0x8848) {
                q = mpls(b, q, end);
                if (!q) SLOW;
                code = VM_T_GRE;
                inner_ether = 0;
            } else {
                SLOW;
            }
            ENTER_TUNNEL(code);
            off = q;
            lim = end;
            if (inner_ether) {
                int32_t v;
                if (ether(b, &off, end, &et, &v)) SLOW;
                if (v >= 0) vlan = v;
                if (et != 0x0800 && et != 0x86DD) SLOW;
            }
            continue;
        } else {
            SLOW;  /* SCTP, ICMP, other protocols: Python */
        }

        c->ver[k] = (uint8_t)ver;
        c->proto[k] = (uint8_t)proto;
        c->ttl[k] = (uint8_t)ttl;
        c->src_off[k] = (uint32_t)src;
        c->dst_off[k] = (uint32_t)(src + alen);
        c->dst_end[k] = (uint32_t)(src + 2 * alen);
        c->src4[k] = alen == 4 ? rd32(b + src) : 0;
        c->dst4[k] = alen == 4 ? rd32(b + src + 4) : 0;
        c->ip_off[k] = (uint32_t)off;
        c->ip_end[k] = (uint32_t)end;
        c->vlan[k] = vlan;
        c->tunnel[k] = (uint8_t)tunnel;
        return 1;
    }
}

#define UNIFORM(col, bit)                                   \
    do {                                                    \
        uint32_t i_;                                        \
        for (i_ = 1; i_ < k && c->col[i_] == c->col[0]; i_++) \
            ;                                               \
        if (i_ >= k) c->uniform |= (bit);                   \
    } while (0)

/* Decode frames [starts[i], ends[i]) of `b`. status[i] = 1 when frame i became record number
 * (count of earlier 1s), 0 when Python must decode it. Adds tunnel layer counts to counts[VM_T_*].
 * Returns the number of records. */
uint32_t vm_decode(const uint8_t *b, const uint32_t *starts, const uint32_t *ends, uint32_t n, int linktype,
                   const vm_cfg *cfg, vm_cols *c, uint8_t *status, uint32_t *counts) {
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cnt[VM_T_COUNT] = {0};
        uint64_t s = starts[i], e = ends[i];
        if (i + 4 < n) __builtin_prefetch(b + starts[i + 4] + 32);  /* headers of a frame a few ahead */
        if (e < s || !decode_one(b, s, e, linktype, cfg, c, k, cnt)) {
            status[i] = 0;
            continue;
        }
        status[i] = 1;
        k++;
        for (int t = 1; t < VM_T_COUNT; t++) counts[t] += cnt[t];
    }
    c->uniform = 0;
    if (k) {
        UNIFORM(ver, VM_U_VER);
        UNIFORM(proto, VM_U_PROTO);
        UNIFORM(seq, VM_U_SEQ);
        UNIFORM(flags, VM_U_FLAGS);
        UNIFORM(vlan, VM_U_VLAN);
        UNIFORM(tunnel, VM_U_TUNNEL);
        UNIFORM(ttl, VM_U_TTL);
        uint32_t i;
        for (i = 0; i < k && c->pay_end[i] == c->ip_end[i] - c->ip_off[i]; i++)
            ;
        if (i >= k) c->uniform |= VM_U_TO_END;
    }
    return k;
}

/* Classic pcap records from `pos` in d[0, n): at most `cap` of them. Fills the capture time in ns (sec *
 * 1e9 + frac * mult), the frame bounds and the original length. Stops at the first record that does not fit.
 * *next is the offset after the last record taken. Returns the count, or -1 when the record at *next claims
 * more than max_frame bytes and does not fit (a corrupt file, engine-independent: files.py says so too). */
int64_t vm_pcap_scan(const uint8_t *d, uint64_t n, uint64_t pos, int swap, int64_t mult, uint32_t max_frame,
                     uint32_t cap, int64_t *ts, uint32_t *start, uint32_t *end, uint32_t *orig, uint64_t *next) {
    uint32_t k = 0;
    int64_t rc = 0;
    while (k < cap && pos + 16 <= n) {
        const uint8_t *h = d + pos;
        /* Each header's position depends on the previous one, so the walk stalls on memory unless the
         * lines ahead are already on their way (measured: ~110 ns per record without this on a cold chunk). */
        if (pos + 2048 < n) __builtin_prefetch(h + 2048);
        uint32_t sec, frac, incl, len;
        if (swap) {
            sec = rd32(h); frac = rd32(h + 4); incl = rd32(h + 8); len = rd32(h + 12);
        } else {
            sec = rd32le(h); frac = rd32le(h + 4); incl = rd32le(h + 8); len = rd32le(h + 12);
        }
        uint64_t nxt = pos + 16 + (uint64_t)incl;
        if (nxt > n) {
            if (incl > max_frame) rc = -1;
            break;
        }
        ts[k] = (int64_t)sec * 1000000000 + (int64_t)frac * mult;
        start[k] = (uint32_t)(pos + 16);
        end[k] = (uint32_t)nxt;
        orig[k] = len;
        k++;
        pos = nxt;
    }
    *next = pos;
    return rc < 0 ? rc : (int64_t)k;
}
