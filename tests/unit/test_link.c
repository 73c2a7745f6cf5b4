/* Unit tests of the replication link (src/repl/link.c): two links over a
 * socketpair on one loop, or one link and a raw socket the test drives by
 * hand; the handshake, refusals, message delivery, flow control, closing
 * and failing, and dialing/listening on 127.0.0.1. Every wait is a bounded
 * number of loop iterations. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/loop.h"
#include "common/util.h"
#include "leak_check.h"
#include "repl/link.h"
#include "repl/wire_codec.h"

#define MAX_MSGS 16

struct side {
	struct link *l;
	int ready, closed, close_err, nmsg, writable;
	char reason[512]; /* link_close_reason() in on_close */
	uint16_t types[MAX_MSGS];
	struct wire_msg msgs[MAX_MSGS];
	uint8_t *data; /* copy of the first JOURNAL_DATA's data */
	size_t data_len;
	uint64_t data_sums[MAX_MSGS]; /* xxh3 of each JOURNAL_DATA's data */
	bool free_on_msg, free_on_close;
};

static struct loop *loop;
static struct auth_key key_a, key_b;

#define RUN_UNTIL_N(cond, n)                                                                       \
	do {                                                                                       \
		for (int i_ = 0; i_ < (n) && !(cond); i_++)                                        \
			loop_run_once(loop, 100);                                                  \
	} while (0)
#define RUN_UNTIL(cond) RUN_UNTIL_N(cond, 200)
/* Bulk transfers move about one socket buffer (~200 KiB on AF_UNIX) per
 * iteration; these iterations don't sleep. */
#define RUN_UNTIL_BULK(cond) RUN_UNTIL_N(cond, 5000)

/* A few more iterations, for checking that nothing else happens. */
static void
run_idle(int n)
{
	for (int i = 0; i < n; i++)
		loop_run_once(loop, 10);
}

static void
on_ready(struct link *l, void *arg)
{
	struct side *s = arg;

	cr_assert(eq(ptr, l, s->l));
	cr_assert(link_is_ready(l));
	s->ready++;
}

static void
on_msg(struct link *l, const struct wire_msg *m, void *arg)
{
	struct side *s = arg;

	cr_assert(eq(ptr, l, s->l));
	if (s->nmsg < MAX_MSGS) {
		s->types[s->nmsg] = m->hdr.type;
		s->msgs[s->nmsg] = *m;
		if (m->hdr.type == WIRE_JOURNAL_DATA)
			s->data_sums[s->nmsg] =
			    XXH3_64bits(m->u.journal_data.data, m->u.journal_data.data_len);
		if (m->hdr.type == WIRE_JOURNAL_DATA && !s->data) {
			s->data_len = m->u.journal_data.data_len;
			s->data = malloc(s->data_len ? s->data_len : 1);
			cr_assert(s->data != NULL);
			memcpy(s->data, m->u.journal_data.data, s->data_len);
		}
	}
	s->nmsg++;
	if (s->free_on_msg) {
		link_free(l);
		s->l = NULL;
	}
}

static void
on_close(struct link *l, int err, void *arg)
{
	struct side *s = arg;

	cr_assert(eq(ptr, l, s->l));
	cr_assert(not(link_is_ready(l)));
	s->closed++;
	s->close_err = err;
	snprintf(s->reason, sizeof(s->reason), "%s", link_close_reason(l));
	if (s->free_on_close) {
		link_free(l);
		s->l = NULL;
	}
}

static void
on_writable(struct link *l, void *arg)
{
	struct side *s = arg;

	cr_assert(eq(ptr, l, s->l));
	s->writable++;
}

static const struct link_ops ops = {
    .on_ready = on_ready,
    .on_msg = on_msg,
    .on_close = on_close,
    .on_writable = on_writable,
};

static void
setup(void)
{
	cr_assert(eq(int, loop_new(&loop), 0));
	cr_assert(eq(int, auth_key_from_bytes("the shared secret of a", 22, &key_a), 0));
	cr_assert(eq(int, auth_key_from_bytes("the shared secret of b", 22, &key_b), 0));
}

static void
teardown(void)
{
	loop_free(loop);
	test_leak_check();
}

TestSuite(link, .init = setup, .fini = teardown, .timeout = 60);

static void
side_fini(struct side *s)
{
	link_free(s->l);
	s->l = NULL;
	free(s->data);
	s->data = NULL;
}

/* a and b over a socketpair: a dialed (primary), b accepted (secondary)
 * unless roles say otherwise. */
static void
make_pair(struct side *a, struct side *b, const struct auth_key *ka, const struct auth_key *kb,
          enum wire_role ra, enum wire_role rb)
{
	int sv[2];

	memset(a, 0, sizeof(*a));
	memset(b, 0, sizeof(*b));
	cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0));
	cr_assert(eq(int, link_new(loop, sv[0], ra, ka, "site-a", "peer-b", &ops, a, &a->l), 0));
	cr_assert(eq(int, link_new(loop, sv[1], rb, kb, "site-b", "peer-a", &ops, b, &b->l), 0));
	/* Nothing runs inside link_new. */
	cr_assert(eq(int, a->ready + a->closed + b->ready + b->closed, 0));
}

