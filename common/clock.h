/* Monotonic time in struct timespec, and the few operations todod needs on it. */
#ifndef TODOD_CLOCK_H
#define TODOD_CLOCK_H

#include <math.h>
#include <sys/time.h>
#include <time.h>

static inline struct timespec clock_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

/* a - b, in seconds. */
static inline double clock_diff(struct timespec a, struct timespec b)
{
    return (double)(a.tv_sec - b.tv_sec) + (double)(a.tv_nsec - b.tv_nsec) / 1e9;
}

/* Seconds elapsed since t. */
static inline double clock_since(struct timespec t)
{
    return clock_diff(clock_now(), t);
}

static inline struct timespec clock_add(struct timespec t, double seconds)
{
    double whole;

    t.tv_nsec += (long)(modf(seconds, &whole) * 1e9);
    t.tv_sec += (time_t)whole + t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    return t;
}

/* For libevent timeouts. */
static inline struct timeval clock_timeval(double seconds)
{
    struct timeval tv;

    if (seconds < 0)
        seconds = 0;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}

#endif
