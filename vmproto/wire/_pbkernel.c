/* C twin of the per-byte and per-packet loops of pcap_block_store containers (spec §9); Python in
 * vmproto/wire/pbkernel.py and its callers stays the reference. Built by vmproto._ckernel (cffi API mode). */
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define VLAN_NOSET 0xFFFEu
#define MAX_CAPLEN 65535u
#define MAX_IP_OFFSET 1000u
#define PLUS 36u

static inline uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

/* Unsigned byte sum and the number of bytes >= 0x80: signed sum = usum - 256 * high. */
void pb_sums(const uint8_t *p, size_t n, uint64_t *usum, uint64_t *high) {
    uint64_t s = 0, h = 0;
    while (n) {
        /* 32-bit partial sums vectorise well; 2^24 bytes cannot overflow them. */
        size_t chunk = n < (1u << 24) ? n : (1u << 24);
        uint32_t cs = 0, ch = 0;
        for (size_t i = 0; i < chunk; i++) { cs += p[i]; ch += p[i] >> 7; }
        s += cs; h += ch; p += chunk; n -= chunk;
    }
    *usum = s; *high = h;
}

/* Ethernet header at off: IP offset and outermost VLAN, 0 when it carries no IP (pktinfo._ether). */
static int eth(const uint8_t *f, uint32_t n, uint32_t off, uint32_t *ip, uint32_t *vlan) {
    if (n < off + 14) return 0;
    uint32_t et = be16(f + off + 12), p = off + 14, v = VLAN_NOSET;
    while ((et == 0x8100 || et == 0x88A8 || et == 0x9100) && n >= p + 4) {
        if (v == VLAN_NOSET) v = be16(f + p) & 0x0FFF;
        et = be16(f + p + 2);
        p += 4;
    }
    if (et == 0x8847 || et == 0x8848) {
        while (n >= p + 4) {
            int bottom = f[p + 2] & 1;
            p += 4;
            if (bottom) break;
        }
        if (n <= p || ((f[p] >> 4) != 4 && (f[p] >> 4) != 6)) return 0;
        *ip = p; *vlan = v; return 1;
    }
    if (et == 0x8864 && n >= p + 8) {
        uint32_t proto = be16(f + p + 6);
        if (proto != 0x0021 && proto != 0x0057) return 0;
        *ip = p + 8; *vlan = v; return 1;
    }
    if (et != 0x0800 && et != 0x86DD) return 0;
    *ip = p; *vlan = v; return 1;
}

/* The IP header to analyse from the one at ip (pktinfo._inner: IPIP, GRE, VXLAN; 3 levels). */
static uint32_t inner(const uint8_t *f, uint32_t n, uint32_t ip, int depth) {
    uint32_t proto, p, ip2, v;
    if (depth >= 3 || n < ip + 20) return ip;
    uint32_t version = f[ip] >> 4;
    if (version == 4) {
        if (be16(f + ip + 6) & 0x3FFF) return ip;
        proto = f[ip + 9];
        p = ip + (f[ip] & 0x0F) * 4;
    } else if (version == 6 && n >= ip + 40) {
        proto = f[ip + 6];
        p = ip + 40;
    } else {
        return ip;
    }
    if ((proto == 4 || proto == 41) && n > p) return inner(f, n, p, depth + 1);
    if (proto == 47 && n >= p + 4) {
        uint32_t flags = f[p], ptype = be16(f + p + 2);
        uint32_t q = p + 4 + 4 * (((flags >> 7) & 1) + ((flags >> 5) & 1) + ((flags >> 4) & 1));
        if ((ptype == 0x0800 || ptype == 0x86DD) && n > q) return inner(f, n, q, depth + 1);
        if (ptype == 0x6558) return eth(f, n, q, &ip2, &v) ? inner(f, n, ip2, depth + 1) : ip;
        return ip;
    }
    if (proto == 17 && n >= p + 16 && be16(f + p + 2) == 4789)
        return eth(f, n, p + 16, &ip2, &v) ? inner(f, n, ip2, depth + 1) : ip;
    return ip;
}

/* pktinfo.frame_offsets: 1 and the three fields, or 0 when the frame is not shipped. */
int pb_offsets(int lt, const uint8_t *f, uint32_t n, uint32_t *encaps, uint32_t *ip_off, uint32_t *vlan) {
    uint32_t v = VLAN_NOSET, outer;
    if (lt == 1) {
        if (!eth(f, n, 0, &outer, &v)) return 0;
    } else if (lt == 12 || lt == 14 || lt == 101 || lt == 228 || lt == 229) {
        outer = 0;
    } else if (lt == 0 || lt == 108) {
        outer = 4;
    } else if (lt == 113) {
        if (n < 16 || (be16(f + 14) != 0x0800 && be16(f + 14) != 0x86DD)) return 0;
        outer = 16;
    } else if (lt == 276) {
        if (n < 20 || (be16(f) != 0x0800 && be16(f) != 0x86DD)) return 0;
        outer = 20;
    } else {
        return 0;
    }
    if (n <= outer || ((f[outer] >> 4) != 4 && (f[outer] >> 4) != 6)) return 0;
    if (outer > MAX_IP_OFFSET) return 0;
    uint32_t in = inner(f, n, outer, 0);
    if (in > MAX_IP_OFFSET) in = outer;
    *encaps = outer; *ip_off = in; *vlan = v;
    return 1;
}

