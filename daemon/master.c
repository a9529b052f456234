#include "master.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "jwt.h"
#include "log.h"
#include "stats.h"
#include "synfilter.h"
#include "worker.h"

/*
 * The master never serves HTTP. Signal handlers only set flags; the loop below
 * sleeps in ppoll() with the signals unblocked and acts on the flags.
 */
static volatile sig_atomic_t got_hup, got_term, got_chld;

#define BACKOFF_FIRST   0.1 /* seconds before restarting a worker that died young */
#define BACKOFF_MAX     10.0
#define YOUNG           2.0 /* a worker that dies younger than this keeps backing off */
#define TICK_MS         20  /* loop period while something is pending */
#define SYN_FILTER_LEAD 0.2 /* s before drain_delay ends: the socket drops new SYNs */
#define KILL_GRACE      2.0 /* beyond shutdown_timeout before SIGKILL */

struct child {
    pid_t pid; /* 0: entry unused */
    int slot;
    int generation;
    int index; /* position in its generation: the unit of restart back-off */
    bool stopping;
    struct timespec started;
};

struct master {
    const char *conf_path;
    struct conf conf;
    struct jwt_verifier *verifier; /* auth = jwt: jwt_keys, read as the master runs */
    int listen_fd;
    int admin_fd; /* admin_listen's socket; -1 when it is unset */
    struct stats_shm *shm;
    struct child children[STATS_MAX_SLOTS];
    int generation;
    bool notified_ready; /* READY=1 sent for the current generation */
    bool stopping;
    struct timespec stop_deadline;
    struct timespec syn_filter_at; /* stopping: when drop_syns_and_close runs */
    double backoff[CONF_MAX_WORKERS];
    struct timespec respawn_at[CONF_MAX_WORKERS];
};

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        got_hup = 1;
    else if (sig == SIGCHLD)
        got_chld = 1;
    else
        got_term = 1;
}

/* ---- the listening sockets ---- */

