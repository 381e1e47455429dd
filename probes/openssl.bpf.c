/* openssl.bpf.c — OpenSSL / BoringSSL: SSL_read(_ex), SSL_write(_ex), SSL_do_handshake, SSL_free, and the copy
 * sites inside OpenSSL's record layer.
 *
 * Which symbol each function is attached to, and where, is data in src/hdrlog/tlslibs/openssl.py.
 * Entry probes stash the call per thread (TLS calls do not nest on a thread); return probes emit the
 * plaintext the call actually moved. A connection is identified by (pid, SSL*).
 * Copy sites (src/hdrlog/osslsites.py) replace the read and write function probes where proven: one probe per
 * record on the instruction that moves its plaintext, no return probe, nothing for a read that finds no data.
 */
/* compiled after common.bpf.c in one main text (src/hdrlog/loader.py) */

/* int SSL_read(SSL *s, void *buf, int num) */
int ossl_read_enter(struct pt_regs *ctx)
{
	hdrlog_call_enter(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0, HDRLOG_FN_SSL_READ, 1);
	return 0;
}

/* int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes) */
int ossl_read_ex_enter(struct pt_regs *ctx)
{
	hdrlog_call_enter(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx), HDRLOG_FN_SSL_READ_EX, 1);
	return 0;
}

/* int SSL_write(SSL *s, const void *buf, int num) */
int ossl_write_enter(struct pt_regs *ctx)
{
	hdrlog_call_enter(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0, HDRLOG_FN_SSL_WRITE, 0);
	return 0;
}

/* int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written) */
int ossl_write_ex_enter(struct pt_regs *ctx)
{
	hdrlog_call_enter(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx), HDRLOG_FN_SSL_WRITE_EX, 0);
	return 0;
}

/* int SSL_do_handshake(SSL *s) */
int ossl_handshake_enter(struct pt_regs *ctx)
{
	hdrlog_call_enter(PT_REGS_PARM1(ctx), 0, 0, HDRLOG_FN_SSL_DO_HANDSHAKE, 1);
	return 0;
}

/* bytes moved by the call that is returning, or 0 */
static __always_inline __u64 ossl_moved(struct pt_regs *ctx, struct hdrlog_call *c)
{
	int rc = (int)PT_REGS_RC(ctx); /* C int: -1 must not read as 4294967295 */
	if (rc <= 0)
		return 0;
	if (!c->lenp)
		return (__u64)rc;
	__u64 n = 0;
	bpf_probe_read_user(&n, sizeof(n), (void *)c->lenp);
	return n;
}

static __always_inline int ossl_return(struct pt_regs *ctx, __u8 dir)
{
	struct hdrlog_thread *t = hdrlog_call_current();
	if (!t)
		return 0;
	struct hdrlog_call *c = &t->call;
	__u64 n = ossl_moved(ctx, c);
	if (n > 0) {
		hdrlog_emit_data(bpf_get_current_pid_tgid(), c, n, dir);
		/* memory BIO: the ciphertext leaves on the next socket send of this thread */
		if (dir == HDRLOG_DIR_OUT && c->attr != HDRLOG_ATTR_IN_CALL)
			t->send_pending = c->conn;
	}
	hdrlog_call_done(t);
	return 0;
}

int ossl_read_return(struct pt_regs *ctx)
{
	return ossl_return(ctx, HDRLOG_DIR_IN);
}

int ossl_write_return(struct pt_regs *ctx)
{
	return ossl_return(ctx, HDRLOG_DIR_OUT);
}

int ossl_handshake_return(struct pt_regs *ctx)
{
	struct hdrlog_thread *t = hdrlog_call_current();
	if (!t)
		return 0;
	struct hdrlog_call *c = &t->call;
	if (c->attr != HDRLOG_ATTR_NONE) {
		__u64 id = bpf_get_current_pid_tgid();
		hdrlog_emit_meta(id, c->conn, HDRLOG_EV_HANDSHAKE, HDRLOG_FN_SSL_DO_HANDSHAKE, c->attr, &c->tuple, 0);
		if (c->attr == HDRLOG_ATTR_IN_CALL)
			hdrlog_linked_set(id >> 32, c->conn);
	}
	hdrlog_call_done(t);
	return 0;
}

/* void SSL_free(SSL *s): the address may be handed to the next connection */
int ossl_free_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	hdrlog_emit_meta(id, PT_REGS_PARM1(ctx), HDRLOG_EV_CLOSE, HDRLOG_FN_SSL_FREE, HDRLOG_ATTR_NONE, 0, 0);
	hdrlog_linked_clear(id >> 32, PT_REGS_PARM1(ctx));
	return 0;
}

/* ---- copy sites ---------------------------------------------------------------------------------------- */