static void
make_ready_pair(struct side *a, struct side *b)
{
	make_pair(a, b, &key_a, &key_a, WIRE_ROLE_PRIMARY, WIRE_ROLE_SECONDARY);
	RUN_UNTIL(a->ready && b->ready);
	cr_assert(eq(int, a->ready, 1));
	cr_assert(eq(int, b->ready, 1));
}

/* ---- A raw peer the test drives ------------------------------------------ */

struct raw {
	int fd;
	uint8_t buf[8192];
	size_t len;
	uint8_t nonce[WIRE_NONCE_LEN];
};

/* One link on sv[0], the raw peer on sv[1]. */
static void
make_raw(struct side *a, struct raw *raw, enum wire_role role)
{
	int sv[2];

	memset(a, 0, sizeof(*a));
	memset(raw, 0, sizeof(*raw));
	cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0));
	cr_assert(eq(int, link_new(loop, sv[0], role, &key_a, "site-a", "raw", &ops, a, &a->l), 0));
	raw->fd = sv[1];
	auth_nonce(raw->nonce);
}

static void
raw_write(struct raw *raw, const void *buf, size_t len)
{
	cr_assert(eq(i64, (int64_t)write(raw->fd, buf, len), (int64_t)len));
}

static void
raw_send(struct raw *raw, const struct wire_msg *m)
{
	uint8_t buf[2048];
	ssize_t n = wire_encode(m, buf, sizeof(buf));

	cr_assert(gt(i64, (int64_t)n, 0));
	raw_write(raw, buf, (size_t)n);
}

/* Runs the loop until the link sent the raw peer a whole frame; decodes
 * it. Returns false at EOF. */
static bool
raw_recv(struct raw *raw, struct wire_msg *m)
{
	for (int i = 0; i < 200; i++) {
		ssize_t n = wire_frame_peek(raw->buf, raw->len, NULL);

		cr_assert(ge(i64, (int64_t)n, 0));
		if (n > 0 && (size_t)n <= raw->len) {
			cr_assert(eq(int, wire_decode(raw->buf, (size_t)n, m), 0));
			memmove(raw->buf, raw->buf + n, raw->len - (size_t)n);
			raw->len -= (size_t)n;
			return true;
		}
		n = recv(raw->fd, raw->buf + raw->len, sizeof(raw->buf) - raw->len, MSG_DONTWAIT);
		if (n == 0)
			return false;
		if (n > 0) {
			raw->len += (size_t)n;
			continue;
		}
		cr_assert(eq(int, errno, EAGAIN));
		loop_run_once(loop, 20);
	}
	cr_fatal("no frame from the link");
	return false;
}

/* Reads frames until the link's ERROR (the handshake frames it sent before
 * may come first), then expects EOF. */
static void
raw_expect_error(struct raw *raw, int32_t code)
{
	struct wire_msg m;

	for (int i = 0; i < 3; i++) {
		cr_assert(raw_recv(raw, &m), "EOF before the ERROR");
		if (m.hdr.type == WIRE_ERROR)
			break;
		cr_assert(m.hdr.type == WIRE_HELLO || m.hdr.type == WIRE_AUTH, "got %s",
		          wire_type_name(m.hdr.type));
	}
	cr_assert(eq(u32, m.hdr.type, WIRE_ERROR));
	cr_assert(eq(i32, m.u.error.code, code));
	cr_assert(not(raw_recv(raw, &m)));
}

static void
raw_hello(struct raw *raw, uint32_t version, enum wire_role role)
{
	struct wire_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_HELLO;
	m.u.hello.version = version;
	m.u.hello.role = role;
	memcpy(m.u.hello.nonce, raw->nonce, WIRE_NONCE_LEN);
	strcpy(m.u.hello.site, "raw-site");
	raw_send(raw, &m);
}

/* The whole handshake by hand, as the secondary, with key_a. */
static void
raw_handshake(struct raw *raw)
{
	struct wire_msg hello, auth, m;

	cr_assert(raw_recv(raw, &hello));
	cr_assert(eq(u32, hello.hdr.type, WIRE_HELLO));
	cr_assert(eq(u32, hello.u.hello.version, WIRE_VERSION));
	cr_assert(eq(u32, hello.u.hello.role, WIRE_ROLE_PRIMARY));
	cr_assert_str_eq(hello.u.hello.site, "site-a");
	raw_hello(raw, WIRE_VERSION, WIRE_ROLE_SECONDARY);
	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_AUTH;
	auth_mac(&key_a, WIRE_ROLE_SECONDARY, raw->nonce, hello.u.hello.nonce, m.u.auth.mac);
	raw_send(raw, &m);
	cr_assert(raw_recv(raw, &auth));
	cr_assert(eq(u32, auth.hdr.type, WIRE_AUTH));
	cr_assert(eq(int,
	             auth_verify(&key_a, WIRE_ROLE_PRIMARY, hello.u.hello.nonce, raw->nonce,
	                         auth.u.auth.mac),
	             0));
}

