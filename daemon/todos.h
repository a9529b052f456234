/* The todo resource: CRUD and listing, each a request -> one prepared query. */
#ifndef TODOD_TODOS_H
#define TODOD_TODOS_H

#include "http.h"

void todos_list(struct http_req *r);
void todos_create(struct http_req *r);
void todos_get(struct http_req *r);
void todos_update(struct http_req *r);
void todos_delete(struct http_req *r);
void todos_by_done(struct http_req *r);

#endif