/* The value at location `loc` (HDRLOG_LOC_*, hdrlog.h) when the probed instruction runs; -1 if absent/unreadable */
static __always_inline int ossl_loc(struct pt_regs *ctx, __u64 loc, __u64 *out)
{
	__u64 v = 0;
	if (!(loc & HDRLOG_LOC_VALID))
		return -1;
	if (loc & HDRLOG_LOC_STACK) {
		/* 8 bytes read for a 4-byte value too: the stack beyond it is mapped, and the mask below drops it */
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(ctx->sp + (loc & HDRLOG_LOC_ARG))) != 0)
			return -1;
	} else {
		/* every register read at a constant offset of ctx (the verifier refuses a computed one), then picked */
		__u64 r[16] = {ctx->ax, ctx->bx, ctx->cx, ctx->dx, ctx->si, ctx->di, ctx->bp, 0,
			       ctx->r8, ctx->r9, ctx->r10, ctx->r11, ctx->r12, ctx->r13, ctx->r14, ctx->r15};
		__u64 i = loc & HDRLOG_LOC_ARG;
		if (i > 15 || i == 7)
			return -1;
		v = r[i & 15];
	}
	if (!(loc & HDRLOG_LOC_WIDE))
		v &= 0xFFFFFFFF;
	*out = v;
	return 0;
}

/* one record's plaintext of connection `conn`, `n` bytes at `buf` */
static __always_inline void ossl_copy_emit(__u64 conn, __u64 buf, __u64 n, __u8 fn, __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct hdrlog_call c = {};
	c.conn = conn;
	c.buf = buf;
	c.fn = fn;
	if (!hdrlog_linked(id >> 32, conn)) {
		if (dir == HDRLOG_DIR_OUT) {
			/* the socket this thread sends on next carries the records (socket BIO: inside this call): its
			 * LINK follows, and the consumer holds this event for it */
			struct hdrlog_thread *t = hdrlog_thread_get(1);
			if (t)
				t->send_pending = conn;
			c.attr = HDRLOG_ATTR_LINK_NEXT;
		} else {
			/* no call to attribute: the socket this thread last received on (in nginx, inside this SSL_read) */
			struct hdrlog_thread *t = hdrlog_thread_get(0);
			if (t && t->hint_valid) {
				__builtin_memcpy(&c.tuple, &t->hint, sizeof(c.tuple));
				c.attr = HDRLOG_ATTR_RECV_BEFORE;
			}
		}
	}
	hdrlog_emit_data(id, &c, n, dir);
}

/* `call memcpy(buf + done, record data, n)` in ssl3_read_bytes: rsi = plaintext, rdx = n; only application data
 * (type 23) that is consumed (peek 0) */
int ossl_rcopy(struct pt_regs *ctx)
{
	__u64 ck = bpf_get_attach_cookie(ctx), conn, type, peek;
	if (ossl_loc(ctx, ck & 0xFFFF, &conn) || ossl_loc(ctx, (ck >> 16) & 0xFFFF, &type) ||
	    ossl_loc(ctx, (ck >> 32) & 0xFFFF, &peek))
		return 0;
	if (type != 23 || peek != 0 || ctx->dx == 0)
		return 0;
	ossl_copy_emit(conn, ctx->si, ctx->dx, HDRLOG_FN_OSSL_READ_BYTES, HDRLOG_DIR_IN);
	return 0;
}

/* `call do_ssl3_write(s, type, buf, pipelens, numpipes, ...)` in ssl3_write_bytes: the data of numpipes records,
 * contiguous from rdx, their lengths in the size_t array at rcx */
int ossl_wcall(struct pt_regs *ctx)
{
	__u64 ck = bpf_get_attach_cookie(ctx), conn, type, n = 0;
	if (ossl_loc(ctx, ck & 0xFFFF, &conn) || ossl_loc(ctx, (ck >> 16) & 0xFFFF, &type))
		return 0;
	__u64 pipes = ctx->r8, lens = ctx->cx;
	if (type != 23 || pipes == 0 || pipes > 32) /* SSL_MAX_PIPELINES */
		return 0;
	for (int i = 0; i < 32; i++) {
		if (i >= pipes)
			break;
		__u64 l = 0;
		if (bpf_probe_read_user(&l, sizeof(l), (void *)(lens + 8 * i)) != 0)
			return 0;
		n += l;
	}
	if (n == 0)
		return 0;
	ossl_copy_emit(conn, ctx->dx, n, HDRLOG_FN_OSSL_WRITE_BYTES, HDRLOG_DIR_OUT);
	return 0;
}

/* `call EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT, size, &p)`, p = {out, inp, len, ...} */
int ossl_wmb(struct pt_regs *ctx)
{
	__u64 ck = bpf_get_attach_cookie(ctx), conn;
	if (ossl_loc(ctx, ck & 0xFFFF, &conn) || (__u32)ctx->si != 0x1A)
		return 0;
	__u64 p[3] = {};
	if (bpf_probe_read_user(p, sizeof(p), (void *)ctx->cx) != 0 || p[2] == 0)
		return 0;
	ossl_copy_emit(conn, p[1], p[2], HDRLOG_FN_OSSL_WRITE_BYTES, HDRLOG_DIR_OUT);
	return 0;
}
