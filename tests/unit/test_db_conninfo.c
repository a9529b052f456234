/* database_url parsed into libpq's keywords, and the host lists handed to libpq
 * for one connection attempt (daemon/db_conninfo.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "db_int.h"

/* A pool with nothing but its parsed database_url; db_pool_free frees it. */
static struct db_pool *parsed(const char *url)
{
    struct db_pool *pool = calloc(1, sizeof(*pool));

    assert_non_null(pool);
    assert_int_equal(db_parse_conninfo(pool, url), 0);
    return pool;
}

static const char *val(const struct db_pool *pool, const char *key)
{
    for (int i = 0; i < pool->nkeys; i++)
        if (strcmp(pool->keys[i], key) == 0)
            return pool->vals[i];
    return NULL;
}

/* The lists for c, freed after the comparison. */
static void assert_lists(struct db_conn *c, const char *host, const char *hostaddr,
                         const char *port)
{
    char *h = NULL, *a = NULL, *p = NULL;

    assert_int_equal(db_host_lists(c, &h, &a, &p), 0);
    assert_string_equal(h, host);
    assert_string_equal(a, hostaddr);
    assert_string_equal(p, port);
    free(h), free(a), free(p);
}

static void a_uri_becomes_keywords_and_names_todod(void **state)
{
    struct db_pool *pool = parsed("postgresql://todo@127.0.0.1:5433/todos?connect_timeout=3");

    (void)state;
    assert_string_equal(val(pool, "host"), "127.0.0.1");
    assert_string_equal(val(pool, "port"), "5433");
    assert_string_equal(val(pool, "user"), "todo");
    assert_string_equal(val(pool, "dbname"), "todos");
    assert_string_equal(val(pool, "connect_timeout"), "3");
    assert_string_equal(val(pool, "fallback_application_name"), "todod");
    assert_string_equal(pool->keys[pool->host_key], "host");
    assert_string_equal(pool->keys[pool->port_key], "port");
    assert_int_equal(pool->hostaddr_key, -1);
    /* An IP literal is not looked up. */
    assert_int_equal(pool->nhosts, 1);
    assert_string_equal(pool->hosts[0], "127.0.0.1");
    assert_false(pool->needs_dns);
    db_pool_free(pool);
}

static void a_host_list_is_split_and_names_need_a_lookup(void **state)
{
    struct db_pool *pool = parsed("host=db1.example,10.0.0.2,/run/postgresql,::1 dbname=t");

    (void)state;
    assert_int_equal(pool->nhosts, 4);
    assert_string_equal(pool->hosts[0], "db1.example");
    assert_string_equal(pool->hosts[1], "10.0.0.2");
    assert_string_equal(pool->hosts[2], "/run/postgresql");
    assert_string_equal(pool->hosts[3], "::1");
    assert_true(pool->needs_dns);
    db_pool_free(pool);
}

static void only_literals_and_socket_directories_need_no_lookup(void **state)
{
    struct db_pool *pool = parsed("host=10.0.0.1,::1,/tmp,@abstract dbname=t");

    (void)state;
    assert_int_equal(pool->nhosts, 4);
    assert_false(pool->needs_dns);
    db_pool_free(pool);
}

static void with_hostaddr_nothing_is_looked_up(void **state)
{
    struct db_pool *pool = parsed("host=db.example hostaddr=10.0.0.9 dbname=t");

    (void)state;
    assert_int_equal(pool->nhosts, 0);
    assert_null(pool->hosts);
    assert_false(pool->needs_dns);
    assert_string_equal(pool->vals[pool->hostaddr_key], "10.0.0.9");
    db_pool_free(pool);
}

static void names_from_pghost_and_pgport_are_passed_explicitly(void **state)
{
    struct db_pool *pool;

    (void)state;
    setenv("PGHOST", "a.example,b.example", 1);
    setenv("PGPORT", "5444", 1);
    pool = parsed("dbname=t");
    unsetenv("PGHOST");
    unsetenv("PGPORT");
    assert_int_equal(pool->nhosts, 2);
    assert_true(pool->needs_dns);
    assert_string_equal(pool->keys[pool->host_key], "host");
    assert_string_equal(pool->vals[pool->host_key], "a.example,b.example");
    assert_string_equal(pool->keys[pool->port_key], "port");
    assert_string_equal(pool->vals[pool->port_key], "5444");
    db_pool_free(pool);
}