static struct wire_msg
status_msg(uint64_t seq)
{
	struct wire_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_STATUS;
	m.u.status.received_seq = seq;
	m.u.status.restored_seq = seq - 1;
	m.u.status.restored_ts_ns = seq * 1000;
	return m;
}

static struct wire_msg
data_msg(const uint8_t *data, uint32_t len)
{
	struct wire_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_JOURNAL_DATA;
	m.u.journal_data.req_id = 1;
	m.u.journal_data.first_seq = 1;
	m.u.journal_data.last_seq = 1;
	m.u.journal_data.nrecords = 1;
	m.u.journal_data.raw_len = len;
	m.u.journal_data.data_len = len;
	m.u.journal_data.data = data;
	return m;
}

/* ---- Handshake ----------------------------------------------------------- */

Test(link, handshake_with_the_same_key)
{
	struct side a, b;

	make_ready_pair(&a, &b);
	cr_assert(eq(int, a.closed + b.closed, 0));
	cr_assert_str_eq(link_peer_site(a.l), "site-b");
	cr_assert_str_eq(link_peer_site(b.l), "site-a");
	cr_assert_str_eq(link_peer(a.l), "peer-b");
	/* HELLO (32 + 104) and AUTH (32 + 32) each way. */
	cr_assert(eq(u64, link_bytes_sent(a.l), 200));
	cr_assert(eq(u64, link_bytes_received(b.l), 200));
	cr_assert(eq(u64, link_bytes_sent(b.l), 200));
	cr_assert(eq(u64, link_bytes_received(a.l), 200));
	cr_assert(link_can_send(a.l, 1 << 20));
	run_idle(5);
	cr_assert(eq(int, a.ready + b.ready, 2));
	cr_assert(eq(int, a.closed + b.closed, 0));
	side_fini(&a);
	side_fini(&b);
}

Test(link, wrong_key_closes_both)
{
	struct side a, b;

	make_pair(&a, &b, &key_a, &key_b, WIRE_ROLE_PRIMARY, WIRE_ROLE_SECONDARY);
	cr_assert_str_eq(link_peer_site(a.l), "");
	RUN_UNTIL(a.closed && b.closed);
	cr_assert(eq(int, a.closed, 1));
	cr_assert(eq(int, b.closed, 1));
	cr_assert(eq(int, a.close_err, -EACCES));
	cr_assert(eq(int, b.close_err, -EACCES));
	/* Each side can say why, whichever saw the bad MAC first. */
	cr_assert(strstr(a.reason, "authentication") != NULL, "%s", a.reason);
	cr_assert(strstr(b.reason, "authentication") != NULL, "%s", b.reason);
	cr_assert(eq(int, a.ready + b.ready, 0));
	run_idle(5);
	cr_assert(eq(int, a.closed + b.closed, 2));
	side_fini(&a);
	side_fini(&b);
}

Test(link, same_role_refused)
{
	struct side a, b;

	make_pair(&a, &b, &key_a, &key_a, WIRE_ROLE_PRIMARY, WIRE_ROLE_PRIMARY);
	RUN_UNTIL(a.closed && b.closed);
	cr_assert(eq(int, a.close_err, -EPROTO));
	cr_assert(eq(int, b.close_err, -EPROTO));
	cr_assert(eq(int, a.ready + b.ready, 0));
	side_fini(&a);
	side_fini(&b);

	make_pair(&a, &b, &key_a, &key_a, WIRE_ROLE_SECONDARY, WIRE_ROLE_SECONDARY);
	RUN_UNTIL(a.closed && b.closed);
	cr_assert(eq(int, a.close_err, -EPROTO));
	cr_assert(eq(int, b.close_err, -EPROTO));
	cr_assert(eq(int, a.ready + b.ready, 0));
	side_fini(&a);
	side_fini(&b);
}

Test(link, wrong_version_refused)
{
	struct side a;
	struct raw raw;
	struct wire_msg m;

	make_raw(&a, &raw, WIRE_ROLE_PRIMARY);
	raw_hello(&raw, WIRE_VERSION + 1, WIRE_ROLE_SECONDARY);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, -EPROTONOSUPPORT));
	cr_assert(eq(int, a.ready, 0));
	/* It said so before closing. */
	cr_assert(raw_recv(&raw, &m));
	cr_assert(eq(u32, m.hdr.type, WIRE_HELLO));
	raw_expect_error(&raw, EPROTONOSUPPORT);
	close(raw.fd);
	side_fini(&a);
}

Test(link, handshake_by_hand)
{
	struct side a;
	struct raw raw;

	make_raw(&a, &raw, WIRE_ROLE_PRIMARY);
	raw_handshake(&raw);
	RUN_UNTIL(a.ready);
	cr_assert(eq(int, a.ready, 1));
	cr_assert_str_eq(link_peer_site(a.l), "raw-site");
	close(raw.fd);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, 0));
	side_fini(&a);
}

/* ---- Refusals ------------------------------------------------------------ */

