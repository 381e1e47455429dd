/* gotls.bpf.c — Go crypto/tls (amd64, Go >= 1.17 register ABI): (*Conn).Read, (*Conn).Write, (*Conn).Close,
 * and the entry of (*Conn).serverHandshake / clientHandshake.
 *
 * compiled after common.bpf.c in one main text (src/hdrlog/loader.py); which symbol each function is
 * attached to, and where, is data in src/hdrlog/tlslibs/gotls.py.
 *
 * Go's register ABI: at the entry of (*Conn).Read and (*Conn).Write, RAX = *tls.Conn, RBX = buffer, RCX =
 * length; at each RET of Read, RAX = the byte count n. R14 is the running goroutine's g in all Go code.
 * No uretprobe may be used (it rewrites the return address on a stack Go may move), so Read's count is
 * read by uprobes at every RET instruction (found by disassembly). A goroutine can leave a Read on another
 * OS thread than it entered (14-26% of Reads measured), so a Read in flight is keyed by (pid, g), not by
 * thread. Write is emitted at its entry, from the caller's buffer: before its bytes reach the socket, so
 * a request always comes before the response it causes (emitted at a Write's RET, a slow uprobe could let
 * the response's Read overtake it).
 *
 * Connection identity: (pid, *tls.Conn); Close ends it (Go reuses the addresses). Its socket comes from
 *   1. the socket tracepoints of common.bpf.c: every Read, Write and handshake is also registered in
 *      `calls` under the thread it began on, and the first socket I/O of that thread inside the call is
 *      the connection's own (Go tries the read/write syscall before it parks a goroutine), so a Read's
 *      tuple is exact (IN_CALL) even when it returns on another thread; what a Write or handshake saw is
 *      collected when the next call takes that thread's slot, or at the connection's next call;
 *   2. the fd read through the structs: *tls.Conn -> conn net.Conn {itab, data} -> *net.TCPConn ->
 *      conn{fd *netFD} -> netFD{pfd poll.FD{fdmu (16 bytes), Sysfd int (+16), ...}, family int (+56),
 *      sotype int (+64)} — the same layout from go1.17 to go1.27. Nothing read is trusted unless it looks
 *      like a TCP socket's netFD: pointers non-null, 0 <= Sysfd <= 65535, family AF_INET/AF_INET6, sotype
 *      SOCK_STREAM, IsStream set, isFile clear. A net.Conn that wraps another in its first field (e.g.
 *      struct{ net.Conn; ... }) is followed one level down. Every event carries the fd (-1 if none
 *      passed). Writes, and Reads without socket I/O of their own (served from tls.Conn's buffer), get
 *      attribution GO_FD and the tuple last seen exactly on that fd for the same connection (go_fd_tuples,
 *      dropped at Close), or no tuple: the consumer then maps (pid, fd) through /proc (src/hdrlog/fdsock.py).
 *
 * Known gap: a goroutine that blocks before its first socket I/O in a call (a contended tls.Conn mutex)
 * lets another goroutine's socket I/O on that thread be taken for the call's. HTTP/1 has one reader and
 * one writer per connection, so the mutexes are rarely contended.
 */

#define GO_MAX_FD 65535
#define GO_FN_HANDSHAKE 0x80 /* (*Conn).serverHandshake/clientHandshake: kept in `calls` only, never in events */

struct go_key {
	__u32 pid;
	__u32 fn;
	__u64 g; /* runtime.g of the calling goroutine (R14) */
};

struct go_call {
	struct hdrlog_call c; /* conn, buf, lenp = requested length, fn */
	__s32 fd;
	__u32 tid; /* thread the call began on */
};

struct go_fdkey {
	__u32 pid;
	__s32 fd;
};

struct go_fdtuple {
	__u64 conn;
	struct hdrlog_tuple tuple;
};

/* LRU maps: an entry whose end hdrlog never sees (a goroutine that died in a call, a connection closed
 * without (*Conn).Close) must not fill a table for good */
BPF_TABLE("lru_hash", struct go_key, struct go_call, go_calls, 16384);
/* (pid, *tls.Conn) -> thread its handshake began on; its socket tuple is collected at the connection's
 * first Read/Write (whichever goroutine makes it: a client's handshake runs in the dialing goroutine) */
