/*
 * Replication link authentication (libsodium): key derivation from the
 * shared secret file, nonces, and the challenge-response MAC of wire.h:
 *
 *   key = BLAKE2b-256(secret file bytes)
 *   mac = HMAC-SHA-256(key, "jrbd-auth-v1" | sender role (4 LE) |
 *                           sender nonce (32) | receiver nonce (32))
 *
 * Each side MACs its own role and both fresh nonces, so a MAC can't be
 * replayed on another connection (the peer's nonce is new) nor reflected
 * back at its sender (the role differs). Nothing here is hand-rolled: the
 * hash, the MAC, the randomness and the constant-time compare are
 * libsodium's. Secrets are wiped from memory once used.
 *
 * Not here: the handshake order (link.c).
 */
#include "repl/auth.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/util.h"

#define AUTH_SECRET_MIN 16u
#define AUTH_SECRET_MAX (64u << 10)
#define AUTH_CONTEXT "jrbd-auth-v1"
#define AUTH_CONTEXT_LEN (sizeof(AUTH_CONTEXT) - 1)
#define AUTH_MSG_LEN (AUTH_CONTEXT_LEN + 4 + 2 * WIRE_NONCE_LEN)

_Static_assert(AUTH_KEY_LEN == crypto_auth_hmacsha256_KEYBYTES, "HMAC key size");
_Static_assert(WIRE_MAC_LEN == crypto_auth_hmacsha256_BYTES, "HMAC size");
_Static_assert(AUTH_KEY_LEN >= crypto_generichash_BYTES_MIN &&
                   AUTH_KEY_LEN <= crypto_generichash_BYTES_MAX,
               "BLAKE2b output size");

int
auth_init(void)
{
	/* 0: initialized now, 1: already was, -1: failure. */
	return sodium_init() < 0 ? -EIO : 0;
}

/* Thread-safe, unlike strerror(). */
static const char *
err_str(int err)
{
	const char *d = strerrordesc_np(err < 0 ? -err : err);

	return d ? d : "unknown error";
}

int
auth_key_from_bytes(const void *secret, size_t len, struct auth_key *ret)
{
	struct auth_key k;

	if (len < AUTH_SECRET_MIN)
		return -EINVAL;
	if (auth_init() < 0)
		return -EIO;
	if (crypto_generichash(k.key, AUTH_KEY_LEN, secret, len, NULL, 0) != 0)
		return -EIO;
	*ret = k;
	sodium_memzero(&k, sizeof(k));
	return 0;
}

int
auth_key_from_file(const char *path, struct auth_key *ret, char *err, size_t errlen)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		util_set_err(err, errlen, "secret file '%s': %s", path, err_str(r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		util_set_err(err, errlen, "secret file '%s': %s", path, err_str(r));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		util_set_err(err, errlen, "secret file '%s': not a regular file", path);
		goto out;
	}
	/* Like ssh with its keys: a secret others can read is no secret. */
	if (st.st_mode & 077) {
		r = -EPERM;
		util_set_err(err, errlen,
		             "secret file '%s': mode %04o lets group or others access it; "
		             "run chmod 600 on it",
		             path, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	/* One byte more than allowed, to tell "too long" from "exactly max". */
	buf = malloc(AUTH_SECRET_MAX + 1);
	if (!buf) {
		r = -ENOMEM;
		util_set_err(err, errlen, "secret file '%s': out of memory", path);
		goto out;
	}
	while (len <= AUTH_SECRET_MAX) {
		ssize_t n = read(fd, buf + len, AUTH_SECRET_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			util_set_err(err, errlen, "secret file '%s': read: %s", path, err_str(r));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > AUTH_SECRET_MAX) {
		r = -EFBIG;
		util_set_err(err, errlen, "secret file '%s': longer than %u bytes", path,
		             AUTH_SECRET_MAX);
		goto out;
	}
	if (len < AUTH_SECRET_MIN) {
		r = -EINVAL;
		util_set_err(err, errlen, "secret file '%s': %zu bytes, need at least %u", path,
		             len, AUTH_SECRET_MIN);
		goto out;
	}
	r = auth_key_from_bytes(buf, len, ret);
	if (r < 0)
		util_set_err(err, errlen, "secret file '%s': key derivation failed", path);
out:
	if (buf) {
		sodium_memzero(buf, AUTH_SECRET_MAX + 1);
		free(buf);
	}
	close(fd);
	return r;
}

void
auth_nonce(uint8_t nonce[WIRE_NONCE_LEN])
{
	/* randombytes needs sodium_init once; it is idempotent and cheap. */
	(void)auth_init();
	randombytes_buf(nonce, WIRE_NONCE_LEN);
}

/* The bytes the MAC covers (wire.h, AUTH). */
static void
mac_input(uint8_t out[AUTH_MSG_LEN], uint32_t sender_role,
          const uint8_t sender_nonce[WIRE_NONCE_LEN], const uint8_t receiver_nonce[WIRE_NONCE_LEN])
{
	uint32_t role_le = htole32(sender_role);

	memcpy(out, AUTH_CONTEXT, AUTH_CONTEXT_LEN);
	memcpy(out + AUTH_CONTEXT_LEN, &role_le, 4);
	memcpy(out + AUTH_CONTEXT_LEN + 4, sender_nonce, WIRE_NONCE_LEN);
	memcpy(out + AUTH_CONTEXT_LEN + 4 + WIRE_NONCE_LEN, receiver_nonce, WIRE_NONCE_LEN);
}

void
auth_mac(const struct auth_key *key, uint32_t sender_role,
         const uint8_t sender_nonce[WIRE_NONCE_LEN], const uint8_t receiver_nonce[WIRE_NONCE_LEN],
         uint8_t mac[WIRE_MAC_LEN])
{
	uint8_t in[AUTH_MSG_LEN];

	mac_input(in, sender_role, sender_nonce, receiver_nonce);
	crypto_auth_hmacsha256(mac, in, sizeof(in), key->key);
}

int
auth_verify(const struct auth_key *key, uint32_t sender_role,
            const uint8_t sender_nonce[WIRE_NONCE_LEN],
            const uint8_t receiver_nonce[WIRE_NONCE_LEN], const uint8_t mac[WIRE_MAC_LEN])
{
	uint8_t in[AUTH_MSG_LEN];

	mac_input(in, sender_role, sender_nonce, receiver_nonce);
	/* Constant time: the comparison leaks nothing about the expected MAC. */
	return crypto_auth_hmacsha256_verify(mac, in, sizeof(in), key->key) == 0 ? 0 : -EACCES;
}

void
auth_key_wipe(struct auth_key *key)
{
	sodium_memzero(key, sizeof(*key));
}