static int listen_on(const struct sockaddr_storage *addr, socklen_t addrlen, const char *text)
{
    const struct sockaddr *sa = (const struct sockaddr *)addr;
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        log_error("socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, sa, addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        log_error("cannot listen on %s: %s", text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int master_listen(const struct conf *conf)
{
    return listen_on(&conf->listen_addr, conf->listen_addrlen, conf->listen);
}

/* admin_listen's socket; -1 (logged) when it cannot be bound, -2 when unset. */
static int admin_listen(const struct conf *conf)
{
    if (conf->admin_listen[0] == '\0')
        return -2;
    return listen_on(&conf->admin_listen_addr, conf->admin_listen_addrlen, conf->admin_listen);
}

/* ---- privileges ---- */

/*
 * As nginx does: a master started as root stays root, since it must re-read a
 * configuration only root may read, bind a new listen address on a reload and
 * remove the pid file; it never serves a request. Workers, which do, switch to
 * user right after the fork. Returns -1 when they cannot.
 */
static int worker_drop_privileges(const struct conf *conf)
{
    struct passwd *pw;

    if (getuid() != 0 || conf->user == NULL)
        return 0;
    pw = getpwnam(conf->user);
    if (pw == NULL) {
        log_error("unknown user \"%s\"", conf->user);
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        log_error("cannot switch to user \"%s\": %s", conf->user, strerror(errno));
        return -1;
    }
    return 0;
}

/* Before forking anything: a user that does not exist is an error at start. */
static int check_user(const struct conf *conf)
{
    if (getuid() != 0)
        return 0;
    if (conf->user == NULL) {
        log_warn("running as root: set \"user\" to run the workers unprivileged");
        return 0;
    }
    if (getpwnam(conf->user) == NULL) {
        log_error("unknown user \"%s\"", conf->user);
        return -1;
    }
    log_info("workers run as user %s", conf->user);
    return 0;
}

/* ---- workers ---- */

static int count_generation(const struct master *m, int generation, bool ready_only)
{
    int i, n = 0;

    for (i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct child *c = &m->children[i];

        if (c->pid == 0 || c->generation != generation || c->stopping)
            continue;
        if (!ready_only || atomic_load(&m->shm->slots[c->slot].ready))
            n++;
    }
    return n;
}

static struct child *find_child(struct master *m, pid_t pid)
{
    int i;

    for (i = 0; i < STATS_MAX_SLOTS; i++)
        if (m->children[i].pid == pid)
            return &m->children[i];
    return NULL;
}

static bool index_alive(const struct master *m, int index)
{
    int i;

    for (i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct child *c = &m->children[i];

        if (c->pid != 0 && c->generation == m->generation && c->index == index && !c->stopping)
            return true;
    }
    return false;
}

static void worker_child(struct master *m, int slot, pid_t master_pid)
{
    sigset_t none;

    signal(SIGHUP, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGUSR2, SIG_IGN); /* until the worker handles it: a retire before then is moot */
    signal(SIGUSR1, SIG_IGN); /* likewise a share posted before it can take one */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    log_init("worker", m->conf.log_level);
    if (worker_drop_privileges(&m->conf) != 0)
        _exit(1);
    /* A worker must not outlive a master killed with SIGKILL. Set after the
     * switch to user, which clears it (prctl(2)); a master that died before
     * this line is seen by getppid(). */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != master_pid)
        _exit(1);
    exit(worker_run(&m->conf, m->verifier, m->listen_fd, m->admin_fd, m->shm, slot));
}

static void spawn_worker(struct master *m, int index)
{
    struct child *c = find_child(m, 0);
    int slot = stats_slot_claim(m->shm);
    pid_t master_pid = getpid(), pid;

    if (c == NULL || slot < 0) {
        log_error("no free worker slot");
        if (slot >= 0)
            stats_slot_retire(m->shm, slot);
        return;
    }
    pid = fork();
    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        stats_slot_retire(m->shm, slot);
        m->respawn_at[index] = clock_add(clock_now(), BACKOFF_FIRST);
        return;
    }
    if (pid == 0)
        worker_child(m, slot, master_pid);
    atomic_store(&m->shm->slots[slot].pid, (int)pid);
    c->pid = pid;
    c->slot = slot;
    c->generation = m->generation;
    c->index = index;
    c->stopping = false;
    c->started = clock_now();
    log_debug("started worker %ld (slot %d, generation %d)", (long)pid, slot, m->generation);
}

static void spawn_missing(struct master *m)
{
    struct timespec now = clock_now();
    int i;

    for (i = 0; i < m->conf.workers; i++)
        if (!index_alive(m, i) && clock_diff(now, m->respawn_at[i]) >= 0)
            spawn_worker(m, i);
}

static void describe_exit(int status, char *buf, size_t n)
{
    if (WIFEXITED(status))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, n, "ended with status 0x%x", status);
}

/* A worker of the current generation died unasked: replace it, backing off
 * when it keeps dying young. */
static void schedule_restart(struct master *m, const struct child *c)
{
    struct timespec now = clock_now();
    double *b = &m->backoff[c->index];

    atomic_fetch_add(&m->shm->worker_restarts, 1);
    if (clock_diff(now, c->started) >= YOUNG)
        *b = 0;
    else
        *b = *b == 0 ? BACKOFF_FIRST : fmin(*b * 2, BACKOFF_MAX);
    m->respawn_at[c->index] = clock_add(now, *b);
    if (*b > 0)
        log_warn("worker %d keeps dying: next start in %.1f s", c->index, *b);
}

/*
 * A worker is gone and its shares of performance tests with it: their
 * coordinators report now rather than at their next poll (see perftest.c).
 * The board is the workers' to write: its share count is bounded, and the
 * coordinator is signalled only when it is one of this master's children,
 * by the pid the master knows (never a pid read from the segment).
 */
