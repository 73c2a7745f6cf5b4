#include "ctl/ctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"

int
ctl_frame_decode(const uint8_t *buf, size_t len, const uint8_t **ret_body, size_t *ret_len)
{
	uint32_t n;

	if (len < 4)
		return -EAGAIN;
	memcpy(&n, buf, 4);
	n = ntohl(n);
	if (n == 0 || n > CTL_MAX_MSG)
		return -EPROTO;
	if (len - 4 < n)
		return -EAGAIN;
	*ret_body = buf + 4;
	*ret_len = n;
	return (int)(n + 4);
}

json_t *
ctl_request_parse(const uint8_t *body, size_t len, const char **ret_cmd, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *req, *v, *cmd;

	req = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		snprintf(err, errlen, "malformed request: %s", jerr.text);
		return NULL;
	}
	v = json_object_get(req, "v");
	cmd = json_object_get(req, "cmd");
	if (!json_is_object(req) || !json_is_integer(v) || !json_is_string(cmd)) {
		snprintf(err, errlen, "malformed request: need an object with \"v\" and \"cmd\"");
		json_decref(req);
		return NULL;
	}
	if (json_integer_value(v) != CTL_VERSION) {
		snprintf(err, errlen, "control protocol version %lld not supported (daemon speaks %d)",
			 (long long)json_integer_value(v), CTL_VERSION);
		json_decref(req);
		return NULL;
	}
	*ret_cmd = json_string_value(cmd);
	return req;
}

int
ctl_frame_encode(const json_t *msg, uint8_t **ret_buf, size_t *ret_len)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t n;
	uint32_t be;
	uint8_t *buf;

	if (!text)
		return -ENOMEM;
	n = strlen(text);
	if (n == 0 || n > CTL_MAX_MSG) {
		free(text);
		return -EMSGSIZE;
	}
	buf = malloc(n + 4);
	if (!buf) {
		free(text);
		return -ENOMEM;
	}
	be = htonl((uint32_t)n);
	memcpy(buf, &be, 4);
	memcpy(buf + 4, text, n);
	free(text);
	*ret_buf = buf;
	*ret_len = n + 4;
	return 0;
}

static int
wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = events};
	int r;

	do {
		r = poll(&p, 1, timeout_ms);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

int
ctl_call(const char *dir, json_t *req, int timeout_ms, json_t **ret_reply)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	uint8_t *out = NULL, *in = NULL;
	size_t outlen, inlen = 0, incap = 65536;
	const uint8_t *body;
	size_t bodylen;
	json_error_t jerr;
	int fd = -1, r;

	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, CTL_SOCKET_NAME) >=
	    (int)sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	json_object_set_new(req, "v", json_integer(CTL_VERSION));
	r = ctl_frame_encode(req, &out, &outlen);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		goto out;
	}
	r = util_write_full(fd, out, outlen);
	if (r < 0)
		goto out;
	in = malloc(incap);
	if (!in) {
		r = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t n;

		r = ctl_frame_decode(in, inlen, &body, &bodylen);
		if (r >= 0)
			break;
		if (r != -EAGAIN)
			goto out;
		if (inlen == incap) {
			uint8_t *p;

			if (incap >= CTL_MAX_MSG + 4) {
				r = -EMSGSIZE;
				goto out;
			}
			incap *= 2;
			p = realloc(in, incap);
			if (!p) {
				r = -ENOMEM;
				goto out;
			}
			in = p;
		}
		r = wait_fd(fd, POLLIN, timeout_ms);
		if (r < 0)
			goto out;
		n = read(fd, in + inlen, incap - inlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (n == 0) {
			r = -ECONNRESET;
			goto out;
		}
		inlen += (size_t)n;
	}
	*ret_reply = json_loadb((const char *)body, bodylen, 0, &jerr);
	r = *ret_reply && json_is_object(*ret_reply) ? 0 : -EPROTO;
	if (r < 0 && *ret_reply) {
		json_decref(*ret_reply);
		*ret_reply = NULL;
	}
out:
	if (fd >= 0)
		close(fd);
	free(out);
	free(in);
	return r;
}
