/* Per-stream RTP statistics and the three simulated jitter buffers, in C.
 *
 * This is a line-for-line twin of the pure-Python model in rtp.py (RtpStream) and jitter.py (FixedBuffer,
 * AdaptiveBuffer, PlayoutChannel); those modules are the reference and the documentation of every rule.
 * The hypothesis test tests/sensor/calls/test_kernel.py drives both with random streams and requires
 * identical results, so any change here must be made there first.
 *
 * Arithmetic notes (what keeps the twin exact):
 * - every integer is int64_t (Python ints never overflow at the magnitudes a capture produces);
 * - Python's // and % on possibly negative values are floor operations: see py_floordiv();
 * - floating-point expressions keep Python's evaluation order and must be compiled without contraction
 *   into fused multiply-adds (-ffp-contract=off) or fast-math.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

#define LOSS_BUCKETS 128
#define MAX_COUNTED_BURST 1024
#define PAUSE_WITHOUT_GAP_MS 1000
#define RES_OK 0
#define RES_DROP 1
#define RES_INTERP 2
#define RES_NOFRAME 3
#define NEVER 2147483647LL
#define HIST 500
#define DROP_PCT 3
#define MAXBUF 20
#define TARGET_EXTRA 40
#define ADJUST_DELAY 40

#define PAYLOAD_TELEVENT 400
#define PT_PCMU 0
#define PT_GSM 3
#define PT_G723 4
#define PT_PCMA 8
#define PT_G722 9
#define PT_G729 18
#define CODEC_ILBC 97
#define MIN_SEQUENTIAL 2
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define SEQ_MOD 65536
#define FT_VOICE 1
#define FT_DTMF 2
#define MOS_INTERVAL_MS 10000
#define MOS_WAIT_PACKETS 20

static i64 py_floordiv(i64 a, i64 b) { /* Python a // b */
    i64 q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
}

static i64 c_truncdiv(i64 a, i64 b) { /* C (truncating) division with Python's abs() form, as jitter._cdiv */
    i64 q = llabs(a) / llabs(b);
    return ((a >= 0) == (b >= 0)) ? q : -q;
}

typedef struct {
    i64 ts, ms, seq;
    int marker, after_voice;
} vm_frame;

/* ---- fixed buffer -------------------------------------------------------------------------------------- */

typedef struct {
    i64 delivery, ts, ms; /* ts may be shifted by a resync; f.ts keeps the frame's own time */
    vm_frame f;
} fx_entry;

typedef struct vm_chan vm_chan;

typedef struct {
    i64 delay, threshold;
    fx_entry *frames;
    int n, cap;
    i64 rxcore, next_delivery;
    int force;
    i64 skew_sum, skew_n;
    vm_chan *chan;
    int oom; /* an allocation failed: results are no longer the model's */
} fixedbuf;

typedef struct {
    i64 max_jb, threshold, max_interp;
    i64 *qts;
    vm_frame *q;
    int qn, qcap;
    i64 hist[HIST]; /* ring, oldest at hist_start */
    int hist_start, hist_n;
    i64 sorted[HIST];
    i64 frames_in, jitter, min, current, target, next_voice_ts, last_voice_ms, silence_begin_ts,
        last_adjustment, last_delay, discont, resync_offset, contig;
    int oom; /* an allocation failed: results are no longer the model's */
} adaptbuf;

struct vm_chan {
    int adaptive;
    i64 delay, threshold;
    int created;
    fixedbuf fb;
    adaptbuf ab;
    i64 loss[LOSS_BUCKETS];
    i64 burst;
    i64 timebase_us;
    int has_timebase, started;
    i64 last_us, last_seqno, last_ms;
    int prev_dtmf;
};

static int vm_grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 32;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, (size_t)nc * size);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static void fb_init(fixedbuf *b, i64 delay, i64 threshold, vm_chan *chan) {
    b->delay = delay;
    b->threshold = threshold;
    b->n = 0;
    b->rxcore = 0;
    b->next_delivery = 0;
    b->force = 0;
    b->skew_sum = 0;
    b->skew_n = 0;
    b->chan = chan;
}

static int fb_put(fixedbuf *b, const vm_frame *f, i64 now, int marker);

static int fb_put_first(fixedbuf *b, const vm_frame *f, i64 now, int marker) {
    b->rxcore = now - f->ts;
    b->next_delivery = now + b->delay;
    return fb_put(b, f, now, marker);
}

static void fb_flush(fixedbuf *b) {
    if (b->n) {
        fx_entry *last = &b->frames[b->n - 1];
        b->next_delivery = last->delivery + last->ms;
        b->n = 0;
    }
}

static int fb_resync(fixedbuf *b, const vm_frame *f, i64 now) {
    if (!b->n) {
        b->force = 0;
        return fb_put_first(b, f, now, 0);
    }
    fx_entry *tail = &b->frames[b->n - 1];
    i64 offset = f->ts - tail->ts - tail->ms;
    if (-b->threshold < offset && offset < b->threshold) {
        if (!b->force) {
            if (b->skew_n > 10 && llabs(c_truncdiv(b->skew_sum, b->skew_n)) > py_floordiv(b->delay, 2)) {
                b->skew_sum = b->skew_n = 0;
                fb_flush(b);
                return fb_put_first(b, f, now, 0);
            }
            if (offset < 0 || now - f->ts < b->rxcore - b->delay) return RES_DROP;
            fb_flush(b);
            return fb_put_first(b, f, now, 0);
        }
        b->force = 0;
        if (offset < 0) return RES_DROP;
        fb_flush(b);
        return fb_put_first(b, f, now, 0);
    }
    b->force = 0;
    b->rxcore -= offset;
    for (int i = 0; i < b->n; i++) b->frames[i].ts += offset;
    return fb_put(b, f, now, 0);
}