BPF_TABLE("lru_hash", struct hdrlog_connkey, __u32, go_handshakes, 16384);
/* (pid, fd) -> the tuple last seen exactly for that fd's connection; dropped at Close */
BPF_TABLE("lru_hash", struct go_fdkey, struct go_fdtuple, go_fd_tuples, 65536);
/* how the fd walk went, for diagnosis: [0] valid at level 1, [1] valid through a wrapper, [2] invalid */
BPF_PERCPU_ARRAY(go_fd_stats, __u64, 4);

static __always_inline void go_count(int slot)
{
	__u64 *v = go_fd_stats.lookup(&slot);
	if (v)
		*v += 1;
}

/* the fd of a *netFD if what is there looks like a TCP socket's netFD, else -1 */
static __always_inline int go_netfd_fd(__u64 netfd)
{
	if (netfd < 4096)
		return -1;
	__s64 w[9] = {};
	if (bpf_probe_read_user(w, sizeof(w), (void *)netfd) != 0)
		return -1;
	__s64 fd = w[2];
	if (fd < 0 || fd > GO_MAX_FD)
		return -1;
	__u8 *flags = (__u8 *)&w[6]; /* IsStream (+48), ZeroReadIsEOF (+49), isFile (+50) */
	if (flags[0] != 1 || flags[2] != 0)
		return -1;
	if ((w[7] != 2 && w[7] != 10) || w[8] != 1) /* family, sotype == SOCK_STREAM */
		return -1;
	return (int)fd;
}

/* fd of the socket under a *tls.Conn, or -1 */
static __always_inline int go_conn_fd(__u64 conn)
{
	__u64 iface[2] = {}; /* tls.Conn.conn: net.Conn {itab, data} at offset 0 */
	if (conn < 4096 || bpf_probe_read_user(iface, sizeof(iface), (void *)conn) != 0)
		return -1;
	if (iface[0] < 4096 || iface[1] < 4096)
		return -1;
	__u64 inner[2] = {}; /* *net.TCPConn: conn{fd *netFD}; or a wrapper: net.Conn {itab, data} */
	if (bpf_probe_read_user(inner, sizeof(inner), (void *)iface[1]) != 0)
		return -1;
	int fd = go_netfd_fd(inner[0]);
	if (fd >= 0) {
		go_count(0);
		return fd;
	}
	if (inner[0] >= 4096 && inner[1] >= 4096) {
		__u64 netfd = 0;
		if (bpf_probe_read_user(&netfd, sizeof(netfd), (void *)inner[1]) == 0) {
			fd = go_netfd_fd(netfd);
			if (fd >= 0) {
				go_count(1);
				return fd;
			}
		}
	}
	go_count(2);
	return -1;
}

/* remember the exact tuple of a Go call's socket for its fd (the per-thread copy of a Go call in `calls`
 * carries the fd in lenp) */
static __always_inline void go_keep_tuple(__u32 pid, struct hdrlog_call *tc)
{
	if (tc->attr != HDRLOG_ATTR_IN_CALL)
		return;
	if (tc->fn != HDRLOG_FN_GO_READ && tc->fn != HDRLOG_FN_GO_WRITE && tc->fn != GO_FN_HANDSHAKE)
		return;
	__s64 fd = (__s64)tc->lenp;
	if (fd < 0 || fd > GO_MAX_FD)
		return;
	struct go_fdkey fk = {.pid = pid, .fd = (__s32)fd};
	struct go_fdtuple ft = {.conn = tc->conn};
	__builtin_memcpy(&ft.tuple, &tc->tuple, sizeof(ft.tuple));
	go_fd_tuples.update(&fk, &ft);
}

/* Register a call in this thread's `calls` slot for the socket tracepoints (socket I/O comes before the
 * goroutine can leave the thread). A call still registered there belongs to a goroutine that parked after
 * its socket I/O: keep what it learned before this call takes the slot. */
