#include "http_method.h"

#include <stdbool.h>
#include <stddef.h>

#include "http_tables.h"
#include "stats.h"

#define IS_SERVED_SERVED        true
#define IS_SERVED_REFUSED       false
#define STATS_INDEX_APART(name) STATS_##name
#define STATS_INDEX_OTHER(name) STATS_OTHER_METHOD
#define METHOD_ROW(name, served, counted)                                                          \
    {EVHTTP_REQ_##name, #name, IS_SERVED_##served, STATS_INDEX_##counted(name)},

static const struct method {
    enum evhttp_cmd_type cmd;
    const char *name;
    bool served;
    int stats_index;
} methods[] = {HTTP_METHODS(METHOD_ROW)};

static const struct method *find(enum evhttp_cmd_type cmd)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].cmd == cmd)
            return &methods[i];
    return NULL;
}

const char *http_method_name(enum evhttp_cmd_type cmd)
{
    const struct method *m = find(cmd);

    return m != NULL ? m->name : NULL;
}

int http_method_stats_index(enum evhttp_cmd_type cmd)
{
    const struct method *m = find(cmd);

    return m != NULL ? m->stats_index : STATS_OTHER_METHOD;
}

unsigned http_methods_served(void)
{
    unsigned mask = 0;

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].served)
            mask |= (unsigned)methods[i].cmd;
    return mask;
}
