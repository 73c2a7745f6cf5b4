/*
 * The NBD codec: the only place that converts NBD byte order. Pure functions,
 * no I/O, no allocation, no logging: everything here is reachable from the
 * network before any authentication, so every length is checked before it is
 * used and every failure is a return value. See nbd_proto.h for the formats.
 */
#include "nbd/nbd_proto.h"

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "common/checked.h"

/* ---- Handshake ----------------------------------------------------------- */

void
nbd_encode_handshake(struct nbd_handshake_hdr *w, uint16_t gflags)
{
	w->magic = htobe64(NBD_MAGIC);
	w->opts_magic = htobe64(NBD_OPTS_MAGIC);
	w->gflags = htobe16(gflags);
}

int
nbd_parse_client_flags(const void *buf, size_t len, uint16_t gflags, uint32_t *ret_flags)
{
	struct nbd_client_flags_wire w;
	uint32_t allowed = 0;
	uint32_t flags;

	if (len < sizeof(w))
		return -EAGAIN;
	memcpy(&w, buf, sizeof(w));
	flags = be32toh(w.flags);
	/* A client flag is only valid as the answer to a handshake flag we sent. */
	if (gflags & NBD_FLAG_FIXED_NEWSTYLE)
		allowed |= NBD_FLAG_C_FIXED_NEWSTYLE;
	if (gflags & NBD_FLAG_NO_ZEROES)
		allowed |= NBD_FLAG_C_NO_ZEROES;
	if (flags & ~allowed)
		return -EPROTO;
	*ret_flags = flags;
	return (int)sizeof(w);
}

int
nbd_parse_option_hdr(const void *buf, size_t len, struct nbd_option *ret)
{
	struct nbd_option_hdr w;

	if (len < sizeof(w))
		return -EAGAIN;
	memcpy(&w, buf, sizeof(w));
	if (be64toh(w.magic) != NBD_OPTS_MAGIC)
		return -EPROTO;
	ret->option = be32toh(w.option);
	ret->len = be32toh(w.len);
	return (int)sizeof(w);
}

/* The spec's string rule: no NUL inside, at most NBD_MAX_STRING bytes. */
static int
check_string(const uint8_t *s, size_t len)
{
	if (len > NBD_MAX_STRING)
		return -E2BIG;
	if (len && memchr(s, '\0', len))
		return -EPROTO;
	return 0;
}

int
nbd_parse_opt_export_name(const void *payload, size_t len, char *ret_name)
{
	int r = check_string(payload, len);

	if (r < 0)
		return r;
	if (len > INT_MAX)
		return -E2BIG;
	if (len)
		memcpy(ret_name, payload, len);
	ret_name[len] = '\0';
	return (int)len;
}

int
nbd_parse_opt_go(const void *payload, size_t len, struct nbd_opt_go *ret)
{
	const uint8_t *p = payload;
	size_t pos = 0;
	uint32_t name_len;
	uint16_t ninfo;
	uint32_t info_req = 0;
	int r;

	/* Bounded cursor: check what is left before each field. */
	if (len - pos < sizeof(name_len))
		return -EPROTO;
	memcpy(&name_len, p + pos, sizeof(name_len));
	name_len = be32toh(name_len);
	pos += sizeof(name_len);
	if (name_len > len - pos)
		return -EPROTO;
	r = check_string(p + pos, name_len);
	if (r < 0)
		return r;
	pos += name_len;
	if (len - pos < sizeof(ninfo))
		return -EPROTO;
	memcpy(&ninfo, p + pos, sizeof(ninfo));
	ninfo = be16toh(ninfo);
	pos += sizeof(ninfo);
	/* Exactly ninfo requests must remain: no missing and no trailing bytes. */
	if ((len - pos) / 2 != ninfo || (len - pos) % 2)
		return -EPROTO;
	for (unsigned i = 0; i < ninfo; i++) {
		uint16_t type;

		memcpy(&type, p + pos, sizeof(type));
		type = be16toh(type);
		pos += sizeof(type);
		if (type <= NBD_INFO_BLOCK_SIZE)
			info_req |= 1u << type;
	}
	if (len > INT_MAX)
		return -E2BIG;
	if (name_len)
		memcpy(ret->name, p + sizeof(uint32_t), name_len);
	ret->name[name_len] = '\0';
	ret->name_len = name_len;
	ret->ninfo = ninfo;
	ret->info_req = info_req;
	return (int)len;
}

/* Writes the 20-byte option reply header; the caller checked the room. */
static void
put_opt_reply_hdr(void *buf, uint32_t option, uint32_t reply, uint32_t len)
{
	struct nbd_option_reply_hdr w = {
	    .magic = htobe64(NBD_REP_MAGIC),
	    .option = htobe32(option),
	    .reply = htobe32(reply),
	    .len = htobe32(len),
	};

	memcpy(buf, &w, sizeof(w));
}