static void wake_coordinators(struct master *m, int slot)
{
    struct perf_board *b = &m->shm->perf;

    for (int i = 0; i < PERF_MAX_RUNS; i++) {
        struct perf_run *run = &b->runs[i];
        int k, n = perf_run_nshares(run), coordinator = run->coordinator_slot;

        if (atomic_load(&run->state) != PERF_RUN_ACTIVE)
            continue;
        for (k = 0; k < n && run->shares[k].worker_slot != slot; k++)
            ;
        for (int j = 0; k < n && j < STATS_MAX_SLOTS; j++)
            if (m->children[j].pid > 0 && m->children[j].slot == coordinator) {
                kill(m->children[j].pid, SIGUSR1);
                break;
            }
    }
}

static void reap_children(struct master *m)
{
    pid_t pid;
    int status;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct child *c = find_child(m, pid);
        char how[96];

        if (c == NULL)
            continue;
        describe_exit(status, how, sizeof(how));
        stats_slot_retire(m->shm, c->slot);
        wake_coordinators(m, c->slot);
        if (c->stopping || m->stopping) {
            log_info("worker %ld %s", (long)pid, how);
        } else {
            log_error("worker %ld %s", (long)pid, how);
            if (c->generation == m->generation)
                schedule_restart(m, c);
        }
        memset(c, 0, sizeof(*c));
    }
}

/* Gracefully stop every worker that is not of the current generation. */
static void stop_old_generations(struct master *m)
{
    int i;

    for (i = 0; i < STATS_MAX_SLOTS; i++) {
        struct child *c = &m->children[i];

        if (c->pid != 0 && c->generation != m->generation && !c->stopping) {
            c->stopping = true;
            kill(c->pid, SIGUSR2); /* retire: the new generation accepts already */
        }
    }
}

/* Once the workers of the current generation all accept connections. */
static void check_ready(struct master *m)
{
    int ready = count_generation(m, m->generation, true);

    atomic_store(&m->shm->workers, count_generation(m, m->generation, false));
    if (m->notified_ready || ready < m->conf.workers)
        return;
    stop_old_generations(m);
    m->notified_ready = true;
    sd_notifyf(0, "READY=1\nSTATUS=%d workers serving on %s", ready, m->conf.listen);
    log_info("%d workers serving on %s", ready, m->conf.listen);
}

/* ---- signals ---- */

static bool same_address(const struct conf *a, const struct conf *b)
{
    return a->listen_addrlen == b->listen_addrlen &&
           memcmp(&a->listen_addr, &b->listen_addr, a->listen_addrlen) == 0;
}

static bool same_admin_address(const struct conf *a, const struct conf *b)
{
    return a->admin_listen_addrlen == b->admin_listen_addrlen &&
           memcmp(&a->admin_listen_addr, &b->admin_listen_addr, a->admin_listen_addrlen) == 0;
}

/* Protected mode is said once at start and again at a reload that keeps it. */
static void warn_protected_mode(const struct conf *conf)
{
    if (auth_protected_mode(conf))
        log_warn("protected mode: listen %s is not loopback and auth = off, so only loopback "
                 "peers are served (every route but /health, /live and /ready answers others "
                 "403); set auth = jwt, or protected_mode = off for a trusted network",
                 conf->listen);
}

/*
 * SIGHUP: a new generation of workers starts with the new configuration while
 * the old one keeps serving; the old one is stopped gracefully once every new
 * worker accepts connections. An invalid file changes nothing.
 */