static __always_inline void go_register(__u64 id, struct hdrlog_call *c, __s32 fd)
{
	struct hdrlog_call *prev = calls.lookup(&id);
	if (prev)
		go_keep_tuple(id >> 32, prev);
	struct hdrlog_call tc = *c;
	tc.lenp = (__u64)(__s64)fd;
	if (calls.update(&id, &tc) != 0)
		hdrlog_count(HDRLOG_STAT_CALLS_FULL, 1);
}

/* The connection's handshake (its first Read may be served entirely from records that came in with the
 * handshake's last read, with no socket I/O of its own): collect its tuple. */
static __always_inline void go_after_handshake(__u32 pid, __u64 conn)
{
	struct hdrlog_connkey hk = {.pid = pid, .conn = conn};
	__u32 *tid = go_handshakes.lookup(&hk);
	if (!tid)
		return;
	__u64 hid = ((__u64)pid << 32) | *tid;
	go_handshakes.delete(&hk);
	struct hdrlog_call *tc = calls.lookup(&hid);
	if (tc && tc->conn == conn && tc->fn == GO_FN_HANDSHAKE) {
		go_keep_tuple(pid, tc);
		calls.delete(&hid);
	}
}

/* the tuple last seen exactly on this fd, for the same connection */
static __always_inline void go_fd_tuple(__u32 pid, __s32 fd, struct hdrlog_call *c)
{
	struct go_fdkey fk = {.pid = pid, .fd = fd};
	struct go_fdtuple *ft = go_fd_tuples.lookup(&fk);
	if (ft && ft->conn == c->conn)
		__builtin_memcpy(&c->tuple, &ft->tuple, sizeof(c->tuple));
	c->attr = HDRLOG_ATTR_GO_FD; /* with a tuple, or the consumer finds it from (pid, fd) */
}

/* (*Conn).serverHandshake / clientHandshake (run once per connection, through c.handshakeFn) */
int go_handshake_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct hdrlog_call c = {};
	c.conn = ctx->ax;
	c.fn = GO_FN_HANDSHAKE;
	__s32 fd = go_conn_fd(c.conn);
	if (fd < 0)
		return 0; /* nothing to learn the tuple for */
	go_register(id, &c, fd);
	struct hdrlog_connkey hk = {.pid = id >> 32, .conn = c.conn};
	__u32 tid = (__u32)id;
	go_handshakes.update(&hk, &tid);
	return 0;
}

int go_read_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_key k = {.pid = id >> 32, .fn = HDRLOG_FN_GO_READ, .g = ctx->r14};
	struct go_call gc = {};
	gc.c.conn = ctx->ax;
	gc.c.buf = ctx->bx;
	gc.c.lenp = ctx->cx; /* the buffer's length: n is never more */
	gc.c.fn = HDRLOG_FN_GO_READ;
	gc.fd = go_conn_fd(gc.c.conn);
	gc.tid = (__u32)id;
	go_after_handshake(k.pid, gc.c.conn);
	go_calls.update(&k, &gc);
	go_register(id, &gc.c, gc.fd);
	return 0;
}

/* (*Conn).Write: the plaintext is in the caller's buffer at entry; emitted now, before it reaches the socket */
int go_write_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct hdrlog_call c = {};
	c.conn = ctx->ax;
	c.buf = ctx->bx;
	c.fn = HDRLOG_FN_GO_WRITE;
	__s32 fd = go_conn_fd(c.conn);
	go_after_handshake(pid, c.conn);
	/* what an earlier call parked on this thread learned is kept before the slot is taken, so the
	 * lookup comes after it */
	go_register(id, &c, fd);
	if (fd >= 0)
		go_fd_tuple(pid, fd, &c);
	__s64 len = (__s64)ctx->cx;
	if (len <= 0)
		return 0;
	hdrlog_emit_data_fd(id, &c, (__u64)len, HDRLOG_DIR_OUT, fd);
	return 0;
}

/* A Read whose entry was not seen: it was in flight when hdrlog attached — every idle keep-alive
 * connection (a server waiting for the next request, a client pool's read loop) is parked inside one.
 * Missing its result would leave a request without its response and shift the pairing of every later
 * exchange on that connection. Go spills the register arguments to the caller-reserved slots above the
 * return address at the top of Read (golang.read_spills checks the machine code at attach time), so at a
 * RET [rsp+8] = *tls.Conn, [rsp+16] = buffer, [rsp+24] = its length. Used only if the receiver passes the
 * netFD checks and n fits the buffer. */
