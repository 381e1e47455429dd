/* openssl.bpf.c — OpenSSL / BoringSSL: SSL_read(_ex), SSL_write(_ex), SSL_do_handshake, SSL_free.
 *
 * Which symbol each function is attached to, and where, is data in src/hdrlog/tlslibs/openssl.py.
 * Entry probes stash the call per thread (TLS calls do not nest on a thread); return probes emit the
 * plaintext the call actually moved. A connection is identified by (pid, SSL*).
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
	if (c->attr != HDRLOG_ATTR_NONE)
		hdrlog_emit_meta(bpf_get_current_pid_tgid(), c->conn, HDRLOG_EV_HANDSHAKE, HDRLOG_FN_SSL_DO_HANDSHAKE,
				 c->attr, &c->tuple, 0);
	hdrlog_call_done(t);
	return 0;
}

/* void SSL_free(SSL *s): the address may be handed to the next connection */
int ossl_free_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	hdrlog_emit_meta(id, PT_REGS_PARM1(ctx), HDRLOG_EV_CLOSE, HDRLOG_FN_SSL_FREE, HDRLOG_ATTR_NONE, 0, 0);
	return 0;
}
