# todod — build, test, run, install.
#   make            build build/todod
#   make run        install missing packages, build, run against a private PostgreSQL
#   make check      install missing packages, build, run the whole test suite
#   make soak       the seeded chaos soak (SOAK_SECONDS=300, SOAK_SEED=random)
#   make format-check  the C sources as .clang-format wants them (make format rewrites them)
#   make install    PREFIX=/usr/local DESTDIR=

VERSION   := 0.1.0
PREFIX    ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR   ?= $(PREFIX)/lib/systemd/system
DESTDIR   ?=

CC        ?= cc
PKGS      := libevent libevent_openssl json-c uuid libpq libsystemd libcrypto libssl
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
# Each compilation writes the headers it read into a .d file beside its output
# (included at the end): an object is rebuilt when one of its own headers
# changes, and -MP keeps a deleted header from breaking the build.
DEPFLAGS  := -MMD -MP
LDLIBS    := $(PKG_LIBS) -lm

COMMON_SRC := $(wildcard common/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(B)/%.o)
# Files embedded in the binary: daemon/NAME.EXT becomes the array NAME_EXT.
EMBEDS     := openapi.json dashboard.html
# ... and generated from them: dashboard_hashes (the dashboard's inline script
# and style by their SHA-256, for its Content-Security-Policy).
EMBED_GEN  := $(subst .,_,$(EMBEDS)) dashboard_hashes
EMBED_OBJ  := $(patsubst %,$(B)/embed_%.o,$(EMBED_GEN))
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(B)/%.o) $(EMBED_OBJ)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all deps deps-test deps-bench run check unit unit-build integration install uninstall clean format \
        bench-api bench-perftest bench-rss soak format-check

all: $(B)/todod

$(B)/todod: $(DAEMON_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/%.o: %.c | $(B)/common $(B)/daemon $(B)/tests
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c -o $@ $<

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

# The dashboard's policy allows its one inline <script> and its one <style> by
# their SHA-256 (CSP hash sources, base64 of the digest of the element's text),
# and no other inline code: dashboard_script_sha256[] = "sha256-...", and the
# same for the style. coreutils and perl-base only (Debian's essentials).
$(B)/embed_dashboard_hashes.c: daemon/dashboard.html | $(B)/daemon
	{ echo '/* generated from daemon/dashboard.html */'; \
	  for t in script style; do \
	    perl -0777 -ne '@m = m{<'$$t'>(.*?)</'$$t'>}gs;' \
	      -e 'die "$$ARGV: want one <'$$t'> element, found " . @m . "\n" if @m != 1; print $$m[0]' \
	      $< >$@.$$t || exit 1; \
	    h=$$(sha256sum <$@.$$t | cut -c1-64 | perl -ne 'chomp; print pack("H*", $$_)' | base64 -w0); \
	    rm -f $@.$$t; \
	    echo "const char dashboard_$${t}_sha256[] = \"sha256-$$h\";"; \
	  done; } >$@.tmp && mv $@.tmp $@

$(B)/embed_%.o: $(B)/embed_%.c
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# Unit tests link the common objects and the daemon's (all but main.o).
LIB_OBJ := $(COMMON_OBJ) $(filter-out $(B)/daemon/main.o,$(DAEMON_OBJ))

$(B)/tests/test_%: tests/unit/test_%.c $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(B)/common $(B)/daemon $(B)/tests:
	mkdir -p $@

# Package installation (apt-get when root, otherwise the exact command is printed).
deps:
	@conf/dev/deps.sh build
deps-test:
	@conf/dev/deps.sh test

run: deps
	$(MAKE) all
	conf/dev/devrun.sh

check: deps-test
	$(MAKE) all unit-build
	$(MAKE) SAN=1 all unit-build
	tests/run.sh

unit-build: $(UNIT_BIN)

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do $$t || exit 1; done

# The seeded chaos soak (tests/soak/): SOAK_SECONDS of load and faults against
# three instances (one of them the sanitizer build), a primary with a standby,
# PgBouncer; SOAK_SEED replays a run's schedule (default: a random seed, printed).
SOAK_SECONDS ?= 300
SOAK_SEED    ?=

soak: deps-test
	$(MAKE) all
	$(MAKE) SAN=1 all
	python3 tests/soak/soak.py --seconds $(SOAK_SECONDS) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) \
	    --bin $(BUILD)/todod --san-bin $(BUILD)/san/todod