static void reload(struct master *m)
{
    struct jwt_verifier *verifier = NULL;
    struct conf next;
    char err[512];
    int fd = -1, admin_fd = -2; /* admin_listen's new socket; -2: none (unchanged or unset) */

    /* Everything is checked, the new socket bound, before anything changes
     * (as nginx builds a whole new cycle): a reload that fails leaves the
     * running configuration, socket and workers as they were, and systemd
     * never sees RELOADING=1 without the READY=1 that ends it. */
    if (conf_load(m->conf_path, &next, err, sizeof(err)) != 0 ||
        conf_keep_immutable(&next, &m->conf, err, sizeof(err)) != 0) {
        log_error("reload failed, keeping the running configuration: %s", err);
        return;
    }
    if (auth_load(&next, &verifier, err, sizeof(err)) != 0) {
        log_error("reload failed, keeping the running configuration: %s", err);
        sd_notify(0, "STATUS=reload failed, running the previous configuration");
        conf_free(&next);
        return;
    }
    if (check_user(&next) != 0 ||
        (!same_address(&m->conf, &next) && (fd = master_listen(&next)) < 0) ||
        (!same_admin_address(&m->conf, &next) && (admin_fd = admin_listen(&next)) == -1)) {
        log_error("reload failed, keeping the running configuration");
        sd_notify(0, "STATUS=reload failed, running the previous configuration");
        if (fd >= 0)
            close(fd);
        jwt_verifier_free(verifier);
        conf_free(&next);
        return;
    }
    sd_notify(0, "RELOADING=1\nSTATUS=reloading");
    /* The old workers keep their own copies (they were forked with them). */
    jwt_verifier_free(m->verifier);
    m->verifier = verifier;
    if (fd >= 0) {
        close(m->listen_fd); /* the old workers hold their own copies */
        m->listen_fd = fd;
    }
    if (!same_admin_address(&m->conf, &next)) {
        /* Moved, or unset (admin_fd -2: none from now on), or newly set. */
        if (m->admin_fd >= 0)
            close(m->admin_fd);
        m->admin_fd = admin_fd >= 0 ? admin_fd : -1;
    }
    conf_free(&m->conf);
    m->conf = next;
    log_set_level(m->conf.log_level);
    warn_protected_mode(&m->conf);
    m->generation++;
    m->notified_ready = false;
    memset(m->backoff, 0, sizeof(m->backoff));
    memset(m->respawn_at, 0, sizeof(m->respawn_at));
    log_info("reloading: starting %d workers", m->conf.workers);
}

/*
 * The workers hold their own copies of the listening socket: it closes when
 * the last of them stops accepting, and from then on connection attempts are
 * refused (the master's copy would keep it open and let the kernel accept
 * connections nobody will serve). Its last close would reset what waits in
 * its queue, so it first drops new SYNs (synfilter.h), and the workers take
 * the queue until it is empty. Linux asks CAP_NET_ADMIN for that: the master
 * started as root has it, its workers switched to `user` do not. So the master
 * attaches the filter SYN_FILTER_LEAD before drain_delay ends, when the
 * workers stop accepting; if it cannot, each worker tries (conn.c).
 */
static void drop_syns_and_close(struct master *m)
{
    if (m->listen_fd < 0)
        return;
    if (synfilter_attach(m->listen_fd) == 0)
        atomic_store(&m->shm->syns_dropped, 1);
    else
        log_debug("the master cannot make the listening socket drop new connections (%s): "
                  "the workers try",
                  strerror(errno));
    close(m->listen_fd);
    m->listen_fd = -1;
}

static void begin_stop(struct master *m)
{
    int i;

    /* The master keeps its copy of the listening socket until just before
     * drain_delay ends, to make it drop new SYNs then (drop_syns_and_close). */
    m->syn_filter_at = clock_add(clock_now(), fmax(0, m->conf.drain_delay - SYN_FILTER_LEAD));
    if (m->conf.drain_delay <= SYN_FILTER_LEAD)
        drop_syns_and_close(m);
    if (m->admin_fd >= 0) {
        close(m->admin_fd);
        m->admin_fd = -1;
    }
    m->stopping = true;
    atomic_store(&m->shm->stopping, 1); /* before the workers hear of it */
    m->stop_deadline =
        clock_add(clock_now(), m->conf.drain_delay + m->conf.shutdown_timeout + KILL_GRACE);
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    log_info("stopping");
    for (i = 0; i < STATS_MAX_SLOTS; i++) {
        struct child *c = &m->children[i];

        if (c->pid != 0) {
            c->stopping = true;
            kill(c->pid, SIGTERM);
        }
    }
}