/* Room check shared by the encoders: header + payload_len bytes. */
static int
opt_reply_size(size_t cap, size_t payload_len)
{
	const size_t hdr = sizeof(struct nbd_option_reply_hdr);

	/* The reply carries its length in 32 bits; anything near that is our bug. */
	if (payload_len > UINT32_MAX - hdr || hdr + payload_len > INT_MAX)
		return -E2BIG;
	if (hdr + payload_len > cap)
		return -ENOBUFS;
	return (int)(hdr + payload_len);
}

int
nbd_encode_opt_reply(void *buf, size_t cap, uint32_t option, uint32_t reply, const void *payload,
                     size_t payload_len)
{
	int total = opt_reply_size(cap, payload_len);

	if (total < 0)
		return total;
	put_opt_reply_hdr(buf, option, reply, (uint32_t)payload_len);
	if (payload_len)
		memcpy((uint8_t *)buf + sizeof(struct nbd_option_reply_hdr), payload, payload_len);
	return total;
}

int
nbd_encode_rep_server(void *buf, size_t cap, uint32_t option, const char *name, size_t name_len)
{
	uint8_t *p = (uint8_t *)buf + sizeof(struct nbd_option_reply_hdr);
	uint32_t len_be;
	int total;

	if (name_len > NBD_MAX_STRING)
		return -E2BIG;
	total = opt_reply_size(cap, sizeof(len_be) + name_len);
	if (total < 0)
		return total;
	put_opt_reply_hdr(buf, option, NBD_REP_SERVER, (uint32_t)(sizeof(len_be) + name_len));
	len_be = htobe32((uint32_t)name_len);
	memcpy(p, &len_be, sizeof(len_be));
	if (name_len)
		memcpy(p + sizeof(len_be), name, name_len);
	return total;
}

int
nbd_encode_rep_info_export(void *buf, size_t cap, uint32_t option, uint64_t size, uint16_t tflags)
{
	struct nbd_info_export_wire w = {
	    .type = htobe16(NBD_INFO_EXPORT),
	    .size = htobe64(size),
	    .tflags = htobe16(tflags),
	};

	return nbd_encode_opt_reply(buf, cap, option, NBD_REP_INFO, &w, sizeof(w));
}

int
nbd_encode_rep_info_block_size(void *buf, size_t cap, uint32_t option, uint32_t min, uint32_t pref,
                               uint32_t max)
{
	struct nbd_info_block_size_wire w = {
	    .type = htobe16(NBD_INFO_BLOCK_SIZE),
	    .min = htobe32(min),
	    .pref = htobe32(pref),
	    .max = htobe32(max),
	};

	return nbd_encode_opt_reply(buf, cap, option, NBD_REP_INFO, &w, sizeof(w));
}

int
nbd_encode_rep_info_string(void *buf, size_t cap, uint32_t option, uint16_t info_type,
                           const char *str, size_t str_len)
{
	uint8_t *p = (uint8_t *)buf + sizeof(struct nbd_option_reply_hdr);
	uint16_t type_be = htobe16(info_type);
	int total;

	if (str_len > NBD_MAX_STRING)
		return -E2BIG;
	total = opt_reply_size(cap, sizeof(type_be) + str_len);
	if (total < 0)
		return total;
	put_opt_reply_hdr(buf, option, NBD_REP_INFO, (uint32_t)(sizeof(type_be) + str_len));
	memcpy(p, &type_be, sizeof(type_be));
	if (str_len)
		memcpy(p + sizeof(type_be), str, str_len);
	return total;
}

void
nbd_encode_export_name_reply(struct nbd_export_name_reply_wire *w, uint64_t size, uint16_t tflags)
{
	w->size = htobe64(size);
	w->tflags = htobe16(tflags);
	memset(w->zeroes, 0, sizeof(w->zeroes));
}

/* ---- Transmission -------------------------------------------------------- */

uint16_t
nbd_export_flags(bool read_only)
{
	/*
	 * CAN_MULTI_CONN: every connection to a volume goes through the same
	 * group on one loop, so a FLUSH or FUA answered on one connection
	 * covers what the others had acknowledged. SEND_DF is not offered: it
	 * would have to depend on structured replies, and READ always answers
	 * with one chunk anyway. WRITE/TRIM/WRITE_ZEROES stay advertised when
	 * read-only: the spec wants them answered with EPERM, not hidden.
	 */
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	             NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO |
	             NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;

	if (read_only)
		f |= NBD_FLAG_READ_ONLY;
	return f;
}