Test(link, garbage_closes)
{
	static const char garbage[] = "GET / HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
	struct side a;
	struct raw raw;
	struct wire_msg m;

	make_raw(&a, &raw, WIRE_ROLE_SECONDARY);
	raw_write(&raw, garbage, sizeof(garbage) - 1);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.closed, 1));
	cr_assert(eq(int, a.close_err, -EPROTO));
	cr_assert(eq(int, a.ready, 0));
	cr_assert(raw_recv(&raw, &m));
	cr_assert(eq(u32, m.hdr.type, WIRE_HELLO));
	raw_expect_error(&raw, EPROTO);
	close(raw.fd);
	side_fini(&a);
}

Test(link, corrupted_frame_closes)
{
	struct side a;
	struct raw raw;
	uint8_t buf[256];
	struct wire_msg m = status_msg(5);
	ssize_t n;

	make_raw(&a, &raw, WIRE_ROLE_PRIMARY);
	raw_handshake(&raw);
	RUN_UNTIL(a.ready);
	n = wire_encode(&m, buf, sizeof(buf));
	cr_assert(gt(i64, (int64_t)n, 0));
	buf[40] ^= 1; /* payload: checksum mismatch */
	raw_write(&raw, buf, (size_t)n);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, -EBADMSG));
	cr_assert(eq(int, a.nmsg, 0));
	close(raw.fd);
	side_fini(&a);
}

Test(link, message_before_auth_closes)
{
	struct side a;
	struct raw raw;
	struct wire_msg m = status_msg(7);

	/* Without even a HELLO. */
	make_raw(&a, &raw, WIRE_ROLE_SECONDARY);
	raw_send(&raw, &m);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, -EPROTO));
	cr_assert(eq(int, a.nmsg + a.ready, 0));
	raw_expect_error(&raw, EPROTO);
	close(raw.fd);
	side_fini(&a);

	/* After a HELLO, before the AUTH. */
	make_raw(&a, &raw, WIRE_ROLE_PRIMARY);
	raw_hello(&raw, WIRE_VERSION, WIRE_ROLE_SECONDARY);
	raw_send(&raw, &m);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, -EPROTO));
	cr_assert(eq(int, a.nmsg + a.ready, 0));
	raw_expect_error(&raw, EPROTO);
	close(raw.fd);
	side_fini(&a);

	/* AUTH before HELLO. */
	make_raw(&a, &raw, WIRE_ROLE_PRIMARY);
	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_AUTH;
	raw_send(&raw, &m);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, -EPROTO));
	raw_expect_error(&raw, EPROTO);
	close(raw.fd);
	side_fini(&a);
}

/* An unauthenticated peer can't make the link buffer a big frame. */
Test(link, big_frame_before_auth_closes)
{
	struct side a;
	struct raw raw;
	struct wire_msg m;
	uint8_t buf[64];
	static uint8_t data[100000];
	ssize_t n;

	make_raw(&a, &raw, WIRE_ROLE_SECONDARY);
	m = data_msg(data, sizeof(data));
	{
		uint8_t *frame = malloc(wire_encoded_size(&m));

		cr_assert(frame != NULL);
		n = wire_encode(&m, frame, wire_encoded_size(&m));
		cr_assert(gt(i64, (int64_t)n, 0));
		memcpy(buf, frame, 32); /* the header only */
		free(frame);
	}
	raw_write(&raw, buf, 32);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, -EPROTO));
	raw_expect_error(&raw, EPROTO);
	close(raw.fd);
	side_fini(&a);
}

Test(link, peer_closing_during_handshake)
{
	struct side a;
	struct raw raw;

	make_raw(&a, &raw, WIRE_ROLE_PRIMARY);
	close(raw.fd);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.closed, 1));
	/* Our HELLO may hit the closed socket first. */
	cr_assert(a.close_err == -ECONNRESET || a.close_err == -EPIPE, "%d", a.close_err);
	side_fini(&a);
}

/* ---- Messages ------------------------------------------------------------ */

