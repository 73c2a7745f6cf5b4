/*
 * Control-socket framing and JSON message helpers (protocol: include/jrbd/ctl.h).
 * The decoder is a pure function over bytes.
 */
#ifndef JRBD_CTL_PRIV_H
#define JRBD_CTL_PRIV_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jrbd/ctl.h"

/*
 * Looks for one complete frame at the start of buf.
 * Returns the total frame size (header + body) and sets ret_body and ret_len,
 * -EAGAIN when more bytes are needed, -EPROTO for a bad length.
 */
int ctl_frame_decode(const uint8_t *buf, size_t len, const uint8_t **ret_body, size_t *ret_len);

/*
 * Parses a request body: must be a JSON object with "v" == CTL_VERSION and a
 * string "cmd". Returns the object (caller decrefs) or NULL with a message in err.
 */
json_t *ctl_request_parse(const uint8_t *body, size_t len, const char **ret_cmd, char *err,
			  size_t errlen);

/* Serialises msg into a freshly allocated frame. */
int ctl_frame_encode(const json_t *msg, uint8_t **ret_buf, size_t *ret_len);

/* Client: connects to DIR/ctl.sock, sends req, waits up to timeout_ms for the reply.
 * -ECONNREFUSED/-ENOENT when no daemon runs there. */
int ctl_call(const char *dir, json_t *req, int timeout_ms, json_t **ret_reply);

#endif
