/*
 * The HTTP status codes todod answers and the HTTP methods it knows, one row
 * each. Everything else is derived from these tables: the stats segment's code
 * and method indexes (stats.h), the reason phrases, method names and evhttp
 * mappings of the daemon. Adding a status or a method is one row.
 */
#ifndef TODOD_HTTP_TABLES_H
#define TODOD_HTTP_TABLES_H

/*
 * Status codes with their reason phrases (RFC 9110 15). The stats count each
 * apart, any other code under "other"; a code not here is answered with the
 * reason "Unknown".
 */
/* clang-format off */
#define HTTP_STATUSES(X)                                                                           \
    X(200, "OK")                                                                                   \
    X(201, "Created")                                                                              \
    X(204, "No Content")                                                                           \
    X(400, "Bad Request")                                                                          \
    X(401, "Unauthorized")                                                                         \
    X(403, "Forbidden")                                                                            \
    X(404, "Not Found")                                                                            \
    X(405, "Method Not Allowed")                                                                   \
    X(408, "Request Timeout")                                                                      \
    X(413, "Content Too Large")                                                                    \
    X(414, "URI Too Long")                                                                         \
    X(415, "Unsupported Media Type")                                                               \
    X(417, "Expectation Failed")                                                                   \
    X(422, "Unprocessable Content")                                                                \
    X(431, "Request Header Fields Too Large")                                                      \
    X(500, "Internal Server Error")                                                                \
    X(501, "Not Implemented")                                                                      \
    X(503, "Service Unavailable")                                                                  \
    X(504, "Gateway Timeout")                                                                      \
    X(505, "HTTP Version Not Supported")
/* clang-format on */

/*
 * Methods, by the name evhttp spells EVHTTP_REQ_<name>, in the stats' order.
 * SERVED: the framing gate and evhttp let it through to the routes (which
 * answer 405 where no handler takes it); REFUSED: answered 501 before any
 * route sees it. APART: the stats count it under its own name; OTHER: under
 * "other".
 */
/* clang-format off */
#define HTTP_METHODS(X)                                                                            \
    X(GET,     SERVED,  APART)                                                                     \
    X(POST,    SERVED,  APART)                                                                     \
    X(PUT,     SERVED,  APART)                                                                     \
    X(DELETE,  SERVED,  APART)                                                                     \
    X(HEAD,    SERVED,  APART)                                                                     \
    X(OPTIONS, SERVED,  APART)                                                                     \
    X(PATCH,   SERVED,  APART)                                                                     \
    X(TRACE,   SERVED,  OTHER)                                                                     \
    X(CONNECT, REFUSED, OTHER)
/* clang-format on */

#endif