Test(link, messages_round_trip)
{
	struct side a, b;
	struct wire_msg m;
	uint8_t *data = malloc(WIRE_MAX_DATA);

	cr_assert(data != NULL);
	for (size_t i = 0; i < WIRE_MAX_DATA; i++)
		data[i] = (uint8_t)(i * 13 + (i >> 12));
	make_ready_pair(&a, &b);

	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_PAIR_CREATE;
	strcpy(m.u.pair_create.group, "db1");
	m.u.pair_create.pair_id = 99;
	m.u.pair_create.start_seq = 1;
	m.u.pair_create.nvolumes = 1;
	strcpy(m.u.pair_create.volumes[0].name, "vol0");
	m.u.pair_create.volumes[0].size = 1 << 30;
	cr_assert(eq(int, link_send(a.l, &m), 0));

	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_READ_JOURNAL;
	m.u.read_journal.req_id = 5;
	m.u.read_journal.max_bytes = WIRE_MAX_DATA;
	cr_assert(eq(int, link_send(b.l, &m), 0));

	m = data_msg(data, WIRE_MAX_DATA);
	cr_assert(eq(int, link_send(a.l, &m), 0));
	m = status_msg(33);
	cr_assert(eq(int, link_send(b.l, &m), 0));

	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_PRIMARY_STATUS;
	m.u.primary_status.state = WIRE_STATE_PAIR;
	m.u.primary_status.written_seq = 1234;
	cr_assert(eq(int, link_send(a.l, &m), 0));

	RUN_UNTIL_BULK(a.nmsg == 2 && b.nmsg == 3);
	cr_assert(eq(int, a.nmsg, 2));
	cr_assert(eq(int, b.nmsg, 3));
	cr_assert(eq(u32, b.types[0], WIRE_PAIR_CREATE));
	cr_assert_str_eq(b.msgs[0].u.pair_create.group, "db1");
	cr_assert_str_eq(b.msgs[0].u.pair_create.volumes[0].name, "vol0");
	cr_assert(eq(u64, b.msgs[0].u.pair_create.volumes[0].size, 1 << 30));
	cr_assert(eq(u32, b.types[1], WIRE_JOURNAL_DATA));
	cr_assert(eq(u32, b.msgs[1].u.journal_data.data_len, WIRE_MAX_DATA));
	cr_assert(eq(u64, b.data_len, WIRE_MAX_DATA));
	cr_assert(eq(int, memcmp(b.data, data, WIRE_MAX_DATA), 0));
	cr_assert(eq(u32, b.types[2], WIRE_PRIMARY_STATUS));
	cr_assert(eq(u64, b.msgs[2].u.primary_status.written_seq, 1234));
	cr_assert(eq(u32, a.types[0], WIRE_READ_JOURNAL));
	cr_assert(eq(u64, a.msgs[0].u.read_journal.req_id, 5));
	cr_assert(eq(u32, a.types[1], WIRE_STATUS));
	cr_assert(eq(u64, a.msgs[1].u.status.received_seq, 33));
	cr_assert(eq(u64, link_bytes_sent(a.l), link_bytes_received(b.l)));
	cr_assert(eq(u64, link_bytes_sent(b.l), link_bytes_received(a.l)));
	cr_assert(gt(u64, link_bytes_received(b.l), WIRE_MAX_DATA));
	cr_assert(eq(int, a.closed + b.closed, 0));
	side_fini(&a);
	side_fini(&b);
	free(data);
}

Test(link, send_rules)
{
	struct side a, b;
	struct wire_msg m = status_msg(1);

	make_pair(&a, &b, &key_a, &key_a, WIRE_ROLE_PRIMARY, WIRE_ROLE_SECONDARY);
	/* Not authenticated yet. */
	cr_assert(eq(int, link_send(a.l, &m), -ENOTCONN));
	cr_assert(not(link_is_ready(a.l)));
	cr_assert(not(link_can_send(a.l, 1)));
	RUN_UNTIL(a.ready && b.ready);
	cr_assert(eq(int, link_send(a.l, &m), 0));
	/* The handshake messages are the link's own. */
	m.hdr.type = WIRE_HELLO;
	cr_assert(eq(int, link_send(a.l, &m), -EINVAL));
	/* Not encodable. */
	memset(&m, 0, sizeof(m));
	m.hdr.type = WIRE_PRIMARY_STATUS;
	cr_assert(eq(int, link_send(a.l, &m), -EINVAL));
	m.hdr.type = 200;
	cr_assert(eq(int, link_send(a.l, &m), -EINVAL));
	cr_assert(not(link_can_send(a.l, LINK_MAX_QUEUED + 1)));
	RUN_UNTIL(b.nmsg == 1);
	run_idle(3);
	cr_assert(eq(int, b.nmsg, 1));
	/* Closed. */
	side_fini(&b);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.close_err, 0));
	m = status_msg(2);
	cr_assert(eq(int, link_send(a.l, &m), -ENOTCONN));
	cr_assert(not(link_can_send(a.l, 1)));
	link_fail(a.l, EIO, "too late"); /* no effect */
	run_idle(3);
	cr_assert(eq(int, a.closed, 1));
	side_fini(&a);
}

/* ---- Closing ------------------------------------------------------------- */

Test(link, peer_close_reports_zero_once)
{
	struct side a, b;

	make_ready_pair(&a, &b);
	side_fini(&b);
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.closed, 1));
	cr_assert(eq(int, a.close_err, 0));
	run_idle(5);
	cr_assert(eq(int, a.closed, 1));
	cr_assert(eq(int, b.closed, 0)); /* link_free: no on_close */
	side_fini(&a);
}

Test(link, on_close_is_deferred)
{
	struct side a, b;
	struct wire_msg m = status_msg(3);
	int r;

	make_ready_pair(&a, &b);
	side_fini(&b);
	/* The peer is gone: the send may fail at once, but on_close waits
	 * for the loop. */
	r = link_send(a.l, &m);
	cr_assert(r == 0 || r == -ENOTCONN, "%d", r);
	r = link_send(a.l, &m);
	cr_assert(r == 0 || r == -ENOTCONN, "%d", r);
	cr_assert(eq(int, a.closed, 0));
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.closed, 1));
	run_idle(5);
	cr_assert(eq(int, a.closed, 1));
	side_fini(&a);
}

