/* SPDX-License-Identifier: MIT */
/* tls: GnuTLS sessions on a connected socket, set up and checked as CRIU's criu/tls.c does. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls.h"

struct tls {
	gnutls_session_t s;
	int fd;
	int server;
	atomic_int rx_errno, tx_errno;	/* of the last failed recv/send, per direction */
};

/* ---- credentials ---- */

static int tls_file_err(struct lp_err *e, const char *what, const char *path, int r)
{
	if (r == GNUTLS_E_FILE_ERROR && access(path, R_OK) < 0)
		return lp_err_set(e, errno, "TLS %s %s: %s", what, path, strerror(errno));
	return lp_err_set(e, EINVAL, "TLS %s %s: %s", what, path,
			  r ? gnutls_strerror(r) : "no certificate in it");
}

int tls_cfg_load(struct tls_cfg *cfg, struct lp_err *e)
{
	const char *cacert = cfg->cacert ? cfg->cacert : TLS_DEFAULT_CACERT;
	const char *cacrl = cfg->cacrl ? cfg->cacrl : TLS_DEFAULT_CACRL;
	const char *cert = cfg->cert ? cfg->cert : TLS_DEFAULT_CERT;
	const char *key = cfg->key ? cfg->key : TLS_DEFAULT_KEY;
	gnutls_certificate_credentials_t cr;
	int r, ret;

	r = gnutls_certificate_allocate_credentials(&cr);
	if (r < 0)
		return lp_err_set(e, ENOMEM, "TLS credentials: %s", gnutls_strerror(r));
	/* as CRIU: the system's CAs only when no CA file is named */
	if (!cfg->cacert) {
		r = gnutls_certificate_set_x509_system_trust(cr);
		if (r < 0) {
			ret = lp_err_set(e, EINVAL, "TLS: the system trust store: %s", gnutls_strerror(r));
			goto fail;
		}
	}
	/* the default CA file may be absent; a named one must hold a CA (CRIU is laxer) */
	r = gnutls_certificate_set_x509_trust_file(cr, cacert, GNUTLS_X509_FMT_PEM);
	if (r <= 0 && cfg->cacert) {
		ret = tls_file_err(e, "CA certificate (--tls-cacert)", cacert, r);
		goto fail;
	}
	if (access(cacrl, R_OK) == 0) {
		r = gnutls_certificate_set_x509_crl_file(cr, cacrl, GNUTLS_X509_FMT_PEM);
		if (r < 0) {
			ret = tls_file_err(e, "revocation list (--tls-cacrl)", cacrl, r);
			goto fail;
		}
	} else if (cfg->cacrl) {
		ret = lp_err_set(e, errno, "TLS revocation list (--tls-cacrl) %s: %s", cacrl, strerror(errno));
		goto fail;
	}
	r = gnutls_certificate_set_x509_key_file(cr, cert, key, GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		if (r == GNUTLS_E_FILE_ERROR && access(cert, R_OK) < 0)
			ret = tls_file_err(e, "certificate (--tls-cert)", cert, r);
		else if (r == GNUTLS_E_FILE_ERROR)
			ret = tls_file_err(e, "key (--tls-key)", key, r);
		else
			ret = lp_err_set(e, EINVAL, "TLS certificate %s with key %s: %s", cert, key,
					 gnutls_strerror(r));
		goto fail;
	}
	cfg->creds = cr;
	return 0;
fail:
	gnutls_certificate_free_credentials(cr);
	return ret;
}

void tls_cfg_free(struct tls_cfg *cfg)
{
	if (cfg && cfg->creds) {
		gnutls_certificate_free_credentials(cfg->creds);
		cfg->creds = NULL;
	}
}

/* ---- transport: our own, so that a failure's errno is kept per direction ---- */

static ssize_t tls_push(gnutls_transport_ptr_t p, const void *buf, size_t n)
{
	struct tls *t = p;
	ssize_t r = send(t->fd, buf, n, MSG_NOSIGNAL);

	if (r < 0)
		atomic_store_explicit(&t->tx_errno, errno, memory_order_relaxed);
	return r;
}

static ssize_t tls_pull(gnutls_transport_ptr_t p, void *buf, size_t n)
{
	struct tls *t = p;
	ssize_t r = recv(t->fd, buf, n, 0);

	if (r < 0)
		atomic_store_explicit(&t->rx_errno, errno, memory_order_relaxed);
	return r;
}

/* for the handshake's timeout */
static int tls_pull_timeout(gnutls_transport_ptr_t p, unsigned int ms)
{
	struct tls *t = p;
	struct pollfd pfd = { .fd = t->fd, .events = POLLIN };
	int r;

	do
		r = poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
	while (r < 0 && errno == EINTR);
	return r;
}

/* ---- errors ---- */