static int live_children(const struct master *m)
{
    int i, n = 0;

    for (i = 0; i < STATS_MAX_SLOTS; i++)
        n += m->children[i].pid != 0;
    return n;
}

static void kill_stragglers(struct master *m)
{
    int i;

    for (i = 0; i < STATS_MAX_SLOTS; i++) {
        if (m->children[i].pid != 0) {
            log_warn("worker %ld did not stop in time: killing it", (long)m->children[i].pid);
            kill(m->children[i].pid, SIGKILL);
        }
    }
}

static void install_signals(sigset_t *unblocked)
{
    struct sigaction sa;
    sigset_t block;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The workers' own signals: sent to the master by hand they change nothing,
     * and a worker just forked ignores them until its loop handles them. */
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    /* Blocked except inside ppoll(), so no flag is set between its test and the sleep. */
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, unblocked);
}

/* Whether the loop must wake up on its own (something to poll for). */
static bool pending_work(const struct master *m)
{
    int i;

    if (m->stopping || !m->notified_ready)
        return true;
    for (i = 0; i < m->conf.workers; i++)
        if (!index_alive(m, i))
            return true;
    return false;
}

static void write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");

    if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0)
        log_warn("cannot write pid file %s: %s", path, strerror(errno));
}

/*
 * Every client connection costs a descriptor: take the hard limit (systemd's
 * default soft limit of 1024 would cap a worker below max_connections).
 */
static void raise_open_files_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("cannot raise the open files limit: %s", strerror(errno));
}

int master_run(const char *conf_path, struct conf *conf)
{
    char err[512];

    static struct master m; /* large; one per process */
    sigset_t unblocked;

    m.conf_path = conf_path;
    m.conf = *conf; /* the master owns it from here */
    if (auth_load(&m.conf, &m.verifier, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return 1;
    }
    warn_protected_mode(&m.conf);
    raise_open_files_limit();
    m.listen_fd = master_listen(&m.conf);
    if (m.listen_fd < 0)
        return 1;
    m.admin_fd = admin_listen(&m.conf);
    if (m.admin_fd == -1)
        return 1;
    m.admin_fd = m.admin_fd >= 0 ? m.admin_fd : -1;
    m.shm = stats_create();
    if (m.shm == NULL) {
        log_error("cannot create the shared memory segment: %s", strerror(errno));
        return 1;
    }
    if (m.conf.pid_file != NULL)
        write_pid_file(m.conf.pid_file);
    if (check_user(&m.conf) != 0)
        return 1;
    install_signals(&unblocked);
    log_info("todod %s starting %d workers on %s", TODOD_VERSION, m.conf.workers, m.conf.listen);
    for (;;) {
        struct timespec tick = {0, TICK_MS * 1000000L};

        if (got_chld) {
            got_chld = 0;
            reap_children(&m);
        }
        if (got_term && !m.stopping)
            begin_stop(&m);
        if (got_hup) {
            got_hup = 0;
            if (!m.stopping)
                reload(&m);
        }
        if (m.stopping) {
            if (clock_diff(clock_now(), m.syn_filter_at) >= 0)
                drop_syns_and_close(&m);
            if (live_children(&m) == 0)
                break;
            if (clock_diff(clock_now(), m.stop_deadline) > 0)
                kill_stragglers(&m);
        } else {
            spawn_missing(&m);
            check_ready(&m);
        }
        ppoll(NULL, 0, pending_work(&m) ? &tick : NULL, &unblocked);
    }
    if (m.conf.pid_file != NULL)
        unlink(m.conf.pid_file);
    log_info("stopped");
    conf_free(&m.conf);
    jwt_verifier_free(m.verifier);
    stats_destroy(m.shm);
    if (m.listen_fd >= 0)
        close(m.listen_fd);
    if (m.admin_fd >= 0)
        close(m.admin_fd);
    return 0;
}