Test(link, link_fail_delivers_the_error)
{
	struct side a, b;
	struct wire_msg m = status_msg(3);

	make_ready_pair(&a, &b);
	/* Sent before the failure: may arrive, then the ERROR. */
	cr_assert(eq(int, link_send(a.l, &m), 0));
	link_fail(a.l, EPERM, "group '%s' is not allowed here", "db1");
	cr_assert(eq(int, a.closed, 0)); /* deferred */
	cr_assert(not(link_is_ready(a.l)));
	cr_assert(eq(int, link_send(a.l, &m), -ENOTCONN));
	RUN_UNTIL(a.closed && b.closed);
	cr_assert(eq(int, a.closed, 1));
	cr_assert(eq(int, b.closed, 1));
	cr_assert(eq(int, a.close_err, -EPERM));
	cr_assert(eq(int, b.close_err, -EPERM));
	/* The peer keeps the text of the ERROR for its own messages. */
	cr_assert_str_eq(b.reason, "group 'db1' is not allowed here");
	cr_assert_str_eq(a.reason, "");
	cr_assert(le(int, b.nmsg, 1));
	side_fini(&a);
	side_fini(&b);

	/* Negative errnos are accepted too; failing during the handshake. */
	make_pair(&a, &b, &key_a, &key_a, WIRE_ROLE_PRIMARY, WIRE_ROLE_SECONDARY);
	link_fail(b.l, -ESHUTDOWN, "going away");
	RUN_UNTIL(a.closed && b.closed);
	cr_assert(eq(int, a.close_err, -ESHUTDOWN));
	cr_assert(eq(int, b.close_err, -ESHUTDOWN));
	cr_assert(eq(int, a.ready + b.ready, 0));
	side_fini(&a);
	side_fini(&b);
}

Test(link, link_fail_is_bounded_when_the_peer_does_not_read)
{
	struct side a;
	struct raw raw;
	struct wire_msg m;
	uint8_t *data = calloc(1, WIRE_MAX_DATA);
	uint64_t t0, ms;
	int r = 0, n = 0;

	cr_assert(data != NULL);
	make_raw(&a, &raw, WIRE_ROLE_PRIMARY);
	raw_handshake(&raw);
	RUN_UNTIL(a.ready);
	cr_assert(eq(int, a.ready, 1));
	/* The raw peer reads nothing more: fill the socket and the queue. */
	m = data_msg(data, WIRE_MAX_DATA);
	while (n < 64 && (r = link_send(a.l, &m)) == 0)
		n++;
	cr_assert(eq(int, r, -ENOBUFS));
	cr_assert(ge(int, n, (int)(LINK_MAX_QUEUED / WIRE_MAX_DATA) - 1));
	cr_assert(not(link_can_send(a.l, wire_encoded_size(&m))));
	run_idle(2);
	t0 = util_mono_ns();
	link_fail(a.l, EIO, "giving up");
	RUN_UNTIL(a.closed);
	ms = (util_mono_ns() - t0) / 1000000;
	cr_assert(eq(int, a.closed, 1));
	cr_assert(eq(int, a.close_err, -EIO));
	cr_assert(ge(u64, ms, 1500));
	cr_assert(lt(u64, ms, 10000));
	close(raw.fd);
	side_fini(&a);
	free(data);
}

/* ---- Flow control and freeing in callbacks ------------------------------- */

Test(link, queue_limit_and_on_writable)
{
	struct side a, b;
	struct wire_msg m;
	uint8_t *data = calloc(1, WIRE_MAX_DATA);
	int r = 0, n = 0;

	cr_assert(data != NULL);
	make_ready_pair(&a, &b);
	m = data_msg(data, WIRE_MAX_DATA);
	/* Without running the loop, the peer can't read: the queue fills. */
	while (n < 64 && (r = link_send(a.l, &m)) == 0)
		n++;
	cr_assert(eq(int, r, -ENOBUFS));
	cr_assert(lt(int, n, 64));
	cr_assert(not(link_can_send(a.l, wire_encoded_size(&m))));
	cr_assert(link_can_send(a.l, 0));
	RUN_UNTIL_BULK(b.nmsg == n && a.writable);
	cr_assert(eq(int, b.nmsg, n));
	cr_assert(ge(int, a.writable, 1));
	cr_assert(link_can_send(a.l, wire_encoded_size(&m)));
	cr_assert(eq(int, a.closed + b.closed, 0));
	side_fini(&a);
	side_fini(&b);
	free(data);
}

/* A large JOURNAL_DATA is written from the caller's buffer, and what the
 * socket doesn't take at once is copied before link_send returns: the
 * caller may reuse its buffer right away. The peer doesn't read until all
 * are queued, so all but the first frame wait in the queue. */
