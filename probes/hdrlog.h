/* hdrlog.h — the one event layout shared by every probe in probes/.
 *
 * Decoded in Python in exactly one place: src/hdrlog/events.py (EVENT_HEADER). tests/test_events.py
 * compiles this header with gcc and checks every field's offset and size against that decoder.
 * Keep fields naturally aligned and the struct free of implicit padding.
 */
#ifndef HDRLOG_H
#define HDRLOG_H

#define HDRLOG_ABI 1

/* what an event says */
enum hdrlog_kind {
	HDRLOG_EV_DATA = 1,      /* plaintext bytes read or written (maybe one chunk of several) */
	HDRLOG_EV_HANDSHAKE = 2, /* TLS handshake step; carries the connection tuple if one was seen */
	HDRLOG_EV_CLOSE = 3,     /* the TLS object is freed (its address may be reused afterwards) */
	HDRLOG_EV_LINK = 4,      /* connection tuple learned outside a TLS call (memory-BIO servers) */
	HDRLOG_EV_FORK = 5,      /* a traced process cloned a task; conn = the child's pid (or thread id) */
};

/* which function produced it */
enum hdrlog_fn {
	HDRLOG_FN_SSL_READ = 1,
	HDRLOG_FN_SSL_READ_EX = 2,
	HDRLOG_FN_SSL_WRITE = 3,
	HDRLOG_FN_SSL_WRITE_EX = 4,
	HDRLOG_FN_SSL_DO_HANDSHAKE = 5,
	HDRLOG_FN_SSL_FREE = 6,
	HDRLOG_FN_GO_READ = 7,
	HDRLOG_FN_GO_WRITE = 8,
	HDRLOG_FN_GO_CLOSE = 9,
	HDRLOG_FN_OSSL_READ_BYTES = 10,  /* OpenSSL's record layer, at its copy into SSL_read's buffer */
	HDRLOG_FN_OSSL_WRITE_BYTES = 11, /* OpenSSL's record layer, where SSL_write's data becomes records */
};

enum hdrlog_dir {
	HDRLOG_DIR_NONE = 0,
	HDRLOG_DIR_IN = 1,  /* plaintext the process read */
	HDRLOG_DIR_OUT = 2, /* plaintext the process wrote */
};

/* how the tuple in the event was learned */
enum hdrlog_attr {
	HDRLOG_ATTR_NONE = 0,        /* no socket seen */
	HDRLOG_ATTR_IN_CALL = 1,     /* socket I/O on the same thread inside the TLS call: exact */
	HDRLOG_ATTR_RECV_BEFORE = 2, /* last socket the thread received on before the call (memory BIO) */
	HDRLOG_ATTR_SEND_AFTER = 3,  /* first socket the thread sent on after the call (memory BIO) */
	HDRLOG_ATTR_GO_FD = 4,       /* Go: fd read through *tls.Conn -> net.Conn -> *netFD */
	HDRLOG_ATTR_LINK_NEXT = 5,   /* no tuple yet: a LINK for this connection follows from this thread (copy sites) */
};

/* a TCP connection as seen from the traced process */
struct hdrlog_tuple {
	__u16 family;   /* AF_INET (2) / AF_INET6 (10) / 0 */
	__u16 lport;    /* host order */
	__u16 rport;    /* host order */
	__u16 _pad;
	__u8 laddr[16]; /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
};

struct hdrlog_event {
	__u64 ts_ns;    /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 conn;     /* SSL* or *tls.Conn: connection identity within pid (reused after CLOSE) */
	__u32 pid;      /* tgid */
	__u32 tid;
	__u32 len;      /* bytes the call moved in total (original length) */
	__u32 cap;      /* bytes of data that follow this header */
	__u32 offset;   /* offset of this chunk within the call's bytes */
	__u32 lost;     /* events of this connection dropped (ring buffer full) just before this one */
	__u8 kind;      /* enum hdrlog_kind */
	__u8 fn;        /* enum hdrlog_fn */
	__u8 dir;       /* enum hdrlog_dir */
	__u8 attr;      /* enum hdrlog_attr */
	struct hdrlog_tuple tuple; /* valid when attr != HDRLOG_ATTR_NONE */
	char comm[16];
	__s32 fd;       /* file descriptor of the connection when the probe knows it, else -1 */
	/* followed by `cap` bytes of data */
};

/* A copy site (src/hdrlog/osslsites.py: a probe inside OpenSSL's record layer) finds the SSL*, the record type and
 * the peek flag wherever the compiler keeps them there; src/hdrlog/placement.py (copy_cookie) packs those places
 * into the uprobe's BPF cookie: bits 0-15 the SSL*, 16-31 the type, 32-47 peek, each a location: */
#define HDRLOG_LOC_VALID 0x8000 /* 0: absent */
#define HDRLOG_LOC_STACK 0x4000 /* at rsp + (bits 0-12) when the probed instruction runs, else register (0-12) */
#define HDRLOG_LOC_WIDE 0x2000  /* 8 bytes, else 4 */
#define HDRLOG_LOC_ARG 0x1FFF
/* registers, numbered for HDRLOG_LOC_* (struct pt_regs names) */
enum hdrlog_reg {
	HDRLOG_REG_AX = 0, HDRLOG_REG_BX = 1, HDRLOG_REG_CX = 2, HDRLOG_REG_DX = 3, HDRLOG_REG_SI = 4,
	HDRLOG_REG_DI = 5, HDRLOG_REG_BP = 6, HDRLOG_REG_R8 = 8, HDRLOG_REG_R9 = 9, HDRLOG_REG_R10 = 10,
	HDRLOG_REG_R11 = 11, HDRLOG_REG_R12 = 12, HDRLOG_REG_R13 = 13, HDRLOG_REG_R14 = 14, HDRLOG_REG_R15 = 15,
};

/* slots of the per-CPU `stats` array, summed by the consumer */
enum hdrlog_stat {
	HDRLOG_STAT_EMITTED = 0,       /* events written to the ring buffer */
	HDRLOG_STAT_DROPPED = 1,       /* events the ring buffer had no room for */
	HDRLOG_STAT_DROPPED_BYTES = 2, /* data bytes in those events */
	HDRLOG_STAT_CALLS_FULL = 3,    /* TLS calls not followed: in-flight table full */
	HDRLOG_STAT_WAKEUP_CTR = 4,    /* events since start, for wake-up batching (not a statistic) */
	HDRLOG_STAT_MAX = 5,
};

#endif