static __always_inline int go_read_return_unseen(struct pt_regs *ctx, __u64 id)
{
	__s64 rc = (__s64)ctx->ax;
	if (rc <= 0)
		return 0;
	__u64 args[3] = {};
	if (bpf_probe_read_user(args, sizeof(args), (void *)(ctx->sp + 8)) != 0)
		return 0;
	if (args[1] < 4096 || (__u64)rc > args[2])
		return 0;
	__s32 fd = go_conn_fd(args[0]);
	if (fd < 0)
		return 0;
	struct hdrlog_call c = {};
	c.conn = args[0];
	c.buf = args[1];
	c.fn = HDRLOG_FN_GO_READ;
	go_fd_tuple(id >> 32, fd, &c);
	hdrlog_emit_data_fd(id, &c, (__u64)rc, HDRLOG_DIR_IN, fd);
	return 0;
}

/* at each RET instruction of (*Conn).Read: RAX = n */
int go_read_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_key k = {.pid = id >> 32, .fn = HDRLOG_FN_GO_READ, .g = ctx->r14};
	struct go_call *gc = go_calls.lookup(&k);
	if (!gc)
		return go_read_return_unseen(ctx, id);
	struct hdrlog_call c = gc->c;
	__s32 fd = gc->fd;
	__u64 entry_id = (id & 0xffffffff00000000ULL) | gc->tid;
	go_calls.delete(&k);
	/* The socket the call used on the thread it began on: socket I/O comes before the goroutine can
	 * park (a read that would block returns EAGAIN first), so the first socket the tracepoints saw on
	 * that thread since the entry is this connection's, wherever the call returns. The slot is this
	 * call's only while it names the same connection and function (another call on that thread
	 * replaces it, after keeping its tuple). */
	struct hdrlog_call *tc = calls.lookup(&entry_id);
	if (tc && tc->conn == c.conn && tc->fn == HDRLOG_FN_GO_READ) {
		if (tc->attr == HDRLOG_ATTR_IN_CALL) {
			__builtin_memcpy(&c.tuple, &tc->tuple, sizeof(c.tuple));
			c.attr = HDRLOG_ATTR_IN_CALL;
			go_keep_tuple(k.pid, tc);
		}
		calls.delete(&entry_id);
	}
	if (c.attr != HDRLOG_ATTR_IN_CALL && fd >= 0)
		go_fd_tuple(k.pid, fd, &c); /* no socket I/O: served from tls.Conn's buffer */
	__s64 rc = (__s64)ctx->ax;
	if (rc <= 0)
		return 0;
	__u64 n = (__u64)rc;
	if (n > c.lenp)
		n = c.lenp;
	hdrlog_emit_data_fd(id, &c, n, HDRLOG_DIR_IN, fd);
	return 0;
}

/* (*Conn).Close: the address may be handed to the next connection, the fd to the next socket */
int go_close_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 conn = ctx->ax;
	__u32 zero = 0;
	struct hdrlog_buf *b = scratch.lookup(&zero);
	if (!b)
		return 0;
	hdrlog_fill(&b->h, id, conn, HDRLOG_EV_CLOSE, HDRLOG_FN_GO_CLOSE, HDRLOG_DIR_NONE);
	b->h.fd = go_conn_fd(conn);
	struct hdrlog_connkey hk = {.pid = id >> 32, .conn = conn};
	go_handshakes.delete(&hk);
	if (b->h.fd >= 0) {
		struct go_fdkey fk = {.pid = id >> 32, .fd = b->h.fd};
		go_fd_tuples.delete(&fk); /* the number goes to the next socket */
	}
	__builtin_memset(&b->h.tuple, 0, sizeof(b->h.tuple));
	b->h.lost = hdrlog_take_lost(b->h.pid, conn);
	hdrlog_submit(b, sizeof(b->h));
	return 0;
}