/* Packs frames i.. into out at *pos (36-byte plus header + frame each), appending their offsets, until the area
   reaches maxsize (the packet that reaches it is included) or the batch ends; returns the next frame index.
   out must hold maxsize + 36 + 65535 bytes, offsets maxsize / 36 + 1 entries.
   stats: [0] no_ip drops, [1] too_big drops, [2] captured bytes taken, [3] frames looked at. */
uint32_t pb_pack(const uint8_t *buf, const uint32_t *starts, const uint32_t *ends, const int64_t *ts_ns,
                 const uint32_t *orig_len, uint32_t i, uint32_t n, int linktype, uint32_t maxsize, uint8_t *out,
                 uint32_t *pos, uint32_t *offsets, uint32_t *count, uint64_t *stats) {
    uint32_t at = *pos, c = *count;
    while (i < n && at < maxsize) {
        const uint8_t *f = buf + starts[i];
        uint32_t caplen = ends[i] - starts[i], encaps, ip_off, vlan;
        int64_t ts = ts_ns[i], sec = ts / 1000000000, rem = ts % 1000000000;
        uint32_t olen = orig_len[i];
        i++;
        stats[3]++;
        if (caplen > MAX_CAPLEN) { stats[1]++; continue; }
        if (!pb_offsets(linktype, f, caplen, &encaps, &ip_off, &vlan)) { stats[0]++; continue; }
        if (rem < 0) { rem += 1000000000; sec -= 1; }
        uint8_t *h = out + at;
        memset(h, 0, PLUS);
        put32(h, (uint32_t)((uint64_t)sec & 0xFFFFFFFFu));
        put32(h + 4, (uint32_t)(rem / 1000));
        put32(h + 8, caplen);
        put32(h + 12, olen);
        put16(h + 24, encaps);
        put16(h + 26, ip_off);
        put16(h + 30, (uint32_t)linktype);
        put16(h + 32, vlan);
        memcpy(h + PLUS, f, caplen);
        offsets[c++] = at;
        at += PLUS + caplen;
        stats[2] += caplen;
    }
    *pos = at; *count = c;
    return i;
}

/* 1 when the offsets are strictly increasing (spec section 9.8 row 7). */
int pb_increasing(const uint32_t *offs, uint32_t count) {
    for (uint32_t k = 1; k < count; k++)
        if (offs[k] <= offs[k - 1]) return 0;
    return 1;
}

/* Rows 8-10 of spec section 9.8 on an area whose offsets are strictly increasing and whose last header fits.
   0 = good; 1 = caplen > 65535, 2 = header_ip_offset > 1000 (the value in *value); 3 = layout broken. */
int pb_check_area(const uint8_t *area, uint32_t size, const uint32_t *offs, uint32_t count, uint32_t hdr_size,
                  uint32_t *value) {
    uint64_t expected = 0;
    int layout_ok = 1;
    for (uint32_t k = 0; k < count; k++) {
        uint32_t off = offs[k];
        uint32_t caplen = le32(area + off + 8), ip = le16(area + off + 26);
        if (caplen > MAX_CAPLEN) { *value = caplen; return 1; }
        if (ip > MAX_IP_OFFSET) { *value = ip; return 2; }
        layout_ok = layout_ok && off == expected;
        expected = (uint64_t)off + hdr_size + caplen;
    }
    (void)size;
    return (layout_ok && expected == size) ? 0 : 3;
}

/* Pcap records (sec, ns, caplen, max(len, caplen), data) of packets i.. while their link type (0 = the block's)
   equals that of packet i; returns the next index, adds the bytes to *written, sets *dlink. The area must have
   passed pb_check_area; out needs (16 + caplen) per packet, less than the area itself. */
uint32_t pb_to_pcap(const uint8_t *area, const uint32_t *offs, uint32_t i, uint32_t count, uint32_t hdr_size,
                    uint32_t default_dlink, uint8_t *out, uint64_t *written, uint32_t *dlink) {
    uint64_t w = *written;
    uint32_t first = 0;
    for (; i < count; i++) {
        const uint8_t *h = area + offs[i];
        uint32_t lt = le16(h + 30);
        if (!lt) lt = default_dlink;
        if (w == *written) first = lt;
        else if (lt != first) break;
        uint32_t caplen = le32(h + 8), len = le32(h + 12);
        uint64_t ns = (uint64_t)le32(h) * 1000000000u + (uint64_t)le32(h + 4) * 1000u;
        uint8_t *r = out + w;
        put32(r, (uint32_t)((ns / 1000000000u) & 0xFFFFFFFFu));
        put32(r + 4, (uint32_t)(ns % 1000000000u));
        put32(r + 8, caplen);
        put32(r + 12, len > caplen ? len : caplen);
        memcpy(r + 16, h + hdr_size, caplen);
        w += 16 + caplen;
    }
    *written = w;
    *dlink = first;
    return i;
}