deps-bench:
	@conf/dev/deps.sh bench

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

# The C sources under the house style (tests/unit/jwt_vectors.h is generated).
FORMAT_SRC := $(wildcard common/*.[ch] daemon/*.[ch] tests/unit/*.c tests/fuzz/*.c)

format:
	clang-format -i $(FORMAT_SRC)

format-check:
	@command -v clang-format >/dev/null 2>&1 || { echo "format-check needs clang-format" \
	    "(Debian: clang-format; make deps-test installs it)" >&2; exit 1; }
	clang-format --dry-run -Werror $(FORMAT_SRC)

clean:
	rm -rf build

-include $(wildcard $(B)/common/*.d $(B)/daemon/*.d $(B)/tests/*.d)

# ---- fuzzing ---------------------------------------------------------------
# libFuzzer harnesses tests/fuzz/fuzz_NAME.c, built by clang under ASan and
# UBSan into $(BUILD)/fuzz/ with the project's code (all but main.c, as an
# archive). `make fuzz` runs each for FUZZ_SECONDS, or until FUZZ_RUNS
# executions when that comes first, from its seeds in tests/fuzz/corpus/NAME/;
# `make fuzz-smoke` for FUZZ_SMOKE_SECONDS (make check does, through
# tests/integration/test_fuzz.py). Both print per harness the executions and
# whether it found anything, keep a finding in $(BUILD)/fuzz/findings/NAME/ and
# exit non-zero on one. FUZZ_TARGETS picks harnesses, FUZZ_JOBS runs several at once.
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_RUNS          ?=
FUZZ_JOBS          ?= 1
FUZZ_B             := $(BUILD)/fuzz
FUZZ_ALL           := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS       ?= $(FUZZ_ALL)
FUZZ_CFLAGS        := -std=gnu11 -O1 -g $(WARN) -D_GNU_SOURCE -DTODOD_VERSION='"$(VERSION)"' \
                      -Icommon -Idaemon $(PKG_CFLAGS) -fno-omit-frame-pointer \
                      -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_LIB_OBJ       := $(patsubst %.c,$(FUZZ_B)/obj/%.o,$(COMMON_SRC) \
                        $(filter-out daemon/main.c,$(DAEMON_SRC))) \
                      $(patsubst %,$(FUZZ_B)/obj/embed_%.o,$(EMBED_GEN))
FUZZ_RUN           := tests/fuzz/run.sh -b $(FUZZ_B) -j $(FUZZ_JOBS)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-cc

fuzz-build: $(FUZZ_ALL:%=$(FUZZ_B)/fuzz_%)

fuzz-cc:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "fuzzing needs $(FUZZ_CC) with libFuzzer" \
	    "(Debian: clang libclang-rt-14-dev; make deps-test installs them)" >&2; exit 1; }

fuzz: $(FUZZ_TARGETS:%=$(FUZZ_B)/fuzz_%)
	$(FUZZ_RUN) -t $(FUZZ_SECONDS) $(if $(FUZZ_RUNS),-r $(FUZZ_RUNS)) $(FUZZ_TARGETS)

fuzz-smoke: $(FUZZ_TARGETS:%=$(FUZZ_B)/fuzz_%)
	$(FUZZ_RUN) -t $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

$(FUZZ_B)/obj/%.o: %.c | fuzz-cc
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_B)/obj/embed_%.o: $(B)/embed_%.c | fuzz-cc
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_B)/libtodod.a: $(FUZZ_LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_B)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_B)/libtodod.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_B)/libtodod.a $(PKG_LIBS) -lm

-include $(wildcard $(FUZZ_B)/obj/*/*.d $(FUZZ_B)/*.d)