Test(link, large_data_is_kept_past_link_send)
{
	enum { NFRAMES = 8 };
	struct side a, b;
	uint8_t *data = malloc(1u << 20);
	uint64_t sums[NFRAMES];

	cr_assert(data != NULL);
	make_ready_pair(&a, &b);
	for (unsigned i = 0; i < NFRAMES; i++) {
		/* Odd frames are small: copied whole, in order with the rest. */
		uint32_t len = i % 2 ? 1000 : 1u << 20;
		struct wire_msg m = data_msg(data, len);

		for (uint32_t k = 0; k < len; k++)
			data[k] = (uint8_t)(k * 7 + i);
		sums[i] = XXH3_64bits(data, len);
		cr_assert(eq(int, link_send(a.l, &m), 0), "frame %u", i);
		memset(data, 0xee, len); /* the caller's buffer, reused */
	}
	RUN_UNTIL_BULK(b.nmsg == NFRAMES);
	cr_assert(eq(int, b.nmsg, NFRAMES));
	for (unsigned i = 0; i < NFRAMES; i++) {
		cr_assert(eq(u32, b.types[i], WIRE_JOURNAL_DATA));
		cr_assert(eq(u32, b.msgs[i].u.journal_data.data_len, i % 2 ? 1000 : 1u << 20));
		cr_assert(eq(u64, b.data_sums[i], sums[i]), "frame %u arrived damaged", i);
	}
	cr_assert(eq(int, a.closed + b.closed, 0));
	side_fini(&a);
	side_fini(&b);
	free(data);
}

/* A refused link_can_send arms on_writable, also when the queue never went
 * above half: a caller waiting for room for more than half the queue must
 * be woken when it drains. */
Test(link, refused_can_send_arms_on_writable)
{
	struct side a, b;
	uint8_t *data = calloc(1, 1u << 20);
	struct wire_msg m;

	cr_assert(data != NULL);
	make_ready_pair(&a, &b);
	m = data_msg(data, 1u << 20);
	/* Without running the loop the socket takes a part; the rest waits. */
	cr_assert(eq(int, link_send(a.l, &m), 0));
	cr_assert(not(link_can_send(a.l, LINK_MAX_QUEUED)));
	RUN_UNTIL_BULK(b.nmsg == 1 && a.writable);
	cr_assert(eq(int, b.nmsg, 1));
	cr_assert(eq(int, a.writable, 1));
	cr_assert(link_can_send(a.l, LINK_MAX_QUEUED));
	/* With nothing queued there is nothing to wait for: no wakeup. */
	cr_assert(not(link_can_send(a.l, LINK_MAX_QUEUED + 1)));
	run_idle(5);
	cr_assert(eq(int, a.writable, 1));
	cr_assert(eq(int, a.closed + b.closed, 0));
	side_fini(&a);
	side_fini(&b);
	free(data);
}

Test(link, free_inside_callbacks)
{
	struct side a, b;
	struct wire_msg m = status_msg(9);

	/* In on_msg, with more frames behind it in the same read. */
	make_ready_pair(&a, &b);
	b.free_on_msg = true;
	for (int i = 0; i < 3; i++)
		cr_assert(eq(int, link_send(a.l, &m), 0));
	RUN_UNTIL(b.nmsg >= 1 && a.closed);
	cr_assert(eq(int, b.nmsg, 1));
	cr_assert(eq(ptr, b.l, NULL));
	cr_assert(a.close_err == 0 || a.close_err == -ECONNRESET, "%d", a.close_err);
	side_fini(&a);
	side_fini(&b);

	/* In on_close. */
	make_pair(&a, &b, &key_a, &key_b, WIRE_ROLE_PRIMARY, WIRE_ROLE_SECONDARY);
	a.free_on_close = b.free_on_close = true;
	RUN_UNTIL(a.closed && b.closed);
	cr_assert(eq(int, a.closed + b.closed, 2));
	cr_assert(eq(ptr, a.l, NULL));
	cr_assert(eq(ptr, b.l, NULL));
	run_idle(3);
}

/* ---- TCP: dial and listen ------------------------------------------------ */

struct acceptor {
	struct loop_handle h;
	int fd;
};

static void
accept_cb(struct loop *lp, int fd, uint32_t events, void *arg)
{
	struct acceptor *acc = arg;

	(void)lp;
	(void)events;
	if (acc->fd < 0)
		acc->fd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static uint16_t
bound_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	cr_assert(eq(int, getsockname(fd, (struct sockaddr *)&sin, &sl), 0));
	cr_assert(eq(int, sin.sin_family, AF_INET));
	return ntohs(sin.sin_port);
}