static int fb_put(fixedbuf *b, const vm_frame *f, i64 now, int marker) {
    i64 ts = f->ts, ms = f->ms;
    i64 delivery = b->rxcore + b->delay + ts;
    b->skew_sum += ts - (now - b->rxcore);
    b->skew_n += 1;
    if (delivery < b->next_delivery) {
        if (!marker) b->chan->burst += 1;
        int res = fb_resync(b, f, now);
        if (marker) b->rxcore = now - ts;
        return res;
    }
    fx_entry *frames = b->frames;
    int n = b->n;
    if (marker && n) {
        fx_entry *tail = &frames[n - 1];
        i64 k = b->chan->prev_dtmf ? 4 : 2;
        if (ts > tail->ts + tail->ms + tail->ms * k || ts < tail->ts + tail->ms - tail->ms * k) {
            b->force = 1;
            return fb_resync(b, f, now);
        }
    }
    if (delivery > b->next_delivery + b->delay + b->threshold) return fb_resync(b, f, now);
    int i = n;
    while (i && frames[i - 1].delivery > delivery) i--;
    fx_entry *at = i ? &frames[i - 1] : NULL;
    if (b->force || (at != NULL && (at->delivery == delivery || delivery + 10 < at->delivery + at->ms ||
                                    (i < n && delivery + ms > frames[i].delivery)))) {
        int res = fb_resync(b, f, now);
        b->force = 0;
        return res;
    }
    b->force = 0;
    if (vm_grow((void **)&b->frames, &b->cap, n + 1, sizeof(fx_entry))) {
        b->oom = 1;
        return RES_DROP;
    }
    frames = b->frames;
    memmove(&frames[i + 1], &frames[i], (size_t)(n - i) * sizeof(fx_entry));
    frames[i].delivery = delivery;
    frames[i].ts = ts;
    frames[i].ms = ms;
    frames[i].f = *f;
    b->n = n + 1;
    return RES_OK;
}

static int fb_get(fixedbuf *b, i64 now, i64 interp, vm_frame *out) {
    if (now < b->next_delivery) return RES_NOFRAME;
    if (!b->n) {
        b->next_delivery += interp;
        return RES_INTERP;
    }
    fx_entry head = b->frames[0];
    if (now > head.delivery + head.ms) {
        memmove(&b->frames[0], &b->frames[1], (size_t)(b->n - 1) * sizeof(fx_entry));
        b->n--;
        b->next_delivery = head.delivery + head.ms;
        *out = head.f;
        return RES_DROP;
    }
    if (now < head.delivery) {
        b->next_delivery += interp;
        return RES_INTERP;
    }
    memmove(&b->frames[0], &b->frames[1], (size_t)(b->n - 1) * sizeof(fx_entry));
    b->n--;
    b->next_delivery = head.delivery + head.ms;
    *out = head.f;
    return RES_OK;
}

/* ---- adaptive buffer ----------------------------------------------------------------------------------- */

static void ab_reset(adaptbuf *b) {
    b->qn = 0;
    b->hist_start = b->hist_n = 0;
    b->frames_in = 0;
    b->jitter = b->min = 0;
    b->current = b->target = TARGET_EXTRA;
    b->next_voice_ts = 0;
    b->last_voice_ms = 0;
    b->silence_begin_ts = -1;
    b->last_adjustment = 0;
    b->last_delay = 0;
    b->discont = 0;
    b->resync_offset = 0;
    b->contig = 0;
}

static void ab_init(adaptbuf *b, i64 max_jb, i64 threshold, i64 max_interp) {
    b->max_jb = max_jb;
    b->threshold = threshold;
    b->max_interp = max_interp;
    ab_reset(b);
}

