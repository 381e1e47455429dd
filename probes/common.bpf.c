/* common.bpf.c — maps, event emission and socket attribution shared by every TLS library's probes.
 *
 * src/hdrlog/loader.py compiles one main text: this file, then each TLS library's probe file
 * (openssl.bpf.c, ...), concatenated with #line markers, because bcc rewrites map accesses and generates
 * tracepoint argument structs only in the main file. Build-time settings come as -D flags from src/hdrlog/loader.py (never text substitution):
 *   HDRLOG_MAX_BYTES        data bytes captured per TLS call (rest counted in `len`, not copied)
 *   HDRLOG_RINGBUF_PAGES    ring buffer size in pages (power of two)
 *   HDRLOG_WAKEUP_EVERY     look whether to wake the consumer every N events per CPU (1: every event)
 *   HDRLOG_WAKEUP_BYTES     ... and wake it if the ring holds more unread bytes than this
 *   HDRLOG_SKC_V6_DADDR, HDRLOG_SKC_V6_RCV_SADDR   offsets in struct sock_common (from BTF)
 *   HDRLOG_TARGET_SLOTS     size of the target_slots filter (power of two)
 *   HDRLOG_SKC_FAMILY, HDRLOG_SK_PROTOCOL   offsets of sock_common.skc_family and sock.sk_protocol (u16)
 *                           in the running kernel (src/hdrlog/kbtf.py); when given, the socket probes are
 *                           raw tracepoints, else classic ones (whose arguments carry both fields)
 *
 * Kernel structs are not walked beyond struct sock_common's head: bcc compiles against Debian's 6.1
 * headers while the kernel may be newer, so only the long-stable layout is trusted, and no kernel macro
 * (min(), ntohs()) is used.
 */
#include <uapi/linux/ptrace.h>
#include "hdrlog.h"

#ifndef HDRLOG_MAX_BYTES
#define HDRLOG_MAX_BYTES 16384
#endif
#ifndef HDRLOG_RINGBUF_PAGES
#define HDRLOG_RINGBUF_PAGES 1024
#endif
#ifndef HDRLOG_WAKEUP_EVERY
#define HDRLOG_WAKEUP_EVERY 64
#endif
#ifndef HDRLOG_WAKEUP_BYTES
#define HDRLOG_WAKEUP_BYTES (HDRLOG_RINGBUF_PAGES * 4096 / 8)
#endif
#ifndef HDRLOG_TARGET_SLOTS
#define HDRLOG_TARGET_SLOTS 16384 /* a power of two; src/hdrlog/loader.py passes its TARGET_SLOTS */
#endif
#ifndef HDRLOG_SKC_FAMILY
#define HDRLOG_SKC_FAMILY 16
#endif
#ifndef HDRLOG_SKC_V6_DADDR
#define HDRLOG_SKC_V6_DADDR 56
#endif
#ifndef HDRLOG_SKC_V6_RCV_SADDR
#define HDRLOG_SKC_V6_RCV_SADDR 72
#endif

#define HDRLOG_CHUNK 16384
#define HDRLOG_MAX_CHUNKS ((HDRLOG_MAX_BYTES + HDRLOG_CHUNK - 1) / HDRLOG_CHUNK)

/* a TLS call in flight on one thread: stashed at entry, completed at return */
struct hdrlog_call {
	__u64 conn;
	__u64 buf;
	__u64 lenp; /* size_t * of the _ex variants */
	__u8 fn;
	__u8 attr;
	__u8 _pad[6];
	struct hdrlog_tuple tuple;
};

struct hdrlog_connkey {
	__u32 pid;
	__u32 _pad;
	__u64 conn;
};

struct hdrlog_buf {
	struct hdrlog_event h;
	__u8 data[HDRLOG_CHUNK];
};

/* What one thread of a traced process is doing, in the kernel's per-task storage: found from the current
 * task without hashing, created on the thread's first TLS call (or first socket I/O in a traced process),
 * freed with the thread. Measured on nginx (bpf_stats): a BPF hash update + lookup + delete per TLS call
 * cost ~250 ns of the ~300 ns an entry program took. */
struct hdrlog_thread {
	struct hdrlog_call call;  /* call.fn != 0 while a TLS call is in flight on this thread */
	struct hdrlog_tuple hint; /* last socket this thread received on outside a TLS call (memory BIO) */
	__u64 send_pending;       /* connection written with no socket seen yet, 0 if none (memory BIO) */
	__u8 hint_valid;
	__u8 _pad[7];
};