Test(link, dial_and_listen_over_tcp)
{
	struct acceptor acc = {.fd = -1};
	struct side a, b;
	char addr[64], err[256] = "";
	int lfd = -1, cfd = -1, fl;

	cr_assert(eq(int, link_listen("127.0.0.1:0", &lfd, err, sizeof(err)), 0), "%s", err);
	fl = fcntl(lfd, F_GETFL);
	cr_assert(ne(int, fl &O_NONBLOCK, 0));
	cr_assert(ne(int, fcntl(lfd, F_GETFD) & FD_CLOEXEC, 0));
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", bound_port(lfd));
	cr_assert(eq(int, loop_add_fd(loop, &acc.h, lfd, EPOLLIN, accept_cb, &acc), 0));
	cr_assert(eq(int, link_dial(addr, &cfd, err, sizeof(err)), 0), "%s", err);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	/* Connecting: the link checks the result when the socket is writable. */
	cr_assert(eq(int,
	             link_new(loop, cfd, WIRE_ROLE_PRIMARY, &key_a, "site-a", addr, &ops, &a, &a.l),
	             0));
	RUN_UNTIL(acc.fd >= 0);
	cr_assert(ge(int, acc.fd, 0));
	cr_assert(eq(int,
	             link_new(loop, acc.fd, WIRE_ROLE_SECONDARY, &key_a, "site-b",
	                      "127.0.0.1:client", &ops, &b, &b.l),
	             0));
	RUN_UNTIL(a.ready && b.ready);
	cr_assert(eq(int, a.ready, 1));
	cr_assert(eq(int, b.ready, 1));
	cr_assert_str_eq(link_peer(a.l), addr);
	cr_assert_str_eq(link_peer_site(a.l), "site-b");
	{
		struct wire_msg m = status_msg(77);

		cr_assert(eq(int, link_send(b.l, &m), 0));
		RUN_UNTIL(a.nmsg == 1);
		cr_assert(eq(u64, a.msgs[0].u.status.received_seq, 77));
	}
	side_fini(&a);
	RUN_UNTIL(b.closed);
	cr_assert(eq(int, b.close_err, 0));
	side_fini(&b);
	loop_del_fd(loop, &acc.h);
	close(lfd);
}

Test(link, dial_refused)
{
	struct side a;
	char addr[64], err[256] = "";
	int lfd = -1, cfd = -1, r;

	/* A port nobody listens on: bound, then closed. */
	cr_assert(eq(int, link_listen("127.0.0.1:0", &lfd, err, sizeof(err)), 0), "%s", err);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", bound_port(lfd));
	close(lfd);
	r = link_dial(addr, &cfd, err, sizeof(err));
	if (r < 0) {
		cr_assert(eq(int, r, -ECONNREFUSED));
		cr_assert(ne(ptr, strstr(err, addr), NULL), "%s", err);
		return;
	}
	memset(&a, 0, sizeof(a));
	cr_assert(eq(int,
	             link_new(loop, cfd, WIRE_ROLE_PRIMARY, &key_a, "site-a", addr, &ops, &a, &a.l),
	             0));
	RUN_UNTIL(a.closed);
	cr_assert(eq(int, a.closed, 1));
	cr_assert(eq(int, a.close_err, -ECONNREFUSED));
	cr_assert(eq(int, a.ready, 0));
	side_fini(&a);
}

Test(link, bad_addresses)
{
	char err[256];
	int fd = -1;

	err[0] = '\0';
	cr_assert(eq(int, link_dial("nohost", &fd, err, sizeof(err)), -EINVAL));
	cr_assert(ne(ptr, strstr(err, "HOST:PORT"), NULL), "%s", err);
	cr_assert(eq(int, link_dial(":7790", &fd, err, sizeof(err)), -EINVAL));
	cr_assert(eq(int, link_dial("127.0.0.1:", &fd, err, sizeof(err)), -EINVAL));
	cr_assert(eq(int, link_dial("127.0.0.1:99999", &fd, err, sizeof(err)), -EINVAL));
	cr_assert(eq(int, link_listen("127.0.0.1:7x", &fd, err, sizeof(err)), -EINVAL));
	cr_assert(eq(int, link_listen("[::1:7790", &fd, err, sizeof(err)), -EINVAL));
	cr_assert(eq(int, fd, -1));
}

Test(link, link_new_checks_arguments)
{
	struct link *l = NULL;
	struct link_ops no_close = {.on_ready = on_ready};
	char long_site[WIRE_SITE_LEN + 2];
	int sv[2];

	cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0));
	/* The fd is the link's even on failure: closed. */
	cr_assert(
	    eq(int, link_new(loop, sv[0], WIRE_ROLE_PRIMARY, &key_a, "s", "p", &no_close, NULL, &l),
	       -EINVAL));
	cr_assert(eq(int, fcntl(sv[0], F_GETFD), -1));
	memset(long_site, 'x', sizeof(long_site) - 1);
	long_site[sizeof(long_site) - 1] = '\0';
	cr_assert(eq(
	    int, link_new(loop, sv[1], WIRE_ROLE_PRIMARY, &key_a, long_site, "p", &ops, NULL, &l),
	    -EINVAL));
	cr_assert(eq(int, fcntl(sv[1], F_GETFD), -1));
	cr_assert(eq(ptr, l, NULL));
	cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0));
	cr_assert(eq(
	    int, link_new(loop, sv[0], WIRE_ROLE_PRIMARY, &key_a, "bad\nsite", "p", &ops, NULL, &l),
	    -EINVAL));
	cr_assert(eq(int,
	             link_new(loop, sv[1], (enum wire_role)3, &key_a, "s", "p", &ops, NULL, &l),
	             -EINVAL));
	link_free(NULL);
}