static void a_url_libpq_refuses_is_an_error(void **state)
{
    struct db_pool *pool = calloc(1, sizeof(*pool));

    (void)state;
    assert_non_null(pool);
    assert_int_equal(db_parse_conninfo(pool, "host=x nosuchkeyword=1"), -1);
    assert_int_equal(db_parse_conninfo(pool, "postgresql://[::1"), -1);
    db_pool_free(pool);
}

/* Each name gives one entry per address it resolved to, beside its own port;
 * a literal or a directory one entry with an empty hostaddr (libpq then uses
 * host). */
static void every_address_of_every_name_is_listed_with_its_port(void **state)
{
    struct db_pool *pool = parsed("host=db1.example,10.0.0.2 port=5432,5433 dbname=t");
    char *addrs[2] = {strdup("10.0.0.5,10.0.0.6"), NULL};
    struct db_conn c = {.pool = pool, .dns_addrs = addrs};

    (void)state;
    assert_lists(&c, "db1.example,db1.example,10.0.0.2", "10.0.0.5,10.0.0.6,", "5432,5432,5433");
    free(addrs[0]);
    db_pool_free(pool);
}

/* After a time-out with several hosts the next attempt starts one further on. */
static void the_lists_start_at_the_host_next_in_turn(void **state)
{
    struct db_pool *pool = parsed("host=db1.example,10.0.0.2,db3.example port=5432 dbname=t");
    char *addrs[3] = {strdup("10.0.0.5"), NULL, strdup("10.0.0.7,fd00::7")};
    struct db_conn c = {.pool = pool, .dns_addrs = addrs, .first_host = 1};

    (void)state;
    assert_lists(&c, "10.0.0.2,db3.example,db3.example,db1.example", ",10.0.0.7,fd00::7,10.0.0.5",
                 "5432,5432,5432,5432");
    c.first_host = 2;
    assert_lists(&c, "db3.example,db3.example,db1.example,10.0.0.2", "10.0.0.7,fd00::7,10.0.0.5,",
                 "5432,5432,5432,5432");
    free(addrs[0]), free(addrs[2]);
    db_pool_free(pool);
}

static void without_a_port_each_host_gets_an_empty_one(void **state)
{
    struct db_pool *pool = parsed("host=db1.example,db2.example dbname=t");
    char *addrs[2] = {strdup("10.0.0.1"), strdup("10.0.0.2")};
    struct db_conn c = {.pool = pool, .dns_addrs = addrs};

    (void)state;
    assert_lists(&c, "db1.example,db2.example", "10.0.0.1,10.0.0.2", ",");
    free(addrs[0]), free(addrs[1]);
    db_pool_free(pool);
}

/* Lists that would not fit are refused, not cut short. */
static void lists_too_long_are_refused(void **state)
{
    struct db_pool *pool = parsed("host=db.example dbname=t");
    size_t n = 5000;
    char *many = malloc(n), *h = NULL, *a = NULL, *p = NULL;
    char *addrs[1] = {many};
    struct db_conn c = {.pool = pool, .dns_addrs = addrs};

    (void)state;
    assert_non_null(many);
    for (size_t i = 0; i + 9 < n; i += 9)
        memcpy(many + i, "10.0.0.1,", 9);
    many[n - n % 9 - 1] = '\0';
    assert_int_equal(db_host_lists(&c, &h, &a, &p), -1);
    free(h), free(a), free(p), free(many);
    db_pool_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_uri_becomes_keywords_and_names_todod),
        cmocka_unit_test(a_host_list_is_split_and_names_need_a_lookup),
        cmocka_unit_test(only_literals_and_socket_directories_need_no_lookup),
        cmocka_unit_test(with_hostaddr_nothing_is_looked_up),
        cmocka_unit_test(names_from_pghost_and_pgport_are_passed_explicitly),
        cmocka_unit_test(a_url_libpq_refuses_is_an_error),
        cmocka_unit_test(every_address_of_every_name_is_listed_with_its_port),
        cmocka_unit_test(the_lists_start_at_the_host_next_in_turn),
        cmocka_unit_test(without_a_port_each_host_gets_an_empty_one),
        cmocka_unit_test(lists_too_long_are_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