/* `events` must stay the first map declared: bcc 0.26 has no events.ringbuf_query(), and gives the maps
 * of a program the placeholder descriptors -1, -2, ... in declaration order, which it replaces with the
 * maps' real ones at load. HDRLOG_EVENTS_MAP is that placeholder, for the helpers bcc does not wrap; a
 * wrong one is refused by the verifier (no other map here is a ring buffer), never silently used. */
BPF_RINGBUF_OUTPUT(events, HDRLOG_RINGBUF_PAGES);
#define HDRLOG_EVENTS_MAP ((void *)bpf_pseudo_fd(1, -1))
BPF_TASK_STORAGE(threads, struct hdrlog_thread);
#ifdef HDRLOG_WITH_GOTLS
/* Go: a goroutine may return on another thread than it entered on, so its call is found by thread id */
BPF_HASH(calls, __u64, struct hdrlog_call, 16384);            /* pid_tgid -> Go call in flight */
#endif
BPF_HASH(targets, __u32, __u8, 4096);                          /* tgids being traced */
/* tgid % HDRLOG_TARGET_SLOTS -> how many traced tgids fall there (kept by src/hdrlog/loader.py): looked at
 * before `targets` by the socket probes of threads without state (every other process's), an array look-up
 * the verifier inlines instead of a hash look-up (~0.1-0.2 µs per socket call on a KVM guest) */
BPF_ARRAY(target_slots, __u32, HDRLOG_TARGET_SLOTS);
BPF_HASH(lost, struct hdrlog_connkey, __u32, 16384);          /* connections that lost events */
/* connections whose tuple the consumer has been sent (a handshake with its socket seen in the call, or a link):
 * copy sites (openssl.bpf.c) have no call to attribute, and ask for a link only for connections not in here */
BPF_TABLE("lru_hash", struct hdrlog_connkey, __u8, linked, 65536);
BPF_ARRAY(lost_pending, __u64, 1);                             /* entries in `lost` (0: skip the look-up) */
BPF_PERCPU_ARRAY(scratch, struct hdrlog_buf, 1);
BPF_PERCPU_ARRAY(stats, __u64, HDRLOG_STAT_MAX);

static __always_inline int hdrlog_is_target(__u32 tgid)
{
	__u32 slot = tgid & (HDRLOG_TARGET_SLOTS - 1);
	__u32 *n = target_slots.lookup(&slot);
	if (!n || *n == 0)
		return 0;
	return targets.lookup(&tgid) != 0;
}

static __always_inline int hdrlog_linked(__u32 pid, __u64 conn)
{
	struct hdrlog_connkey k = {.pid = pid, .conn = conn};
	return linked.lookup(&k) != 0;
}

static __always_inline void hdrlog_linked_set(__u32 pid, __u64 conn)
{
	struct hdrlog_connkey k = {.pid = pid, .conn = conn};
	__u8 one = 1;
	linked.update(&k, &one);
}

static __always_inline void hdrlog_linked_clear(__u32 pid, __u64 conn)
{
	struct hdrlog_connkey k = {.pid = pid, .conn = conn};
	linked.delete(&k);
}

static __always_inline void hdrlog_count(int slot, __u64 n)
{
	__u64 *v = stats.lookup(&slot);
	if (v)
		*v += n;
}

static __always_inline __u16 hdrlog_swab16(__u16 x)
{
	return (__u16)((x >> 8) | (x << 8));
}

/* struct sock_common begins: skc_daddr, skc_rcv_saddr, skc_hash, skc_dport (net order), skc_num; `head` holds
 * those 16 bytes (hdrlog_sock_head) */
static __always_inline void hdrlog_read_tuple(void *sk, __u16 family, __u8 *head, struct hdrlog_tuple *t)
{
	t->family = family;
	t->rport = hdrlog_swab16(*(__u16 *)&head[12]);
	t->lport = *(__u16 *)&head[14];
	if (family == 2) {
		__builtin_memcpy(t->raddr, &head[0], 4);
		__builtin_memcpy(t->laddr, &head[4], 4);
	} else {
		bpf_probe_read_kernel(t->raddr, 16, (char *)sk + HDRLOG_SKC_V6_DADDR);
		bpf_probe_read_kernel(t->laddr, 16, (char *)sk + HDRLOG_SKC_V6_RCV_SADDR);
	}
}

