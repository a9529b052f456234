# todod — build, test, run, install.
#   make            build build/todod
#   make run        install missing packages, build, run against a private PostgreSQL
#   make check      install missing packages, build, run the whole test suite
#   make install    PREFIX=/usr/local DESTDIR=

VERSION   := 0.1.0
PREFIX    ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR   ?= $(PREFIX)/lib/systemd/system
DESTDIR   ?=

CC        ?= cc
PKGS      := libevent json-c uuid libpq libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
             -Wno-unused-parameter
OPT       ?= -O2 -g
CFLAGS    ?=
# BUILD names the output tree (default build/); SAN=1 builds an AddressSanitizer +
# UndefinedBehaviorSanitizer tree in $(BUILD)/san.
BUILD     ?= build
ifeq ($(SAN),1)
B         := $(BUILD)/san
SAN_CFLAGS := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS   += -fsanitize=address,undefined
else
B         := $(BUILD)
endif

ALL_CFLAGS := -std=gnu11 $(OPT) $(WARN) -D_GNU_SOURCE -DTODOD_VERSION='"$(VERSION)"' \
              -Icommon -Idaemon -I$(B) $(PKG_CFLAGS) $(SAN_CFLAGS) $(CFLAGS)
LDLIBS    := $(PKG_LIBS) -lm

COMMON_SRC := $(wildcard common/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(B)/%.o)
# Files embedded in the binary: daemon/NAME.EXT becomes the array NAME_EXT.
EMBEDS     := openapi.json dashboard.html
EMBED_OBJ  := $(patsubst %,$(B)/embed_%.o,$(subst .,_,$(EMBEDS)))
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(B)/%.o) $(EMBED_OBJ)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all deps deps-test deps-bench run check unit integration install uninstall clean format \
        bench-api bench-perftest bench-rss

all: $(B)/todod

$(B)/todod: $(DAEMON_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/%.o: %.c $(wildcard common/*.h daemon/*.h) | $(B)/common $(B)/daemon $(B)/tests
	$(CC) $(ALL_CFLAGS) -MMD -c -o $@ $<

# The OpenAPI document and the dashboard are kept as files in daemon/ and embedded
# in the binary: daemon/openapi.json becomes openapi_json[] and openapi_json_len.
define embed_rule
$(B)/embed_$(subst .,_,$(1)).c: daemon/$(1) | $(B)/daemon
	{ echo '/* generated from daemon/$(1) */'; \
	  echo 'const char $(subst .,_,$(1))[] = {'; \
	  od -An -v -tx1 $$< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0x00};'; \
	  echo 'const unsigned long $(subst .,_,$(1))_len = sizeof($(subst .,_,$(1))) - 1;'; } > $$@
endef
$(foreach f,$(EMBEDS),$(eval $(call embed_rule,$(f))))

$(B)/embed_%.o: $(B)/embed_%.c
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# Unit tests link the common objects and the daemon's (all but main.o).
LIB_OBJ := $(COMMON_OBJ) $(filter-out $(B)/daemon/main.o,$(DAEMON_OBJ))

$(B)/tests/test_%: tests/unit/test_%.c $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(B)/common $(B)/daemon $(B)/tests:
	mkdir -p $@

# Package installation (apt-get when root, otherwise the exact command is printed).
deps:
	@tests/lib/deps.sh build
deps-test:
	@tests/lib/deps.sh test

run: deps
	$(MAKE) all
	tests/lib/devrun.sh

check: deps-test
	$(MAKE) all $(UNIT_BIN)
	$(MAKE) SAN=1 all $(patsubst $(B)/%,$(B)/san/%,$(UNIT_BIN))
	tests/run.sh

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do $$t || exit 1; done

deps-bench:
	@tests/lib/deps.sh bench

bench-api: deps-bench all
	tests/bench/api.sh
bench-perftest: deps-bench all
	tests/bench/perftest.sh
bench-rss: deps-bench all
	tests/bench/rss.sh

install: $(B)/todod
	install -D -m 0755 $(B)/todod $(DESTDIR)$(PREFIX)/sbin/todod
	install -D -m 0644 conf/todod.conf $(DESTDIR)$(SYSCONFDIR)/todod/todod.conf
	sed 's|@SBINDIR@|$(PREFIX)/sbin|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/todod.service \
	    > todod.service.tmp && install -D -m 0644 todod.service.tmp $(DESTDIR)$(UNITDIR)/todod.service; \
	    rc=$$?; rm -f todod.service.tmp; exit $$rc
	install -D -m 0644 daemon/todod.8 $(DESTDIR)$(PREFIX)/share/man/man8/todod.8
	install -D -m 0644 conf/todod.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/todod.conf.5

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/todod $(DESTDIR)$(UNITDIR)/todod.service
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/todod.8 $(DESTDIR)$(PREFIX)/share/man/man5/todod.conf.5

format:
	clang-format -i common/*.[ch] daemon/*.[ch] tests/unit/*.c

clean:
	rm -rf build

-include $(wildcard $(B)/common/*.d $(B)/daemon/*.d)