int
nbd_parse_request(const void *buf, size_t len, struct nbd_request *ret)
{
	struct nbd_request_hdr w;

	if (len < sizeof(w))
		return -EAGAIN;
	memcpy(&w, buf, sizeof(w));
	if (be32toh(w.magic) != NBD_REQUEST_MAGIC)
		return -EPROTO;
	ret->flags = be16toh(w.flags);
	ret->type = be16toh(w.type);
	ret->cookie = be64toh(w.cookie);
	ret->offset = be64toh(w.offset);
	ret->len = be32toh(w.len);
	return (int)sizeof(w);
}

uint32_t
nbd_request_payload_len(const struct nbd_request *req)
{
	return req->type == NBD_CMD_WRITE ? req->len : 0;
}

/* Command flags each command may carry, given what we advertised. */
static uint16_t
allowed_cmd_flags(uint16_t type, uint16_t tflags)
{
	/* FUA is valid on every command once SEND_FUA was advertised. */
	uint16_t f = (tflags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;

	switch (type) {
	case NBD_CMD_READ:
		if (tflags & NBD_FLAG_SEND_DF)
			f |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE_ZEROES:
		f |= NBD_CMD_FLAG_NO_HOLE;
		if (tflags & NBD_FLAG_SEND_FAST_ZERO)
			f |= NBD_CMD_FLAG_FAST_ZERO;
		break;
	default:
		break;
	}
	return f;
}

int
nbd_request_check(const struct nbd_request *req, uint64_t size, uint16_t tflags, uint32_t max_block)
{
	bool read_only = tflags & NBD_FLAG_READ_ONLY;
	bool is_write = false;
	bool bounded = true; /* length limited to max_block */

	if (!max_block)
		max_block = NBD_MAX_BLOCK_SIZE;
	switch (req->type) {
	case NBD_CMD_READ:
		break;
	case NBD_CMD_WRITE:
		is_write = true;
		break;
	case NBD_CMD_DISC:
		/* No reply is ever sent, so there is nothing to check. */
		return 0;
	case NBD_CMD_FLUSH:
		if (!(tflags & NBD_FLAG_SEND_FLUSH))
			return -EINVAL;
		if (req->flags & ~allowed_cmd_flags(req->type, tflags))
			return -EINVAL;
		/* Offset and length are reserved and must be zero. */
		if (req->offset || req->len)
			return -EINVAL;
		return 0;
	case NBD_CMD_TRIM:
		if (!(tflags & NBD_FLAG_SEND_TRIM))
			return -EINVAL;
		is_write = true;
		/* The block-size section bounds READ, WRITE, CACHE and
		 * WRITE_ZEROES only: a trim may cover up to 4 GiB - 1. */
		bounded = false;
		break;
	case NBD_CMD_CACHE:
		/* Accepted even unadvertised: the spec says such clients exist. */
		break;
	case NBD_CMD_WRITE_ZEROES:
		if (!(tflags & NBD_FLAG_SEND_WRITE_ZEROES))
			return -EINVAL;
		is_write = true;
		/* A fast zero is exempt: clients zero the whole export with one. */
		if (req->flags & NBD_CMD_FLAG_FAST_ZERO)
			bounded = false;
		break;
	default:
		/* Unknown, BLOCK_STATUS (no metadata context can be selected), RESIZE. */
		return -EINVAL;
	}
	if (req->flags & ~allowed_cmd_flags(req->type, tflags))
		return -EINVAL;
	if (is_write && read_only)
		return -EPERM;
	if (bounded && req->len > max_block)
		return -EINVAL;
	if (!range_within(req->offset, req->len, size))
		return is_write && req->type != NBD_CMD_TRIM ? -ENOSPC : -EINVAL;
	return 0;
}

uint32_t
nbd_errno_to_wire(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
		return NBD_EPERM;
	case EIO:
		return NBD_EIO;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT: /* the spec asks for these two to read as ENOSPC */
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP: /* == EOPNOTSUPP on Linux */
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

void
nbd_encode_simple_reply(struct nbd_simple_reply_hdr *w, uint32_t error, uint64_t cookie)
{
	w->magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
	w->error = htobe32(error);
	w->cookie = htobe64(cookie);
}

void
nbd_encode_structured_reply(struct nbd_structured_reply_hdr *w, uint16_t flags, uint16_t type,
                            uint64_t cookie, uint32_t len)
{
	w->magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
	w->flags = htobe16(flags);
	w->type = htobe16(type);
	w->cookie = htobe64(cookie);
	w->len = htobe32(len);
}

void
nbd_encode_structured_read(struct nbd_structured_read_hdr *w, uint64_t cookie, uint64_t offset,
                           uint32_t data_len)
{
	/* data_len <= the maximum block size, so the chunk length can't overflow. */
	nbd_encode_structured_reply(&w->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
	                            cookie, (uint32_t)sizeof(uint64_t) + data_len);
	w->offset = htobe64(offset);
}

void
nbd_encode_structured_error(struct nbd_structured_error_hdr *w, uint64_t cookie, uint32_t error)
{
	nbd_encode_structured_reply(&w->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
	                            (uint32_t)(sizeof(*w) - sizeof(w->hdr)));
	/* The spec requires a nonzero error in an error chunk. */
	w->error = htobe32(error ? error : NBD_EIO);
	w->msg_len = 0;
}

/* ---- Client side --------------------------------------------------------- */

void
nbd_encode_request(struct nbd_request_hdr *w, const struct nbd_request *req)
{
	w->magic = htobe32(NBD_REQUEST_MAGIC);
	w->flags = htobe16(req->flags);
	w->type = htobe16(req->type);
	w->cookie = htobe64(req->cookie);
	w->offset = htobe64(req->offset);
	w->len = htobe32(req->len);
}

void
nbd_encode_option_hdr(struct nbd_option_hdr *w, uint32_t option, uint32_t len)
{
	w->magic = htobe64(NBD_OPTS_MAGIC);
	w->option = htobe32(option);
	w->len = htobe32(len);
}

int
nbd_parse_option_reply(const void *buf, size_t len, struct nbd_option_reply *ret)
{
	struct nbd_option_reply_hdr w;

	if (len < sizeof(w))
		return -EAGAIN;
	memcpy(&w, buf, sizeof(w));
	if (be64toh(w.magic) != NBD_REP_MAGIC)
		return -EPROTO;
	ret->option = be32toh(w.option);
	ret->reply = be32toh(w.reply);
	ret->len = be32toh(w.len);
	return (int)sizeof(w);
}

int
nbd_parse_simple_reply(const void *buf, size_t len, struct nbd_simple_reply *ret)
{
	struct nbd_simple_reply_hdr w;

	if (len < sizeof(w))
		return -EAGAIN;
	memcpy(&w, buf, sizeof(w));
	if (be32toh(w.magic) != NBD_SIMPLE_REPLY_MAGIC)
		return -EPROTO;
	ret->error = be32toh(w.error);
	ret->cookie = be64toh(w.cookie);
	return (int)sizeof(w);
}

int
nbd_parse_structured_reply(const void *buf, size_t len, struct nbd_structured_reply *ret)
{
	struct nbd_structured_reply_hdr w;

	if (len < sizeof(w))
		return -EAGAIN;
	memcpy(&w, buf, sizeof(w));
	if (be32toh(w.magic) != NBD_STRUCTURED_REPLY_MAGIC)
		return -EPROTO;
	ret->flags = be16toh(w.flags);
	ret->type = be16toh(w.type);
	ret->cookie = be64toh(w.cookie);
	ret->len = be32toh(w.len);
	return (int)sizeof(w);
}

const char *
nbd_opt_name(uint32_t option)
{
	switch (option) {
	case NBD_OPT_EXPORT_NAME:
		return "NBD_OPT_EXPORT_NAME";
	case NBD_OPT_ABORT:
		return "NBD_OPT_ABORT";
	case NBD_OPT_LIST:
		return "NBD_OPT_LIST";
	case NBD_OPT_PEEK_EXPORT:
		return "NBD_OPT_PEEK_EXPORT";
	case NBD_OPT_STARTTLS:
		return "NBD_OPT_STARTTLS";
	case NBD_OPT_INFO:
		return "NBD_OPT_INFO";
	case NBD_OPT_GO:
		return "NBD_OPT_GO";
	case NBD_OPT_STRUCTURED_REPLY:
		return "NBD_OPT_STRUCTURED_REPLY";
	case NBD_OPT_LIST_META_CONTEXT:
		return "NBD_OPT_LIST_META_CONTEXT";
	case NBD_OPT_SET_META_CONTEXT:
		return "NBD_OPT_SET_META_CONTEXT";
	case NBD_OPT_EXTENDED_HEADERS:
		return "NBD_OPT_EXTENDED_HEADERS";
	default:
		return "unknown";
	}
}

const char *
nbd_cmd_name(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return "READ";
	case NBD_CMD_WRITE:
		return "WRITE";
	case NBD_CMD_DISC:
		return "DISC";
	case NBD_CMD_FLUSH:
		return "FLUSH";
	case NBD_CMD_TRIM:
		return "TRIM";
	case NBD_CMD_CACHE:
		return "CACHE";
	case NBD_CMD_WRITE_ZEROES:
		return "WRITE_ZEROES";
	case NBD_CMD_BLOCK_STATUS:
		return "BLOCK_STATUS";
	case NBD_CMD_RESIZE:
		return "RESIZE";
	default:
		return "unknown";
	}
}
