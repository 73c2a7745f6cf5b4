/*
 * Mutual challenge-response authentication of the replication link with a
 * shared secret (libsodium). Neither side ever sends the secret: each proves
 * it holds the key by a MAC over both random nonces (include/jrbd/wire.h).
 */
#ifndef JRBD_AUTH_H
#define JRBD_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "jrbd/wire.h"

#define AUTH_KEY_LEN 32u

struct auth_key {
	uint8_t key[AUTH_KEY_LEN];
};

/* Initializes libsodium once; 0 or -EIO. Thread-safe (sodium_init is). */
int auth_init(void);

/* Reads the secret file (at least 16 bytes, at most 64 KiB; trailing
 * newlines count as content) and derives the key. -errno with a message
 * in err: missing/unreadable file, too short, too long, a file others can
 * read (mode & 077: -EPERM). */
int auth_key_from_file(const char *path, struct auth_key *ret, char *err, size_t errlen);

/* Same from bytes (tests). -EINVAL when shorter than 16 bytes. */
int auth_key_from_bytes(const void *secret, size_t len, struct auth_key *ret);

/* Fills a random nonce. */
void auth_nonce(uint8_t nonce[WIRE_NONCE_LEN]);

/* MAC a sender with role `sender_role` sends, over its own and the peer's nonce. */
void auth_mac(const struct auth_key *key, uint32_t sender_role,
              const uint8_t sender_nonce[WIRE_NONCE_LEN],
              const uint8_t receiver_nonce[WIRE_NONCE_LEN], uint8_t mac[WIRE_MAC_LEN]);

/* Constant-time check of a MAC received from a peer claiming sender_role.
 * 0 or -EACCES. */
int auth_verify(const struct auth_key *key, uint32_t sender_role,
                const uint8_t sender_nonce[WIRE_NONCE_LEN],
                const uint8_t receiver_nonce[WIRE_NONCE_LEN], const uint8_t mac[WIRE_MAC_LEN]);

/* Wipes the key. */
void auth_key_wipe(struct auth_key *key);

#endif
