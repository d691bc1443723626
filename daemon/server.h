/* SPDX-License-Identifier: MIT */
/* server: lazy-pages-server, CRIU's page-server GET protocol served from an image dir to many clients. */
#ifndef LP_SERVER_H
#define LP_SERVER_H

#include "err.h"

#define SERVER_MAX_GET_PAGES (1u << 20)	/* a larger GET is answered "not found" */

struct tls_cfg;

struct server_cfg {
	const char *images_dir;
	const char *address;		/* numeric IPv4/IPv6; NULL binds 0.0.0.0 */
	int port;			/* 0: ephemeral */
	int wire;			/* PS_WIRE_3 or PS_WIRE_4 */
	int max_clients;		/* connections served at once */
	const struct tls_cfg *tls;	/* --tls (loaded), or NULL */
};

struct server;

void server_cfg_defaults(struct server_cfg *cfg);

/* Opens the image dir, reads pstree.img and each pid's core task state. */
struct server *server_new(const struct server_cfg *cfg, struct lp_err *e);
void server_free(struct server *s);		/* accepts NULL; after server_run */

/* Binds and listens; server_port() is then the bound port. */
int server_listen(struct server *s, struct lp_err *e);
int server_port(const struct server *s);

/*
 * Accepts and serves connections, one thread each, until STOP_FD becomes
 * readable; then closes the listener, shuts every connection down and
 * joins its thread. Logs per connection; returns 0 or -errno.
 */
int server_run(struct server *s, int stop_fd, struct lp_err *e);

#endif