static __always_inline void hdrlog_fill(struct hdrlog_event *e, __u64 id, __u64 conn, __u8 kind, __u8 fn,
					__u8 dir)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->conn = conn;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->len = 0;
	e->cap = 0;
	e->offset = 0;
	e->lost = 0;
	e->kind = kind;
	e->fn = fn;
	e->dir = dir;
	e->attr = HDRLOG_ATTR_NONE;
	e->fd = -1;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/* events this connection lost before now; the consumer resynchronises its parsers on it */
static __always_inline __u32 hdrlog_take_lost(__u32 pid, __u64 conn)
{
	__u32 zero = 0;
	__u64 *pending = lost_pending.lookup(&zero);
	if (!pending || *pending == 0)
		return 0; /* the usual case: nothing lost anywhere, no hash look-up */
	struct hdrlog_connkey k = {.pid = pid, .conn = conn};
	__u32 *n = lost.lookup(&k);
	if (!n)
		return 0;
	__u32 v = *n;
	if (lost.delete(&k) == 0)
		__sync_fetch_and_add(pending, -1);
	return v;
}

static __always_inline void hdrlog_note_lost(__u32 pid, __u64 conn, __u64 bytes)
{
	struct hdrlog_connkey k = {.pid = pid, .conn = conn};
	__u32 one = 1;
	__u32 *n = lost.lookup(&k);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else if (lost.insert(&k, &one) == 0) {
		__u32 zero = 0;
		__u64 *pending = lost_pending.lookup(&zero);
		if (pending)
			__sync_fetch_and_add(pending, 1);
	}
	hdrlog_count(HDRLOG_STAT_DROPPED, 1);
	hdrlog_count(HDRLOG_STAT_DROPPED_BYTES, bytes);
}

/* Wake the consumer only when the ring buffer holds more than HDRLOG_WAKEUP_BYTES it has not read, and
 * then at most once every HDRLOG_WAKEUP_EVERY events per CPU. The consumer drains the ring on its own
 * poll timer, so a quiet connection's messages are late by at most that period; a wake-up is only needed
 * before the ring fills. A forced wake-up costs the traced thread ~9 µs on a KVM guest (irq_work's
 * self-interrupt and the wake-up run inside the BPF program: bench/bpf_prog_cost.py); one every 64
 * events was ~0.3 µs per nginx request. */
static __always_inline __u64 hdrlog_wakeup_flags(void)
{
	int slot = HDRLOG_STAT_WAKEUP_CTR;
	__u64 *v = stats.lookup(&slot);
	if (!v)
		return 0;
	*v += 1;
	if ((*v % HDRLOG_WAKEUP_EVERY) != 0)
		return 1; /* BPF_RB_NO_WAKEUP */
	if (bpf_ringbuf_query(HDRLOG_EVENTS_MAP, 0 /* BPF_RB_AVAIL_DATA */) < HDRLOG_WAKEUP_BYTES)
		return 1;
	return 2; /* BPF_RB_FORCE_WAKEUP */
}

static __always_inline void hdrlog_submit_flags(struct hdrlog_buf *b, __u64 size, __u64 flags)
{
	if (events.ringbuf_output(b, size, flags) == 0)
		hdrlog_count(HDRLOG_STAT_EMITTED, 1);
	else
		hdrlog_note_lost(b->h.pid, b->h.conn, b->h.cap);
}

static __always_inline void hdrlog_submit(struct hdrlog_buf *b, __u64 size)
{
	hdrlog_submit_flags(b, size, hdrlog_wakeup_flags());
}

/* an event without data (handshake, close, link) */
static __always_inline void hdrlog_emit_meta(__u64 id, __u64 conn, __u8 kind, __u8 fn, __u8 attr,
					     struct hdrlog_tuple *t, int wake_now)
{
	__u32 zero = 0;
	struct hdrlog_buf *b = scratch.lookup(&zero);
	if (!b)
		return;
	hdrlog_fill(&b->h, id, conn, kind, fn, HDRLOG_DIR_NONE);
	b->h.attr = attr;
	if (t)
		__builtin_memcpy(&b->h.tuple, t, sizeof(*t));
	else
		__builtin_memset(&b->h.tuple, 0, sizeof(b->h.tuple));
	b->h.lost = hdrlog_take_lost(b->h.pid, conn);
	hdrlog_submit_flags(b, sizeof(b->h), wake_now ? 2 /* BPF_RB_FORCE_WAKEUP */ : hdrlog_wakeup_flags());
}

