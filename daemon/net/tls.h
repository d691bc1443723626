/* SPDX-License-Identifier: MIT */
/* tls: the page-server link over GnuTLS, with CRIU's options, defaults and peer checks. */
#ifndef LP_TLS_H
#define LP_TLS_H

#include <getopt.h>
#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* CRIU's defaults (criu/tls.c) for the files not given */
#define TLS_DEFAULT_CACERT "/etc/pki/CA/cacert.pem"
#define TLS_DEFAULT_CACRL "/etc/pki/CA/cacrl.pem"
#define TLS_DEFAULT_CERT "/etc/pki/criu/cert.pem"
#define TLS_DEFAULT_KEY "/etc/pki/criu/private/key.pem"

#define TLS_HANDSHAKE_MS 10000	/* a peer that connects and never shakes hands */

struct gnutls_certificate_credentials_st;

/* --tls-cacert, --tls-cacrl, --tls-cert, --tls-key (NULL: the default), --tls-no-cn-verify */
struct tls_cfg {
	const char *cacert;	/* NULL: the default file if it has any, and the system trust store */
	const char *cacrl;	/* NULL: the default file, if readable */
	const char *cert, *key;
	int no_cn_verify;	/* do not match the peer's certificate to our own --address */
	struct gnutls_certificate_credentials_st *creds;	/* tls_cfg_load's, shared by every wrap */
};

struct tls;

/* CRIU's TLS options, for both programs' option tables (getopt_long). */
enum {
	TLS_OPT = 1000,
	TLS_OPT_CACERT,
	TLS_OPT_CACRL,
	TLS_OPT_CERT,
	TLS_OPT_KEY,
	TLS_OPT_NO_CN_VERIFY,
};

#define TLS_OPTIONS                                                           \
	{ "tls", no_argument, NULL, TLS_OPT },                                \
	{ "tls-cacert", required_argument, NULL, TLS_OPT_CACERT },            \
	{ "tls-cacrl", required_argument, NULL, TLS_OPT_CACRL },              \
	{ "tls-cert", required_argument, NULL, TLS_OPT_CERT },                \
	{ "tls-key", required_argument, NULL, TLS_OPT_KEY },                  \
	{ "tls-no-cn-verify", no_argument, NULL, TLS_OPT_NO_CN_VERIFY }

/* Takes option C if it is a TLS one (returns 1), into T and *USE. */
int tls_opt(int c, const char *arg, struct tls_cfg *t, int *use);

/* Reads the CA, CRL, certificate and key (once, before any wrap). 0 or -errno. */
int tls_cfg_load(struct tls_cfg *cfg, struct lp_err *e);
void tls_cfg_free(struct tls_cfg *cfg);

/*
 * The handshake on connected socket FD, then the peer's certificate is
 * checked (gnutls_certificate_verify_peers3): issued by a trusted CA, not
 * revoked, and, unless no_cn_verify, issued to HOSTNAME, which is our own
 * --address (NULL: no name check). The server requires a client
 * certificate. A refused certificate is -EACCES (either side) and the
 * peer gets an alert; PEER names the other end in E. FD stays the
 * caller's. *OUT is written only on success.
 */
int tls_client_wrap(int fd, const struct tls_cfg *cfg, const char *hostname, const char *peer,
		    struct tls **out, struct lp_err *e);
int tls_server_wrap(int fd, const struct tls_cfg *cfg, const char *hostname, const char *peer,
		    struct tls **out, struct lp_err *e);

/*
 * As read(2): bytes, 0 at the end of the stream, or -errno (-EAGAIN past
 * SO_RCVTIMEO; -EACCES: the peer refused us; -EPROTO: a TLS failure).
 * E gets the reason (GnuTLS's); the caller's message names the peer.
 * One thread may read while another writes.
 */
ssize_t tls_read(struct tls *t, void *buf, size_t n, struct lp_err *e);
/* As io_read_full (-EPIPE at the end of the stream) and io_write_full. */
int tls_read_full(struct tls *t, void *buf, size_t n, struct lp_err *e);
int tls_write_full(struct tls *t, const void *buf, size_t n, struct lp_err *e);

/* gnutls_bye: sends close_notify; with WAIT, also reads the peer's. 0 or -errno. */
int tls_bye(struct tls *t, int wait);
/* Frees the session (not the fd). Accepts NULL. */
void tls_free(struct tls *t);

#endif
