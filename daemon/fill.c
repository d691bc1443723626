/* SPDX-License-Identifier: MIT */
/* fill: the filling context's one piece of shared state, the numbering of processes. */
#include <string.h>

#include "fill.h"
#include "persist.h"

void fill_init(struct fill *f, uint64_t psz)
{
	memset(f, 0, sizeof(*f));
	f->psz = psz;
	pthread_mutex_init(&f->id_lock, NULL);
}

void fill_destroy(struct fill *f)
{
	pthread_mutex_destroy(&f->id_lock);
}

uint32_t fill_new_proc(struct fill *f, uint32_t type, uint64_t a, uint64_t b, uint64_t c)
{
	uint32_t id;

	pthread_mutex_lock(&f->id_lock);
	id = f->next_id++;
	persist_add(f->journal, type, id, a, b, c);
	pthread_mutex_unlock(&f->id_lock);
	return id;
}
