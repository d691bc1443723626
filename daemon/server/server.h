/* SPDX-License-Identifier: MIT */
/* server: lazy-pages-server, CRIU's page-server GET protocol served from an image dir to many clients. */
#ifndef LP_SERVER_H
#define LP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define SERVER_MAX_GET_PAGES (1u << 20)	/* a larger GET is answered "not found" */

struct tls_cfg;
struct access_net;

#define SERVER_DEFAULT_ADDRESS "127.0.0.1"	/* without --tls */
#define SERVER_DEFAULT_ADDRESS_TLS "0.0.0.0"	/* with --tls: the client certificate is the fence */

struct server_cfg {
	const char *images_dir;
	const char *address;		/* numeric IPv4/IPv6; NULL: one of the defaults above */
	int port;			/* 0: ephemeral */
	int wire;			/* PS_WIRE_3 or PS_WIRE_4 */
	int max_clients;		/* connections served at once */
	const struct tls_cfg *tls;	/* --tls (loaded), or NULL */
	const struct access_net *allow;	/* --allow: the peers that may connect; none: any */
	size_t nr_allow;
	bool insecure;			/* --insecure: a non-loopback address without --tls or --allow */
	unsigned int max_restores;	/* stop after this many clients reached CLOSE; 0: no limit */
	unsigned int idle_exit_s;	/* stop after this long with no client; 0: never */
};

struct server;

void server_cfg_defaults(struct server_cfg *cfg);

/* Opens the image dir, reads pstree.img and each pid's core task state. */
struct server *server_new(const struct server_cfg *cfg, struct lp_err *e);
void server_free(struct server *s);		/* accepts NULL; after server_run */

/*
 * Binds and listens; server_port() is then the bound port. Refuses
 * (-EACCES) a non-loopback address without --tls, --allow or --insecure,
 * and (-EINVAL) a loopback one whose --allow list has no loopback entry.
 */
int server_listen(struct server *s, struct lp_err *e);
int server_port(const struct server *s);
const char *server_address(const struct server *s);	/* the one listened on */

/*
 * Accepts and serves connections, one thread each; a peer not on the
 * --allow list is closed before anything is read or sent. Runs until
 * STOP_FD becomes readable, max_restores clients have reached CLOSE (no
 * more are accepted from then on, and the connections still open are
 * served to their end) or idle_exit_s have passed with no client; then
 * closes the listener, shuts every connection down and joins its thread.
 * Logs per connection; returns 0 or -errno.
 */
int server_run(struct server *s, int stop_fd, struct lp_err *e);

#endif