/* plaintext of one completed TLS call, in chunks of at most HDRLOG_CHUNK bytes; fd when the probe knows
 * the connection's descriptor (Go), else -1 */
static __always_inline void hdrlog_emit_data_fd(__u64 id, struct hdrlog_call *c, __u64 len, __u8 dir,
						__s32 fd)
{
	__u32 zero = 0;
	struct hdrlog_buf *b = scratch.lookup(&zero);
	if (!b)
		return;
	hdrlog_fill(&b->h, id, c->conn, HDRLOG_EV_DATA, c->fn, dir);
	b->h.len = (__u32)len;
	b->h.attr = c->attr;
	b->h.fd = fd;
	__builtin_memcpy(&b->h.tuple, &c->tuple, sizeof(c->tuple));
	b->h.lost = hdrlog_take_lost(b->h.pid, c->conn);
#pragma unroll
	for (int i = 0; i < HDRLOG_MAX_CHUNKS; i++) {
		__u64 off = (__u64)i * HDRLOG_CHUNK;
		if (off >= len)
			break;
		__u64 n = len - off;
		if (n > HDRLOG_CHUNK)
			n = HDRLOG_CHUNK;
		if (off + n > HDRLOG_MAX_BYTES)
			n = HDRLOG_MAX_BYTES - off;
		if (n > HDRLOG_CHUNK) /* restated for the verifier */
			n = HDRLOG_CHUNK;
		if (bpf_probe_read_user(b->data, n, (void *)(c->buf + off)) != 0)
			n = 0; /* page not resident: the header still tells len */
		b->h.offset = (__u32)off;
		b->h.cap = (__u32)n;
		hdrlog_submit(b, sizeof(b->h) + n);
		b->h.lost = 0;
	}
}

static __always_inline void hdrlog_emit_data(__u64 id, struct hdrlog_call *c, __u64 len, __u8 dir)
{
	hdrlog_emit_data_fd(id, c, len, dir, -1);
}