/* index of the first element > v (bisect_right) */
static int vm_bisect_right(const i64 *a, int n, i64 v) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v < a[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static int ab_history_put(adaptbuf *b, i64 ts, i64 now) {
    i64 delay = now - (ts - b->resync_offset);
    i64 threshold = 2 * b->jitter + b->threshold;
    if (ts <= 0) return 1;
    if (b->frames_in == 0) {
        b->discont = 0;
        b->hist_n = 0;
        b->hist_start = 0;
        b->resync_offset = ts - now;
        b->last_delay = delay = 0;
    } else if (llabs(delay - b->last_delay) > threshold) {
        b->discont += 1;
        if (b->discont <= 3) return 0;
        b->discont = 0;
        b->hist_n = 0;
        b->hist_start = 0;
        b->resync_offset = ts - now;
        b->last_delay = delay = 0;
    } else {
        b->last_delay = delay;
        b->discont = 0;
    }
    if (b->hist_n == HIST) {
        /* Replace the oldest delay by the new one with one move of the entries between their two places
         * (the same multiset as Python's remove-then-insort, a third of the memory traffic). */
        i64 old = b->hist[b->hist_start];
        b->hist[b->hist_start] = delay;
        b->hist_start = (b->hist_start + 1) % HIST;
        i64 *a = b->sorted;
        int j = vm_bisect_right(a, HIST, old) - 1;
        int k = vm_bisect_right(a, HIST, delay);
        if (k > j) {
            k -= 1;
            memmove(&a[j], &a[j + 1], (size_t)(k - j) * sizeof(i64));
        } else {
            memmove(&a[k + 1], &a[k], (size_t)(j - k) * sizeof(i64));
        }
        a[k] = delay;
        return 1;
    }
    b->hist[(b->hist_start + b->hist_n) % HIST] = delay;
    int j = vm_bisect_right(b->sorted, b->hist_n, delay);
    memmove(&b->sorted[j + 1], &b->sorted[j], (size_t)(b->hist_n - j) * sizeof(i64));
    b->sorted[j] = delay;
    b->hist_n++;
    return 1;
}

static void ab_history_get(adaptbuf *b) {
    int n = b->hist_n;
    if (!n) {
        b->min = b->jitter = 0;
        return;
    }
    int idx = n * DROP_PCT / 100;
    if (idx > MAXBUF - 1) idx = MAXBUF - 1;
    b->min = b->sorted[idx];
    b->jitter = b->sorted[n - 1 - idx] - b->sorted[idx];
}

static int ab_put(adaptbuf *b, const vm_frame *f, i64 now) {
    if ((b->qn ? b->qts[b->qn - 1] - b->qts[0] : 0) >= b->max_jb) return RES_DROP;
    if (!ab_history_put(b, f->ts, now)) return RES_DROP;
    b->frames_in += 1;
    i64 rts = f->ts - b->resync_offset;
    int i = vm_bisect_right(b->qts, b->qn, rts);
    int cap = b->qcap;
    if (vm_grow((void **)&b->qts, &cap, b->qn + 1, sizeof(i64))) {
        b->oom = 1;
        return RES_DROP;
    }
    cap = b->qcap;
    if (vm_grow((void **)&b->q, &cap, b->qn + 1, sizeof(vm_frame))) {
        b->oom = 1;
        return RES_DROP;
    }
    b->qcap = cap;
    memmove(&b->qts[i + 1], &b->qts[i], (size_t)(b->qn - i) * sizeof(i64));
    memmove(&b->q[i + 1], &b->q[i], (size_t)(b->qn - i) * sizeof(vm_frame));
    b->qts[i] = rts;
    b->q[i] = *f;
    b->qn++;
    return RES_OK;
}

static i64 ab_pop(adaptbuf *b, vm_frame *out) {
    i64 ts = b->qts[0];
    *out = b->q[0];
    b->qn--;
    memmove(&b->qts[0], &b->qts[1], (size_t)b->qn * sizeof(i64));
    memmove(&b->q[0], &b->q[1], (size_t)b->qn * sizeof(vm_frame));
    return ts;
}

static int ab_get(adaptbuf *b, i64 now, i64 interp, vm_frame *out) {
    ab_history_get(b);
    b->target = b->jitter + b->min + TARGET_EXTRA;
    if (b->max_jb && b->target - b->min > b->max_jb) b->target = b->min + b->max_jb;
    i64 diff = b->target - b->current;
    i64 *q = b->qts;
    int qn = b->qn;
    if (!b->silence_begin_ts) {
        if (diff > 0 && (b->last_adjustment + ADJUST_DELAY < now || diff > (qn ? q[qn - 1] - q[0] : 0))) {
            b->current += interp;
            b->next_voice_ts += interp;
            b->last_voice_ms = interp;
            b->last_adjustment = now;
            b->contig += 1;
            if (b->max_interp && b->contig >= b->max_interp) b->silence_begin_ts = b->next_voice_ts - b->current;
            return RES_INTERP;
        }
        int have = 0;
        i64 fts = 0;
        if (qn && b->next_voice_ts - b->current >= q[0]) {
            fts = ab_pop(b, out);
            have = 1;
        }
        if (have && fts + b->current < b->next_voice_ts) {
            if (fts + b->current > b->next_voice_ts - b->last_voice_ms) {
                b->next_voice_ts = fts + b->current + out->ms;
                b->contig = 0;
                return RES_OK;
            }
            return RES_DROP;
        }
        if (have && out->ms > 0) b->last_voice_ms = out->ms;
        if (diff < -TARGET_EXTRA &&
            ((!have && b->last_adjustment + 80 < now) || b->last_adjustment + 500 < now)) {
            b->last_adjustment = now;
            b->contig = 0;
            if (have) {
                b->current -= out->ms;
                return RES_DROP;
            }
            b->current -= b->last_voice_ms;
            return RES_NOFRAME;
        }
        if (!have) {
            b->next_voice_ts += interp;
            b->last_voice_ms = interp;
            b->contig += 1;
            if (b->max_interp && b->contig >= b->max_interp) b->silence_begin_ts = b->next_voice_ts - b->current;
            return RES_INTERP;
        }
        b->next_voice_ts += out->ms;
        b->contig = 0;
        return RES_OK;
    }
    if (diff < -TARGET_EXTRA && b->last_adjustment + 10 <= now) {
        b->current -= interp;
        b->last_adjustment = now;
    }
    if (!qn || now - b->current < q[0]) return RES_NOFRAME;
    i64 fts = ab_pop(b, out);
    if (fts < b->silence_begin_ts) return RES_DROP;
    b->current = b->target;
    b->silence_begin_ts = 0;
    b->next_voice_ts = fts + b->current + out->ms;
    b->last_voice_ms = out->ms;
    return RES_OK;
}

static i64 ab_next(adaptbuf *b) {
    if (b->silence_begin_ts) {
        if (!b->qn) return NEVER;
        ab_history_get(b);
        if (b->target - b->current < -TARGET_EXTRA) return b->last_adjustment + 10;
        return b->qts[0] + b->target;
    }
    return b->next_voice_ts;
}

/* ---- playout channel ----------------------------------------------------------------------------------- */

static void chan_init(vm_chan *c, int adaptive, i64 delay, i64 threshold) {
    memset(c, 0, sizeof(*c));
    c->adaptive = adaptive;
    c->delay = delay;
    c->threshold = threshold;
}

static i64 chan_now(vm_chan *c, i64 us) { return py_floordiv(us - c->timebase_us, 1000); }

static void chan_put(vm_chan *c, const vm_frame *f, i64 ts_us) {
    if (f->marker && c->created) {
        if (c->adaptive) ab_reset(&c->ab);
        else c->fb.force = 1;
    }
    if (f->ms < 2 || f->ts < 0) return;
    i64 now = chan_now(c, ts_us);
    if (!c->created) {
        c->created = 1;
        if (c->adaptive) {
            ab_init(&c->ab, c->delay, c->threshold, 10);
            ab_put(&c->ab, f, now);
        } else {
            fb_init(&c->fb, c->delay, c->threshold, c);
            fb_put_first(&c->fb, f, now, f->marker);
        }
        return;
    }
    if (c->adaptive) ab_put(&c->ab, f, now);
    else fb_put(&c->fb, f, now, f->marker);
    c->prev_dtmf = 0;
}

static void chan_get_and_deliver(vm_chan *c, i64 ptime) {
    if (!c->created || c->last_us < c->timebase_us) return;
    i64 now = chan_now(c, c->last_us);
    i64 nxt = c->adaptive ? ab_next(&c->ab) : c->fb.next_delivery;
    if (nxt == NEVER) {
        c->burst += 1;
        return;
    }
    if (now < nxt) return;
    vm_frame f;
    while (now >= nxt) {
        int res = c->adaptive ? ab_get(&c->ab, now, ptime, &f) : fb_get(&c->fb, now, ptime, &f);
        if (res == RES_OK) {
            if (!((((f.seq - c->last_seqno) & 0xFFFFFFFFLL) == 1) && llabs(f.ts - c->last_ms) > ptime) &&
                !f.marker && 0 < c->burst && c->burst < MAX_COUNTED_BURST && f.after_voice) {
                i64 b = c->burst;
                while (b > LOSS_BUCKETS) {
                    c->loss[LOSS_BUCKETS - 1] += 1;
                    b -= LOSS_BUCKETS;
                }
                c->loss[b < LOSS_BUCKETS ? b : LOSS_BUCKETS - 1] += 1;
            }
            c->burst = 0;
            c->last_seqno = f.seq;
            c->last_ms = f.ts;
        } else if (res == RES_NOFRAME) {
            c->burst += 1;
            return;
        } else {
            c->burst += 1;
        }
        nxt = c->adaptive ? ab_next(&c->ab) : c->fb.next_delivery;
    }
}

static void chan_destroy(vm_chan *c) {
    c->created = 0;
    c->has_timebase = 0;
}

static void chan_packet(vm_chan *c, i64 ts_us, i64 frame_ts, i64 prev_frame_ts, i64 seq, i64 last_seq, int marker,
                        int after_voice, i64 ptime) {
    if (ptime <= 1) return;
    if (!c->has_timebase) {
        c->timebase_us = ts_us;
        c->has_timebase = 1;
    }
    if (c->timebase_us == ts_us) c->last_us = ts_us;
    vm_frame f = {frame_ts, ptime, seq, marker, after_voice};
    if (!c->started) {
        if (c->created) {
            if (c->adaptive) ab_reset(&c->ab);
            else c->fb.n = 0;
        }
        c->started = 1;
        c->last_us = ts_us;
        chan_put(c, &f, ts_us);
        return;
    }
    i64 msdiff = py_floordiv(ts_us - (c->last_us + ptime * 1000), 1000);
    if (msdiff > ptime * 10000) {
        c->last_us = ts_us;
        chan_put(c, &f, ts_us);
        return;
    }
    if (msdiff >= PAUSE_WITHOUT_GAP_MS && seq == ((last_seq + 1) & 0xFFFF) && frame_ts > prev_frame_ts &&
        frame_ts - prev_frame_ts == ptime)
        f.marker = 1;
    while (msdiff >= ptime) {
        if (f.marker || !after_voice) c->burst = 0;
        chan_get_and_deliver(c, ptime);
        c->last_us += ptime * 1000;
        msdiff -= ptime;
    }
    chan_put(c, &f, ts_us);
}

/* ---- the stream ---------------------------------------------------------------------------------------- */

typedef struct {
    i64 last_loss[LOSS_BUCKETS];
    i64 last_received;
    i64 minimum;
    double average;
} vm_mos;

typedef struct {
    /* results and state read by Python (see _kernel_build.CDEF) */
    i64 first_time_us, last_time_us;
    i64 ttl_min, ttl_max, ttl_sum, ttl_count;
    i64 codec, first_codec, prev_payload, prev_codec, last_seq;
    int last_markbit, lastframetype;
    i64 samplerate;
    int first;
    i64 base_seq, max_seq, bad_seq, cycles, s_received, probation;
    i64 received, lost, last_lost, slost[11], reordered;
    i64 delay[7]; /* 50 70 90 120 150 200 300 */
    double avgjitter, maxjitter, prevjitter, fdelay, avgdelay, avgdelays[30];
    i64 counter, lvf_ts_us, lvf_timestamp;
    int forcemark2;
    i64 forcemark_used;
    i64 packetization, last_packetization, default_packetization, ptime_iter, change_ptime_iter, last_ts;
    int sid, prev_sid;
    float avg_ptime;
    i64 avg_ptime_count;
    int lastcng;
    i64 last_stamp, timestamp, mos_time_ms, last_save_mos_ms, save_mos_wait;
    i64 rtpmap[32]; /* codec of dynamic payload types 96..127, -1 unknown */
    vm_chan chan[3];
    vm_mos mos[3];
} vm_stream;

typedef struct {
    int padding_len, marker, payload_type;
    i64 seq, timestamp, payload_len;
    int first_payload_byte;
} vm_hdr;

vm_stream *vm_stream_new(void) {
    vm_stream *s = calloc(1, sizeof(vm_stream));
    if (!s) return NULL;
    s->ttl_min = s->ttl_max = -1;
    s->codec = s->first_codec = s->prev_payload = s->prev_codec = s->last_seq = -1;
    s->samplerate = 8000;
    s->first = 1;
    s->default_packetization = 20;
    for (int i = 0; i < 32; i++) s->rtpmap[i] = -1;
    chan_init(&s->chan[0], 0, 50, 100);
    chan_init(&s->chan[1], 0, 200, 200);
    chan_init(&s->chan[2], 1, 500, 500);
    for (int i = 0; i < 3; i++) s->mos[i].minimum = 45;
    return s;
}

void vm_stream_free(vm_stream *s) {
    if (!s) return;
    for (int i = 0; i < 3; i++) {
        free(s->chan[i].fb.frames);
        free(s->chan[i].ab.qts);
        free(s->chan[i].ab.q);
    }
    free(s);
}

static i64 samplerate_of(i64 codec) {
    switch (codec) {
    case 303: case 313: case 339: case 345: case 332: return 12000;
    case 307: case 304: case 314: case 340: case 346: case 333: case 321: case 359: return 16000;
    case 305: case 315: case 341: case 347: case 334: return 24000;
    case 308: case 335: return 32000;
    case 316: case 342: case 348: case 336: return 48000;
    default: return 8000;
    }
}

static i64 g723_ptime(i64 plen, i64 dflt) {
    return plen == 24 ? 30 : plen == 48 ? 60 : plen == 72 ? 90 : dflt;
}

static i64 g729_ptime(i64 plen, i64 ts_delta) {
    return (plen == 10 || plen == 20 || plen == 30 || plen == 40 || plen == 50 || plen == 60) ? plen
                                                                                           : py_floordiv(ts_delta, 8);
}

static void restart_playout(vm_stream *s) {
    for (int i = 0; i < 3; i++) chan_destroy(&s->chan[i]);
}

static void rebase(vm_stream *s, i64 seq) {
    s->cycles = s->cycles - s->base_seq + s->max_seq;
    s->base_seq = seq;
    s->max_seq = seq;
}

static void init_seq(vm_stream *s, i64 seq) {
    s->base_seq = seq;
    s->max_seq = seq;
    s->bad_seq = SEQ_MOD + 1;
    s->cycles = 0;
    s->s_received = 0;
    s->fdelay = 0.0;
    s->prevjitter = 0.0;
}

static int update_seq(vm_stream *s, i64 seq, i64 ts_us) {
    i64 lost = (s->cycles + seq - (s->base_seq + 1)) - s->s_received;
    if (lost - s->last_lost > 200 && fabs(trunc((double)(ts_us - s->lvf_ts_us) / 1000.0)) < 1000) rebase(s, seq);
    if (s->first) {
        s->first = 0;
        s->last_stamp = s->timestamp;
        init_seq(s, seq);
        s->max_seq = (seq - 1) & 0xFFFF;
        s->probation = MIN_SEQUENTIAL;
        return 0;
    }
    i64 udelta = (seq - s->max_seq) & 0xFFFF;
    if (s->probation) {
        if (seq == s->max_seq + 1) {
            s->probation -= 1;
            s->max_seq = seq;
            if (s->probation == 0) {
                init_seq(s, seq);
                s->s_received += 1;
                s->received += 1;
                return 1;
            }
        } else {
            s->probation = MIN_SEQUENTIAL - 1;
            s->max_seq = seq;
        }
        return 0;
    }
    if (udelta < MAX_DROPOUT) {
        if (seq < s->max_seq) s->cycles += SEQ_MOD;
        s->max_seq = seq;
    } else if (udelta <= SEQ_MOD - MAX_MISORDER) {
        if (seq == s->bad_seq) {
            init_seq(s, seq);
        } else {
            s->bad_seq = (seq + 1) & (SEQ_MOD - 1);
            return 0;
        }
    }
    s->received += 1;
    s->s_received += 1;
    return 1;
}

static void update_stats(vm_stream *s, i64 ts_us, i64 timestamp) {
    i64 lost = (s->cycles + s->max_seq - (s->base_seq + 1)) - s->s_received;
    if (lost < 0) {
        s->cycles += -lost;
        lost = 0;
    }
    i64 adelay = 0;
    double tsdiff_ms = (double)(ts_us - s->lvf_ts_us) / 1000.0;
    double transit = tsdiff_ms - (double)(timestamp - s->lvf_timestamp) / ((double)s->samplerate / 1000.0);
    if (s->codec == PAYLOAD_TELEVENT || s->lastframetype == FT_DTMF) {
        if (s->codec != PAYLOAD_TELEVENT && s->lvf_ts_us == 0) {
            s->lvf_ts_us = ts_us;
            s->lvf_timestamp = timestamp;
            return; /* keeps forcemark2 */
        }
        s->forcemark2 = 0;
        return;
    }
    double tt = fabs(trunc(transit));
    if (tt > 5000) {
        s->fdelay = s->avgdelay;
        transit = 0.0;
    } else {
        adelay = (i64)tt;
        s->fdelay += transit;
    }
    if (s->lvf_ts_us == 0) {
        s->lvf_ts_us = ts_us;
        s->lvf_timestamp = timestamp;
        s->forcemark2 = 0;
        return;
    }
    s->lvf_ts_us = ts_us;
    s->lvf_timestamp = timestamp;
    i64 n = s->counter;
    if (n > 30)
        s->avgdelay = (30 * s->avgdelay - s->avgdelays[n % 30] + s->fdelay) / 30;
    else
        s->avgdelay = (s->avgdelay * (double)n + s->fdelay) / (double)(n + 1);
    s->avgdelays[n % 30] = s->fdelay;
    double jitter = s->prevjitter + (fabs(transit) - s->prevjitter) / 16.0;
    s->prevjitter = jitter;
    s->counter += 1;
    s->avgjitter = (s->avgjitter * (double)(s->received - 1) + jitter) / (double)s->received;
    if (s->maxjitter < jitter) s->maxjitter = jitter;
    s->last_stamp = timestamp;
    if (s->forcemark2) {
        s->last_lost = lost;
    } else {
        if (lost > s->last_lost) {
            i64 burst = lost - s->last_lost;
            s->slost[burst < 10 ? burst : 10] += 1;
        } else if (lost < s->last_lost) {
            s->reordered += s->last_lost - lost;
        }
        if (lost >= s->last_lost || s->lost >= s->last_lost - lost)
            s->lost += lost - s->last_lost;
        else
            s->lost = 0;
        s->last_lost = lost;
        static const i64 lim[7] = {50, 70, 90, 120, 150, 200, 300};
        if (adelay >= 300) s->delay[6] += 1;
        else
            for (int i = 0; i < 6; i++)
                if (lim[i] <= adelay && adelay < lim[i + 1]) {
                    s->delay[i] += 1;
                    break;
                }
    }
    s->forcemark2 = 0;
}

static int short_path(vm_stream *s, i64 seq, i64 ts_us, const vm_hdr *h, int frametype, int set_prev) {
    s->last_seq = seq;
    if (update_seq(s, seq, ts_us)) update_stats(s, ts_us, h->timestamp);
    if (set_prev) {
        s->prev_payload = h->payload_type;
        s->prev_codec = s->codec;
    }
    s->lastframetype = frametype;
    return 1;
}

static void play(vm_stream *s, i64 ts_us, i64 seq, i64 cur, const vm_hdr *h) {
    i64 ptime = s->packetization;
    if (ptime <= 1) return;
    i64 div = samplerate_of(s->codec) / 1000;
    int marker = h->marker || s->lastcng || s->lastframetype == FT_DTMF;
    int after_voice = s->lastframetype == FT_VOICE;
    i64 frame_ts = h->timestamp / div;
    i64 prev_ts = s->last_ts / div;
    int sid = cur == PT_G723 && (h->first_payload_byte & 2);
    for (int i = 0; i < 3; i++) {
        if (sid && s->chan[i].created) continue;
        chan_packet(&s->chan[i], ts_us, frame_ts, prev_ts, seq, s->last_seq, marker, after_voice, ptime);
    }
}

static int update_packetization(vm_stream *s, i64 seq, i64 cur, i64 codec, const vm_hdr *h) {
    i64 plen = h->payload_len;
    int consecutive = s->last_ts != 0 && seq == ((s->last_seq + 1) & 0xFFFF);
    i64 ts_delta = (h->timestamp - s->last_ts) & 0xFFFFFFFFLL;
    i64 rate_ms = py_floordiv(s->samplerate, 1000);
    if (s->ptime_iter == 0 || s->ptime_iter == 1) {
        if (cur == PT_G723) {
            s->default_packetization = 30;
            s->sid = (h->first_payload_byte & 2) != 0;
        } else if (codec == 320 || codec == 321 || codec == 359) {
            s->sid = plen == 7;
        } else {
            s->sid = 0;
            s->default_packetization = 20;
        }
    }
    if (s->ptime_iter == 0) {
        if (consecutive && s->prev_codec != PAYLOAD_TELEVENT && !s->sid && !s->prev_sid) {
            i64 p;
            if (cur == PT_G729) p = g729_ptime(plen, ts_delta);
            else if (cur == PT_G723) p = g723_ptime(plen, s->packetization);
            else if (codec == CODEC_ILBC)
                p = py_floordiv(plen, 50) * 50 == plen ? py_floordiv(30 * plen, 50) : (rate_ms ? py_floordiv(ts_delta, rate_ms) : 0);
            else p = rate_ms ? py_floordiv(ts_delta, rate_ms) : 0;
            s->packetization = p;
            if (p > 0) {
                s->last_packetization = p;
                s->ptime_iter += 1;
            }
        }
        if (cur == PT_PCMU || cur == PT_PCMA || cur == PT_GSM || cur == PT_G722 || cur == PT_G723) {
            i64 ap;
            if (cur == PT_PCMU || cur == PT_PCMA || cur == PT_G722) ap = py_floordiv(plen, 8);
            else if (cur == PT_GSM) ap = py_floordiv(plen, 33) * 20;
            else ap = g723_ptime(plen, 0);
            s->packetization = s->default_packetization = ap;
            if (ap >= 10) {
                s->ptime_iter = 10;
                return 1;
            }
        }
        return 0;
    } else if (s->ptime_iter == 1) {
        if (consecutive && s->prev_codec != PAYLOAD_TELEVENT && !s->sid && !s->prev_sid) {
            i64 p;
            if (cur == PT_G729) p = g729_ptime(plen, ts_delta);
            else if (codec == CODEC_ILBC) p = py_floordiv(plen, 50) * 50 == plen ? py_floordiv(30 * plen, 50) : s->default_packetization;
            else p = rate_ms ? py_floordiv(ts_delta, rate_ms) : 0;
            p = py_floordiv(p + s->last_packetization, 2);
            s->packetization = p;
            if (p <= 0 || h->marker) {
                s->ptime_iter = 0;
                return 0;
            }
            s->ptime_iter += 1;
            return 1;
        }
        s->ptime_iter = 0;
        return 0;
    } else {
        if (consecutive && !h->marker) {
            i64 cp;
            if (cur == PT_G729) cp = g729_ptime(plen, ts_delta);
            else if (codec == CODEC_ILBC) cp = py_floordiv(plen, 50) * 50 == plen ? py_floordiv(30 * plen, 50) : s->default_packetization;
            else if (cur == PT_G723) cp = (h->first_payload_byte & 2) ? s->last_packetization : g723_ptime(plen, 0);
            else if (cur == PT_PCMU || cur == PT_PCMA || cur == PT_G722) cp = py_floordiv(plen, 8) >= 20 ? py_floordiv(plen, 8) : 0;
            else if (cur == PT_GSM) cp = py_floordiv(plen, 33) * 20;
            else if (codec == 320 || codec == 321 || codec == 359)
                cp = plen > 7 ? py_floordiv(ts_delta, codec == 320 ? 8 : 16) : s->packetization;
            else cp = rate_ms ? py_floordiv(ts_delta, rate_ms) : 0;
            if (cp < 10) cp = s->default_packetization;
            if (cp != s->packetization && py_floordiv(cp, 10) * 10 == cp && 10 <= cp && cp <= 120)
                s->change_ptime_iter += 1;
            else
                s->change_ptime_iter = 0;
            if (s->change_ptime_iter > 1) {
                s->packetization = s->last_packetization = cp;
                s->change_ptime_iter = 0;
            }
        }
        if (cur == PT_G723) s->packetization = g723_ptime(plen, s->packetization);
    }
    return 1;
}

static void mos_tick(vm_stream *s, int connected);

/* Parse the RTP header of data[0:len]; return 0 when it cannot be RTP (as rtp.parse_rtp_header's None). */
int vm_rtp_parse(const uint8_t *data, i64 len, vm_hdr *h) {
    if (len < 12) return 0;
    uint8_t b0 = data[0], b1 = data[1];
    if (b0 >> 6 != 2) return 0;
    i64 off = 12 + (i64)(b0 & 0x0F) * 4;
    if (b0 & 0x10) {
        if (len < off + 4) return 0;
        off += 4 + (i64)((data[off + 2] << 8) | data[off + 3]) * 4;
    }
    h->padding_len = ((b0 & 0x20) && len > off) ? data[len - 1] : 0;
    h->marker = (b1 & 0x80) != 0;
    h->payload_type = b1 & 0x7F;
    h->seq = (data[2] << 8) | data[3];
    h->timestamp = ((i64)data[4] << 24) | ((i64)data[5] << 16) | ((i64)data[6] << 8) | data[7];
    h->payload_len = len - off - h->padding_len;
    h->first_payload_byte = (0 <= off && off < len) ? data[off] : 0;
    return 1;
}

/* Account one packet (as RtpStream.read). Returns 1 counted, 0 ignored, -1 not RTP, -2 out of memory (the
 * stream's statistics are then unusable).
 * fm/fm_n: the call's forcemark times (re-INVITE media changes), in order. */
static int stream_read(vm_stream *s, i64 ts_us, i64 ttl, const uint8_t *data, i64 len, const i64 *fm, i64 fm_n,
                       int connected);

int vm_stream_read(vm_stream *s, i64 ts_us, i64 ttl, const uint8_t *data, i64 len, const i64 *fm, i64 fm_n,
                   int connected) {
    int r = stream_read(s, ts_us, ttl, data, len, fm, fm_n, connected);
    for (int i = 0; i < 3; i++)
        if (s->chan[i].fb.oom || s->chan[i].ab.oom) return -2;
    return r;
}

static int stream_read(vm_stream *s, i64 ts_us, i64 ttl, const uint8_t *data, i64 len, const i64 *fm, i64 fm_n,
                       int connected) {
    vm_hdr hh;
    const vm_hdr *h = &hh;
    if (!vm_rtp_parse(data, len, &hh)) return -1;
    if (s->ttl_min < 0 || ttl < s->ttl_min) s->ttl_min = ttl;
    if (ttl > s->ttl_max) s->ttl_max = ttl;
    s->ttl_sum += ttl;
    s->ttl_count += 1;
    if (s->last_time_us && ts_us < s->last_time_us - 50000) return 0;
    if (!s->first_time_us) s->first_time_us = ts_us;
    s->last_time_us = ts_us;
    int forcemark_by_owner = 0;
    while (s->forcemark_used < fm_n && fm[s->forcemark_used] < ts_us) {
        if (fm[s->forcemark_used] > s->first_time_us) forcemark_by_owner = 1;
        s->forcemark_used += 1;
    }
    if (h->payload_len < 0) return 0;
    s->timestamp = h->timestamp;
    i64 seq = h->seq;
    if (seq == s->last_seq && !(!s->last_markbit && h->marker)) return 0;
    s->last_markbit = h->marker;
    i64 cur = h->payload_type;
    if (s->codec == -1 || cur != s->prev_payload) {
        if (96 <= cur && cur <= 127) {
            i64 codec = s->rtpmap[cur - 96];
            if (codec == -1 && cur == 101) codec = PAYLOAD_TELEVENT;
            if (codec != -1) s->codec = codec;
        } else {
            s->codec = cur;
        }
        if (s->codec == -1) return 0;
    }
    i64 codec = s->codec;
    if (s->last_seq != -1 && ((s->last_seq + 1) & 0xFFFF) != seq) {
        i64 rate_ms = py_floordiv(s->samplerate, 1000);
        i64 stamp = (h->timestamp - rate_ms * s->packetization) & 0xFFFFFFFFLL;
        if (s->last_stamp == stamp) restart_playout(s);
        else s->last_stamp = stamp;
    }
    if (h->marker) rebase(s, seq);
    if (s->lastframetype == FT_DTMF && codec != PAYLOAD_TELEVENT) restart_playout(s);
    if (cur == 13 || cur == 19) {
        s->lastcng = 1;
        return short_path(s, seq, ts_us, h, FT_VOICE, 1);
    }
    if (cur == PT_G729 && (h->payload_len <= ((s->packetization == 10 || s->packetization == 0) ? 9 : 12) ||
                           h->payload_len + h->padding_len == 22 || h->payload_len + h->padding_len == 32)) {
        s->lastcng = 1;
        return short_path(s, seq, ts_us, h, FT_VOICE, 0);
    }
    if (codec == PAYLOAD_TELEVENT) {
        s->lastcng = 0;
        return short_path(s, seq, ts_us, h, FT_DTMF, 1);
    }
    if (forcemark_by_owner) {
        restart_playout(s);
        rebase(s, seq);
    }
    if (cur != s->prev_payload && codec != 13 && codec != 19 && s->prev_codec != 13 && s->prev_codec != 19)
        s->samplerate = samplerate_of(codec);
    if (s->first_codec < 0 && codec != PAYLOAD_TELEVENT && codec != 13 && codec != 19) s->first_codec = codec;
    if (update_packetization(s, seq, cur, codec, h)) play(s, ts_us, seq, cur, h);
    s->prev_payload = cur;
    s->prev_codec = codec;
    s->prev_sid = s->sid;
    s->last_ts = h->marker ? 0 : h->timestamp;
    if (update_seq(s, seq, ts_us)) update_stats(s, ts_us, h->timestamp);
    s->lastframetype = FT_VOICE;
    s->lastcng = 0;
    s->last_seq = seq;
    if (s->packetization > 0) {
        s->avg_ptime_count += 1;
        i64 n = s->avg_ptime_count;
        s->avg_ptime = (float)(((double)s->avg_ptime * (double)(n - 1) + (double)s->packetization) / (double)n);
    }
    mos_tick(s, connected);
    if (forcemark_by_owner) s->forcemark2 = 1;
    return 1;
}

/* ---- MOS ------------------------------------------------------------------------------------------------- */

static double mos_g711(double ppl, double burstr) {
    if (ppl == 0 || burstr == 0) return 4.5;
    if (ppl > 0.5) return 1.0;
    double bpl = 17.2647;
    double r = 93.2062077233 - 95.0 * (ppl * 100 / (ppl * 100 / burstr + bpl));
    double mos = 2.06405 + 0.031738 * r - 0.000356641 * r * r + 2.93143e-6 * r * r * r;
    if (mos < 1.0) mos = 1.0;
    if (mos > 4.5) mos = 4.5;
    return mos;
}

static i64 interval_mos(vm_mos *m, const i64 *loss, i64 received, int connected) {
    i64 lost = 0, bursts = 0;
    for (int i = 0; i < LOSS_BUCKETS; i++) {
        i64 d = loss[i] - m->last_loss[i];
        lost += i * d;
        bursts += d;
    }
    i64 received2 = received - m->last_received;
    m->last_received = received;
    memcpy(m->last_loss, loss, sizeof(m->last_loss));
    if (lost < 5) return 45;
    double burstr = 0.0;
    if (received > 0 && bursts > 0) {
        if (received2) {
            /* IEEE semantics for a zero denominator (lost == received2), as rtp._MosChannel */
            double denom = 1.0 - (double)lost / (double)received2;
            burstr = ((double)lost / (double)bursts) / (1.0 / denom);
        } else {
            burstr = 0.0;
        }
        burstr = burstr < 0 ? -burstr : (burstr > 1.0 ? burstr : 1.0);
    }
    double lossr = (received > 0 && received2) ? (double)lost / (double)received2 : 0.0;
    if (!connected && received < 100) return 45;
    return (i64)floor(mos_g711(lossr, burstr) * 10 + 0.5);
}

void vm_stream_save_mos(vm_stream *s, int connected) {
    i64 new_ms = py_floordiv(s->last_time_us - s->first_time_us, 1000);
    i64 diff_ms = s->mos_time_ms ? new_ms - s->mos_time_ms : 0;
    for (int i = 0; i < 3; i++) {
        vm_mos *m = &s->mos[i];
        i64 value = interval_mos(m, s->chan[i].loss, s->received, connected);
        if (value < m->minimum) m->minimum = value;
        if (s->mos_time_ms && new_ms)
            m->average = (m->average * (double)s->mos_time_ms + (double)(value * diff_ms)) / (double)new_ms;
        else
            m->average = (double)value;
    }
    s->mos_time_ms = new_ms;
}

static void mos_tick(vm_stream *s, int connected) {
    i64 first_ms = py_floordiv(s->first_time_us, 1000);
    i64 last_ms = py_floordiv(s->last_time_us, 1000);
    i64 ref = s->last_save_mos_ms ? s->last_save_mos_ms : first_ms;
    if (ref + MOS_INTERVAL_MS < last_ms || s->save_mos_wait > 0) {
        if (!s->save_mos_wait) {
            s->save_mos_wait = MOS_WAIT_PACKETS;
            s->last_save_mos_ms = last_ms;
        } else {
            s->save_mos_wait -= 1;
            if (!s->save_mos_wait) vm_stream_save_mos(s, connected);
        }
    }
}

/* Python reads these through the struct (see _kernel_build.CDEF). */
i64 vm_stream_loss(const vm_stream *s, int chan, int bucket) { return s->chan[chan].loss[bucket]; }
i64 vm_stream_mos_min(const vm_stream *s, int chan) { return s->mos[chan].minimum; }
double vm_stream_mos_avg(const vm_stream *s, int chan) { return s->mos[chan].average; }
void vm_stream_set_rtpmap(vm_stream *s, int pt, i64 codec) {
    if (96 <= pt && pt <= 127) s->rtpmap[pt - 96] = codec;
}

/* Which source this module was built from (set by the build; see _kernel_build.source_digest). */
#ifndef VM_KERNEL_DIGEST
#define VM_KERNEL_DIGEST "unknown"
#endif
const char *vm_kernel_digest(void) { return VM_KERNEL_DIGEST; }