static const char *tls_other(const struct tls *t)
{
	return t->server ? "the client" : "the server";
}

static int tls_cert_alert(gnutls_alert_description_t a)
{
	switch (a) {
	case GNUTLS_A_BAD_CERTIFICATE:
	case GNUTLS_A_UNSUPPORTED_CERTIFICATE:
	case GNUTLS_A_CERTIFICATE_REVOKED:
	case GNUTLS_A_CERTIFICATE_EXPIRED:
	case GNUTLS_A_CERTIFICATE_UNKNOWN:
	case GNUTLS_A_UNKNOWN_CA:
	case GNUTLS_A_ACCESS_DENIED:
	case GNUTLS_A_CERTIFICATE_REQUIRED:
		return 1;
	default:
		return 0;
	}
}

/* A GnuTLS failure R as -errno, with its reason in E. */
static int tls_err(struct tls *t, int r, int reading, struct lp_err *e)
{
	int err;

	switch (r) {
	case GNUTLS_E_FATAL_ALERT_RECEIVED: {
		gnutls_alert_description_t a = gnutls_alert_get(t->s);
		const char *name = gnutls_alert_get_name(a);

		return lp_err_set(e, tls_cert_alert(a) ? EACCES : EPROTO, "TLS: refused by %s (alert: %s)",
				  tls_other(t), name ? name : "unknown");
	}
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_PUSH_ERROR:
		err = atomic_load_explicit(r == GNUTLS_E_PULL_ERROR ? &t->rx_errno : &t->tx_errno,
					   memory_order_relaxed);
		err = err ? err : EIO;
		return lp_err_set(e, err, "%s", strerror(err));
	case GNUTLS_E_AGAIN:
		return lp_err_set(e, EAGAIN, "%s", reading ? "no data (SO_RCVTIMEO)" : strerror(EAGAIN));
	case GNUTLS_E_TIMEDOUT:
		return lp_err_set(e, ETIMEDOUT, "TLS: no handshake within %u ms", TLS_HANDSHAKE_MS);
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
		return lp_err_set(e, ECONNRESET, "TLS: %s closed the connection (%s)", tls_other(t),
				  gnutls_strerror(r));
	case GNUTLS_E_NO_CERTIFICATE_FOUND:
	case GNUTLS_E_CERTIFICATE_REQUIRED:
		return lp_err_set(e, EACCES, "TLS: %s sent no certificate (%s)", tls_other(t),
				  gnutls_strerror(r));
	default:
		return lp_err_set(e, EPROTO, "TLS: %s", gnutls_strerror(r));
	}
}

/* ---- set-up ---- */

static gnutls_alert_description_t tls_status_alert(unsigned int status)
{
	if (status & GNUTLS_CERT_REVOKED)
		return GNUTLS_A_CERTIFICATE_REVOKED;
	if (status & (GNUTLS_CERT_EXPIRED | GNUTLS_CERT_NOT_ACTIVATED))
		return GNUTLS_A_CERTIFICATE_EXPIRED;
	if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA))
		return GNUTLS_A_UNKNOWN_CA;
	return GNUTLS_A_BAD_CERTIFICATE;
}

static int tls_verify(struct tls *t, const char *hostname, const char *peer, struct lp_err *e)
{
	gnutls_datum_t out = { NULL, 0 };
	unsigned int status = 0;
	size_t n;
	int r;

	r = gnutls_certificate_verify_peers3(t->s, hostname, &status);
	if (r < 0) {
		gnutls_alert_send(t->s, GNUTLS_AL_FATAL, GNUTLS_A_BAD_CERTIFICATE);
		return lp_err_set(e, EACCES, "%s: TLS: cannot check the certificate of %s: %s", peer,
				  tls_other(t), gnutls_strerror(r));
	}
	if (!status)
		return 0;
	gnutls_alert_send(t->s, GNUTLS_AL_FATAL, tls_status_alert(status));
	r = gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
	n = !r && out.data ? strlen((char *)out.data) : 0;
	while (n && out.data[n - 1] == ' ')
		out.data[--n] = '\0';
	lp_err_set(e, EACCES, "%s: TLS: certificate of %s refused: %s%s%s%s", peer, tls_other(t),
		   n ? (char *)out.data : "not valid", hostname ? " (name checked: " : "",
		   hostname ? hostname : "", hostname ? "; --tls-no-cn-verify skips that)" : "");
	gnutls_free(out.data);
	return -EACCES;
}

