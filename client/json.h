/* SPDX-License-Identifier: MIT */
/* json: a small streaming JSON writer for lazy-pagesctl's --json output. */
#ifndef LP_JSON_H
#define LP_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

/* Commas and nesting are tracked here; deeper than JSON_MAX_DEPTH is ignored. */
struct json {
	FILE *f;
	int depth;
	bool first[JSON_MAX_DEPTH];
	bool after_key;
};

void json_init(struct json *j, FILE *f);
void json_obj_begin(struct json *j);
void json_obj_end(struct json *j);
void json_arr_begin(struct json *j);
void json_arr_end(struct json *j);
void json_key(struct json *j, const char *key);
/* Invalid UTF-8 becomes U+FFFD, so the output is always valid JSON. NULL is "". */
void json_str(struct json *j, const char *s);
void json_u64(struct json *j, uint64_t v);
void json_i64(struct json *j, int64_t v);
void json_double(struct json *j, double v);	/* NaN and infinities are null */
void json_bool(struct json *j, bool v);

#endif
