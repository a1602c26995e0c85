# tend — build with `make`, test with `make check`, install with `make install`.
# Variables: PREFIX (/usr/local), DESTDIR, BUILD (build dir, default build), SAN=1 (ASan+UBSan),
# STATIC=1 (a statically linked `tend` program), V=1 (show commands).

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
BUILD      ?= build

VERSION := $(shell sed -n 's/^#define TEND_VERSION "\(.*\)"/\1/p' include/tend.h)
SONAME_MAJOR := 0

CC       ?= cc
PKG_DEPS := zlib jansson libsodium
DEP_CFLAGS := $(shell pkg-config --cflags $(PKG_DEPS) 2>/dev/null)
DEP_LIBS   := $(shell pkg-config --libs $(PKG_DEPS) 2>/dev/null)
# What only the program needs (not libtend, so not in tend.pc): the configuration parser of
# `tend supervise`.
PROG_PKG_DEPS := inih
PROG_DEP_CFLAGS := $(shell pkg-config --cflags $(PROG_PKG_DEPS) 2>/dev/null)
PROG_DEP_LIBS   := $(shell pkg-config --libs $(PROG_PKG_DEPS) 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Wvla
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -fvisibility=hidden -Iinclude -Ilib $(DEP_CFLAGS) \
            -D_GNU_SOURCE -DTEND_BUILD
LDLIBS   += $(DEP_LIBS)

# The static program looks accounts up in /etc/passwd and /etc/group itself, never through
# NSS (src/account.h says why).
ifeq ($(STATIC),1)
CFLAGS  += -DTEND_STATIC
endif

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
endif

ifneq ($(V),1)
Q := @
endif

LIB_SRC  := $(sort $(wildcard lib/*.c))
PROG_SRC := $(sort $(wildcard src/*.c))
LIB_OBJ_PIC := $(LIB_SRC:%.c=$(BUILD)/pic/%.o)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
PROG_OBJ := $(PROG_SRC:%.c=$(BUILD)/%.o)
TEST_C   := $(sort $(wildcard tests/unit/*.c))
TEST_BIN := $(TEST_C:tests/unit/%.c=$(BUILD)/tests/%)

STATIC_LIB := $(BUILD)/libtend.a
SHARED_LIB := $(BUILD)/libtend.so.$(VERSION)
PROGRAM    := $(BUILD)/tend
HELPER     := $(BUILD)/tests/helper

.PHONY: all check test clean install uninstall static deps
.SECONDARY:
all: $(STATIC_LIB) $(SHARED_LIB) $(PROGRAM) $(BUILD)/tend.pc

# --help text is generated from the man pages: one source for both.
HELP_H := $(patsubst man/tend-%.1,$(BUILD)/gen/help-%.h,$(wildcard man/tend-*.1))
$(BUILD)/gen/help-%.h: man/tend-%.1 scripts/man2help.awk
	@mkdir -p $(dir $@)
	$(Q)awk -v name=help_$(subst -,_,$*) -f scripts/man2help.awk $< > $@.tmp && mv $@.tmp $@

# `tend init -l` (tini's -l) prints the license: a static binary copied alone into an image
# carries its own.
$(BUILD)/gen/license.h: LICENSE
	@mkdir -p $(dir $@)
	$(Q)awk 'BEGIN { print "static const char license_text[] =" } \
	    { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); printf "\t\"%s\\n\"\n", $$0 } \
	    END { print "\t;" }' $< > $@.tmp && mv $@.tmp $@

$(BUILD)/src/%.o: src/%.c include/tend.h $(wildcard lib/*.h src/*.h) $(HELP_H) $(BUILD)/gen/license.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(PROG_DEP_CFLAGS) -I$(BUILD)/gen -c -o $@ $<

$(BUILD)/lib/%.o: lib/%.c include/tend.h $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/pic/lib/%.o: lib/%.c include/tend.h $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -fPIC -c -o $@ $<

$(STATIC_LIB): $(LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJ_PIC)
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,-soname,libtend.so.$(SONAME_MAJOR) -o $@ $^ $(LDLIBS)
	$(Q)ln -sf libtend.so.$(VERSION) $(BUILD)/libtend.so.$(SONAME_MAJOR)
	$(Q)ln -sf libtend.so.$(VERSION) $(BUILD)/libtend.so

ifeq ($(STATIC),1)
$(PROGRAM): $(PROG_OBJ) $(STATIC_LIB)
	$(Q)$(CC) $(LDFLAGS) -static -o $@ $(PROG_OBJ) $(STATIC_LIB) $(PROG_DEP_LIBS) $(LDLIBS)
else
# The small libraries go into the program itself (glibc stays shared): each shared library
# costs every `tend run` time in the dynamic loader (0.2-0.4 ms here, BENCHMARKS.md).
$(PROGRAM): $(PROG_OBJ) $(STATIC_LIB)
	$(Q)$(CC) $(LDFLAGS) -o $@ $(PROG_OBJ) $(STATIC_LIB) -Wl,-Bstatic $(PROG_DEP_LIBS) \
	    $(DEP_LIBS) -Wl,-Bdynamic $(filter-out $(DEP_LIBS),$(LDLIBS)) -pthread
endif

# A statically linked program, to copy into any image as its init (as tini-static is):
# `make static` builds $(BUILD)-static/tend.
static:
	$(Q)$(MAKE) --no-print-directory STATIC=1 BUILD=$(BUILD)-static $(BUILD)-static/tend

$(BUILD)/tend.pc: tend.pc.in include/tend.h
	@mkdir -p $(BUILD)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@DEPS@|$(PKG_DEPS)|' $< > $@

# Test programs: the misbehaving helper and the C unit tests (cmocka).
$(HELPER): tests/helper.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -pthread -o $@ $< $(LDLIBS)

# A unit test of a part of the program links that part's objects: TEST_OBJ_<test name>.
TEST_OBJ_test_launch_proto := $(BUILD)/src/launch_proto.o
TEST_OBJ_test_launch_hosts := $(BUILD)/src/launch_hosts.o
TEST_OBJ_test_account := $(BUILD)/src/account.o
.SECONDEXPANSION:
$(BUILD)/tests/%: tests/unit/%.c $$(TEST_OBJ_$$*) $(STATIC_LIB) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -Itests/unit -Isrc $(LDFLAGS) -pthread -o $@ $< $(TEST_OBJ_$*) \
	    $(STATIC_LIB) $(LDLIBS) -lcmocka

# The static program is tested too (tend init in an empty root); sanitizers cannot link -static.
ifneq ($(SAN),1)
TESTS_STATIC := static
endif
tests-build: all $(HELPER) $(TEST_BIN) $(TESTS_STATIC) fuzz-build
.PHONY: tests-build

# Fuzz targets (fuzz/README.md): the configuration parser, the control protocol, the
# sd_notify parser and the wire of tend launch. `fuzz-build` links each with fuzz/driver.c (corpus replay and deterministic
# mutations; tests/test_fuzz.py runs them); `make fuzz` builds them with clang's libFuzzer
# (and ASan+UBSan) in $(BUILD)-libfuzzer and runs each for FUZZ_TIME seconds.
FUZZ_TARGETS := config control notify launch
FUZZ_BIN := $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)
FUZZ_OBJ_config := $(BUILD)/src/config.o $(BUILD)/src/account.o
FUZZ_OBJ_control := $(BUILD)/src/control.o $(BUILD)/src/account.o
FUZZ_OBJ_notify :=
FUZZ_OBJ_launch := $(BUILD)/src/launch_proto.o
FUZZ_TIME ?= 60
FUZZ_ARGS ?=
ifeq ($(FUZZ_ENGINE),libfuzzer)
CFLAGS += -fsanitize=fuzzer-no-link
FUZZ_MAIN :=
FUZZ_LDFLAGS := -fsanitize=fuzzer
else
FUZZ_MAIN := $(BUILD)/fuzz/driver.o
FUZZ_LDFLAGS :=
endif
$(BUILD)/fuzz/%.o: fuzz/%.c fuzz/fuzz.h include/tend.h $(wildcard lib/*.h src/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(PROG_DEP_CFLAGS) -Isrc -c -o $@ $<
$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/fuzz_%.o $$(FUZZ_OBJ_$$*) $(FUZZ_MAIN) $(STATIC_LIB)
	$(Q)$(CC) $(LDFLAGS) $(FUZZ_LDFLAGS) -o $@ $^ $(PROG_DEP_LIBS) $(LDLIBS)
fuzz-build: $(FUZZ_BIN)
fuzz:
	$(Q)$(MAKE) --no-print-directory CC=clang SAN=1 FUZZ_ENGINE=libfuzzer \
	    BUILD=$(BUILD)-libfuzzer fuzz-build
	$(Q)set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(BUILD)-libfuzzer/corpus/$$t $(BUILD)-libfuzzer/artifacts; \
	    echo "  FUZZ    $$t ($(FUZZ_TIME) s)"; \
	    $(BUILD)-libfuzzer/fuzz/fuzz_$$t -max_total_time=$(FUZZ_TIME) -timeout=10 \
	        -artifact_prefix=$(BUILD)-libfuzzer/artifacts/$$t- $(FUZZ_ARGS) \
	        $(BUILD)-libfuzzer/corpus/$$t fuzz/corpus/$$t; \
	done
.PHONY: fuzz fuzz-build

check test: tests-build
	$(Q)TEND_BUILD=$(abspath $(BUILD)) /usr/bin/python3 -m pytest tests $(PYTEST_ARGS)

# Benchmarks (never part of check): tend against its peers, results in $(BUILD)/bench/.
# bench/run installs the Debian peers first (libuv is linked when present); BENCH_ARGS=--quick.
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
$(BUILD)/bench/%: bench/%.c $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $(shell pkg-config --exists libuv && echo -DHAVE_LIBUV) $(LDFLAGS) \
	    -o $@ $< $(STATIC_LIB) $(LDLIBS) $(shell pkg-config --libs libuv 2>/dev/null)
# The service of the supervision benchmarks (4, 6, 7) is static: benchmark 6 times its start,
# and no dynamic loading should stand between the exec and its first timestamp.
$(BUILD)/bench/svc: bench/svc.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -static -o $@ $<
# Benchmark 6's service is its own _start, without the C library (x86-64): its first
# timestamp then follows the exec by a few hundred instructions, not by glibc's start-up.
$(BUILD)/bench/stamp: bench/stamp.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) -O2 -g -std=gnu11 $(WARN) -ffreestanding -fno-stack-protector -fno-pie \
	    -nostdlib -static -o $@ $<
# The static program too: benchmark 2 sets it beside tini-static (like for like).
bench: all static
	$(Q)/usr/bin/python3 bench/run --install-peers
	$(Q)$(MAKE) --no-print-directory $(BENCH_BIN)
	$(Q)/usr/bin/python3 bench/run --build $(BUILD) $(BENCH_ARGS)
.PHONY: bench

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	install -m 755 $(PROGRAM) $(DESTDIR)$(BINDIR)/tend
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/libtend.a
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/libtend.so.$(VERSION)
	ln -sf libtend.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libtend.so.$(SONAME_MAJOR)
	ln -sf libtend.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libtend.so
	install -m 644 include/tend.h $(DESTDIR)$(INCLUDEDIR)/tend.h
	install -m 644 $(BUILD)/tend.pc $(DESTDIR)$(PKGCONFIGDIR)/tend.pc
	install -m 644 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 man/*.5 $(DESTDIR)$(MANDIR)/man5/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/tend $(DESTDIR)$(LIBDIR)/libtend.* \
	    $(DESTDIR)$(INCLUDEDIR)/tend.h $(DESTDIR)$(PKGCONFIGDIR)/tend.pc
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(wildcard man/*.1)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(wildcard man/*.5)))

# Only this build's directories: $(BUILD) and those made from its name (static, libfuzzer,
# and build-san for the default BUILD), never another checkout's or colleague's build-* dir.
clean:
	rm -rf $(BUILD) $(BUILD)-static $(BUILD)-libfuzzer $(BUILD)-san