static int tls_wrap(int fd, const struct tls_cfg *cfg, int server, const char *hostname,
		    const char *peer, struct tls **out, struct lp_err *e)
{
	struct tls *t;
	int r, ret;

	if (!cfg->creds)
		return lp_err_set(e, EINVAL, "%s: TLS: credentials not loaded", peer);
	t = calloc(1, sizeof(*t));
	if (!t)
		return lp_err_set(e, ENOMEM, "%s: TLS: out of memory", peer);
	t->fd = fd;
	t->server = server;
	r = gnutls_init(&t->s, server ? GNUTLS_SERVER : GNUTLS_CLIENT);
	if (r < 0) {
		free(t);
		return lp_err_set(e, ENOMEM, "%s: TLS: %s", peer, gnutls_strerror(r));
	}
	r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cfg->creds);
	if (r >= 0)
		r = gnutls_set_default_priority(t->s);
	if (r < 0) {
		ret = lp_err_set(e, EINVAL, "%s: TLS: %s", peer, gnutls_strerror(r));
		goto fail;
	}
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_push_function(t->s, tls_push);
	gnutls_transport_set_pull_function(t->s, tls_pull);
	gnutls_transport_set_pull_timeout_function(t->s, tls_pull_timeout);
	gnutls_handshake_set_timeout(t->s, TLS_HANDSHAKE_MS);
	if (server) {
		gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
		/* as CRIU: the CAs we trust are not advertised */
		gnutls_certificate_send_x509_rdn_sequence(t->s, 1);
	}
	do
		r = gnutls_handshake(t->s);
	while (r < 0 && !gnutls_error_is_fatal(r) && r != GNUTLS_E_AGAIN);
	if (r < 0) {
		struct lp_err why;

		ret = tls_err(t, r, 1, &why);
		lp_err_set(e, ret, "%s: TLS handshake failed: %s%s", peer,
			   strncmp(why.msg, "TLS: ", 5) ? why.msg : why.msg + 5,
			   ret == -EACCES || ret == -ETIMEDOUT ? "" : " (is --tls on at both ends?)");
		goto fail;
	}
	ret = tls_verify(t, cfg->no_cn_verify ? NULL : hostname, peer, e);
	if (ret)
		goto fail;
	*out = t;
	return 0;
fail:
	tls_free(t);
	return ret;
}

int tls_client_wrap(int fd, const struct tls_cfg *cfg, const char *hostname, const char *peer,
		    struct tls **out, struct lp_err *e)
{
	return tls_wrap(fd, cfg, 0, hostname, peer, out, e);
}

int tls_server_wrap(int fd, const struct tls_cfg *cfg, const char *hostname, const char *peer,
		    struct tls **out, struct lp_err *e)
{
	return tls_wrap(fd, cfg, 1, hostname, peer, out, e);
}

/* ---- the byte stream ---- */

ssize_t tls_read(struct tls *t, void *buf, size_t n, struct lp_err *e)
{
	ssize_t r;

	for (;;) {
		r = gnutls_record_recv(t->s, buf, n);
		if (r >= 0)
			return r;
		/* a TCP EOF without close_notify ends the stream too, as a plain read sees it */
		if (r == GNUTLS_E_PREMATURE_TERMINATION)
			return 0;
		/* interrupted, a warning alert, a renegotiation asked for (not done): read on */
		if (r != GNUTLS_E_AGAIN && !gnutls_error_is_fatal((int)r))
			continue;
		return tls_err(t, (int)r, 1, e);
	}
}

int tls_read_full(struct tls *t, void *buf, size_t n, struct lp_err *e)
{
	char *p = buf;

	while (n) {
		ssize_t r = tls_read(t, p, n, e);

		if (r < 0)
			return (int)r;
		if (r == 0)
			return lp_err_set(e, EPIPE, "connection closed");
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int tls_write_full(struct tls *t, const void *buf, size_t n, struct lp_err *e)
{
	const char *p = buf;

	while (n) {
		ssize_t r = gnutls_record_send(t->s, p, n);

		if (r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r < 0)
			return tls_err(t, (int)r, 0, e);
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int tls_bye(struct tls *t, int wait)
{
	int r;

	do
		r = gnutls_bye(t->s, wait ? GNUTLS_SHUT_RDWR : GNUTLS_SHUT_WR);
	while (r == GNUTLS_E_INTERRUPTED);
	return r < 0 ? tls_err(t, r, wait, NULL) : 0;
}

void tls_free(struct tls *t)
{
	if (!t)
		return;
	gnutls_deinit(t->s);
	free(t);
}

int tls_opt(int c, const char *arg, struct tls_cfg *t, int *use)
{
	switch (c) {
	case TLS_OPT:
		*use = 1;
		return 1;
	case TLS_OPT_CACERT:
		t->cacert = arg;
		return 1;
	case TLS_OPT_CACRL:
		t->cacrl = arg;
		return 1;
	case TLS_OPT_CERT:
		t->cert = arg;
		return 1;
	case TLS_OPT_KEY:
		t->key = arg;
		return 1;
	case TLS_OPT_NO_CN_VERIFY:
		t->no_cn_verify = 1;
		return 1;
	default:
		return 0;
	}
}