static __always_inline struct hdrlog_thread *hdrlog_thread_get(int create)
{
	return threads.task_storage_get(bpf_get_current_task_btf(), 0,
					create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/* entry of a TLS call: remember it for the return probe and for socket tracepoints */
static __always_inline void hdrlog_call_enter(__u64 conn, __u64 buf, __u64 lenp, __u8 fn, int is_read)
{
	struct hdrlog_thread *t = hdrlog_thread_get(1);
	if (!t) {
		hdrlog_count(HDRLOG_STAT_CALLS_FULL, 1);
		return;
	}
	struct hdrlog_call *c = &t->call;
	c->conn = conn;
	c->buf = buf;
	c->lenp = lenp;
	c->fn = fn;
	c->attr = HDRLOG_ATTR_NONE;
	if (is_read && t->hint_valid) {
		__builtin_memcpy(&c->tuple, &t->hint, sizeof(c->tuple));
		c->attr = HDRLOG_ATTR_RECV_BEFORE;
	}
}

/* the call in flight on this thread, or NULL; hdrlog_call_done() ends it */
static __always_inline struct hdrlog_thread *hdrlog_call_current(void)
{
	struct hdrlog_thread *t = hdrlog_thread_get(0);
	if (!t || !t->call.fn)
		return 0;
	return t;
}

static __always_inline void hdrlog_call_done(struct hdrlog_thread *t)
{
	t->call.fn = 0;
}

/* The socket's family if it is a TCP socket over IPv4/IPv6, else 0, and the head of its struct sock_common
 * in head[0..16). `family` is what the classic tracepoint passed (0: not TCP), or -1 under the raw
 * tracepoints: then read from the socket, only once a traced thread needs it (skc_family with the head
 * in one read where it follows it, sk_protocol at the offset the loader read from the kernel's BTF). */
static __always_inline __u16 hdrlog_sock_head(void *sk, int family, __u8 *head)
{
	if (family >= 0) {
		bpf_probe_read_kernel(head, 16, sk);
		return (__u16)family;
	}
#ifdef HDRLOG_SK_PROTOCOL
	__u16 fam = 0, proto = 0;
#if HDRLOG_SKC_FAMILY == 16
	bpf_probe_read_kernel(head, 18, sk);
	fam = *(__u16 *)&head[16];
#else
	bpf_probe_read_kernel(head, 16, sk);
	bpf_probe_read_kernel(&fam, sizeof(fam), (char *)sk + HDRLOG_SKC_FAMILY);
#endif
	if (fam != 2 && fam != 10)
		return 0;
	bpf_probe_read_kernel(&proto, sizeof(proto), (char *)sk + HDRLOG_SK_PROTOCOL);
	return proto == 6 ? fam : 0;
#else
	return 0;
#endif
}

/* every socket send/recv on the machine passes here; only traced threads do any work */
static __always_inline void hdrlog_on_sock(void *sk, int family, int is_send)
{
	if (family == 0)
		return;
	struct hdrlog_thread *t = hdrlog_thread_get(0);
	if (t && t->call.fn) {
		if (t->call.attr != HDRLOG_ATTR_IN_CALL) {
			__u8 head[24] = {};
			__u16 fam = hdrlog_sock_head(sk, family, head);
			if (!fam)
				return;
			hdrlog_read_tuple(sk, fam, head, &t->call.tuple);
			t->call.attr = HDRLOG_ATTR_IN_CALL;
		}
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
#ifdef HDRLOG_WITH_GOTLS
	struct hdrlog_call *c = calls.lookup(&id);
	if (c) {
		if (c->attr != HDRLOG_ATTR_IN_CALL) {
			__u8 head[24] = {};
			__u16 fam = hdrlog_sock_head(sk, family, head);
			if (!fam)
				return;
			hdrlog_read_tuple(sk, fam, head, &c->tuple);
			c->attr = HDRLOG_ATTR_IN_CALL;
		}
		return;
	}
#endif
	__u8 head[24] = {};
	__u16 fam = 0;
	if (!t) {
		/* a thread without state: another process's (the usual case), or a traced one's first I/O */
		__u32 tgid = id >> 32;
		if (!hdrlog_is_target(tgid))
			return;
		fam = hdrlog_sock_head(sk, family, head);
		if (!fam)
			return;
		t = hdrlog_thread_get(1);
		if (!t)
			return;
	} else if (!is_send || t->send_pending) {
		fam = hdrlog_sock_head(sk, family, head);
		if (!fam)
			return;
	}
	if (!is_send) {
		hdrlog_read_tuple(sk, fam, head, &t->hint);
		t->hint_valid = 1;
		return;
	}
	if (t->send_pending) {
		__u64 conn = t->send_pending;
		t->send_pending = 0;
		struct hdrlog_tuple tu = {};
		hdrlog_read_tuple(sk, fam, head, &tu);
		hdrlog_emit_meta(id, conn, HDRLOG_EV_LINK, 0, HDRLOG_ATTR_SEND_AFTER, &tu, 0);
		hdrlog_linked_set(id >> 32, conn);
	}
}

#ifdef HDRLOG_SK_PROTOCOL
/* Raw tracepoints (args: struct sock *sk, int ret, int flags): the classic ones cost every socket call
 * on the machine a perf record filled with the socket's fields before the program ran (~0.2 µs per
 * nginx request: bench/bpf_prog_cost.py); here the fields are read only for traced threads. */
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
	hdrlog_on_sock((void *)ctx->args[0], -1, 0);
	return 0;
}

RAW_TRACEPOINT_PROBE(sock_send_length)
{
	hdrlog_on_sock((void *)ctx->args[0], -1, 1);
	return 0;
}
#else
static __always_inline int hdrlog_tp_family(__u16 family, __u16 protocol)
{
	return protocol == 6 && (family == 2 || family == 10) ? family : 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
	hdrlog_on_sock(args->sk, hdrlog_tp_family(args->family, args->protocol), 0);
	return 0;
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
	hdrlog_on_sock(args->sk, hdrlog_tp_family(args->family, args->protocol), 1);
	return 0;
}
#endif

/* A traced process (an nginx master) forked: tell the consumer at once, so a new worker gets its probes
 * within milliseconds instead of at the next /proc scan. Fires for threads too; the consumer filters. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!hdrlog_is_target(tgid))
		return 0;
	hdrlog_emit_meta(id, (__u64)args->child_pid, HDRLOG_EV_FORK, 0, HDRLOG_ATTR_NONE, 0, 1);
	return 0;
}
