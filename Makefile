# edgebridge — plain GNU make, pkg-config for every library.
#
#   make            build/edgebridged
#   make check      unit tests (cmocka) + integration tests (real parts),
#                   all under ASan+UBSan; installs missing packages as root
#   make demo       token, PKI, broker and the daemon with simulated sensors
#   make bench      throughput and RSS figures (ratios to a baseline)
#   make install    DESTDIR=... PREFIX=/usr

VERSION   ?= 0.1.0
PREFIX    ?= /usr/local
SBINDIR   ?= $(PREFIX)/sbin
BINDIR    ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DESTDIR   ?=
PYTHON    ?= /usr/bin/python3

PKGS      := libmosquitto openssl inih sqlite3 libcurl jansson libgpiod
CC        ?= gcc
CFLAGS    ?= -O2 -g
CFLAGS    += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 \
	     -Wno-format-nonliteral -D_GNU_SOURCE -DEB_VERSION='"$(VERSION)"'
CPPFLAGS  += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS    += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	     -fno-sanitize-recover=undefined

# The modules, shared by the daemon, the tool and the tests.
LIB_SRC := common/util.c common/sample.c \
	   config/config.c \
	   daemon/loop.c \
	   hsm/hsm.c hsm/certcheck.c hsm/p11.c \
	   drivers/registry.c drivers/sim.c drivers/hwmon.c drivers/w1therm.c \
	   drivers/iio.c drivers/gpio_common.c drivers/gpio_line.c \
	   drivers/gpio_input.c drivers/gpio_output.c drivers/dht22.c \
	   drivers/gpio_counter.c \
	   store/memq.c store/store.c \
	   cloud/backoff.c cloud/pack.c cloud/cumulocity.c cloud/mqtt.c cloud/cloud.c \
	   cloud/jwt.c cloud/https.c cloud/c8y_token.c cloud/c8y_bulk.c \
	   cloud/c8y_ops.c
DAEMON_SRC := daemon/main.c daemon/log.c daemon/sdnotify.c daemon/sensors.c
TOOL_SRC   := $(sort $(wildcard tools/*.c))

UNIT_TESTS := test_config test_smartrest test_backoff test_memq test_loop \
	      test_drivers test_gpio test_dht22 \
	      test_pack test_store test_certcheck test_c8y

# Quiet by default, as in the kernel; "make V=1" shows the commands.
ifeq ($(V),1)
Q :=
echo_cmd = @true
else
Q := @
echo_cmd = @printf '  %-6s %s\n'
endif

B  := build
BA := build-asan

all: $(B)/edgebridged $(B)/edgebridge

# The test clouds (emulators enforcing what the platforms enforce).
include tests/cloud/cloud.mk

define objs
$(patsubst %.c,$(1)/obj/%.o,$(2))
endef

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(echo_cmd) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BA)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(echo_cmd) CC-SAN $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS) -MMD -MP -c -o $@ $<

$(B)/edgebridged: $(call objs,$(B),$(DAEMON_SRC) $(LIB_SRC))
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/edgebridge: $(call objs,$(B),$(TOOL_SRC) $(LIB_SRC))
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BA)/edgebridge: $(call objs,$(BA),$(TOOL_SRC) $(LIB_SRC))
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

$(BA)/edgebridged: $(call objs,$(BA),$(DAEMON_SRC) $(LIB_SRC))
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

# Unit tests link the modules plus daemon/log.c (sensors use it).
$(BA)/tests/%: $(BA)/obj/tests/unit/%.o $(call objs,$(BA),$(LIB_SRC) daemon/log.c daemon/sdnotify.c)
	@mkdir -p $(dir $@)
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(B)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(echo_cmd) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDLIBS)

# store_growth drives the store module directly.
$(B)/bench/store_growth: bench/store_growth.c store/store.c store/memq.c \
			 common/sample.c common/util.c \
			 store/store.h store/memq.h common/sample.h common/util.h
	@mkdir -p $(dir $@)
	$(echo_cmd) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(filter %.c,$^) $(LDLIBS)

deps:
	@scripts/install-deps

unit: $(addprefix $(BA)/tests/,$(UNIT_TESTS))
	@set -e; for t in $^; do echo "== $$t"; $$t; done

integration: $(BA)/edgebridged $(BA)/edgebridge $(TEST_CLOUD)
	ASAN_OPTIONS=detect_leaks=0 EDGEBRIDGE=$(CURDIR)/$(BA)/edgebridge \
	EDGEBRIDGED=$(CURDIR)/$(BA)/edgebridged $(PYTHON) -m pytest -q \
		tests/integration

check: deps
	$(MAKE) unit
	$(MAKE) integration

# Real-kernel GPIO (gpio-sim) in a qemu VM, one boot: tests/gpio/README.md.
# Exit 77 = SKIPPED (could not be prepared), never a pass; GPIO_ALLOW_SKIP=1
# makes a skip exit 0 (the banner stays).
check-gpio: deps
	MAKE="$(MAKE)" tests/gpio/check.sh

demo: deps $(B)/edgebridged
	$(PYTHON) scripts/demo.py

bench: deps $(B)/edgebridged $(B)/bench/raw_pub $(B)/bench/bare_tls $(B)/bench/store_growth $(B)/tests/c8y_plugin.so
	rm -f $(B)/bench/throughput.json; rc=0; \
	$(PYTHON) bench/throughput.py --json $(B)/bench/throughput.json || rc=1; \
	$(PYTHON) bench/store_forward.py --throughput-json $(B)/bench/throughput.json || rc=1; \
	$(PYTHON) bench/bulk_drain.py --json $(B)/bench/bulk_drain.json || rc=1; \
	exit $$rc

# libFuzzer targets for the parsers (clang, libclang-rt-14-dev); FUZZ_SECONDS
# each.  Not part of `make check`: a fuzzer's findings are work, not a gate.
FUZZ_SECONDS ?= 60
FUZZ_SRC := common/util.c common/sample.c config/config.c \
	    $(filter drivers/%,$(LIB_SRC))

$(B)/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(FUZZ_SRC)
	@mkdir -p $(dir $@)
	$(echo_cmd) FUZZ $@
	$(Q)clang -g -O1 -std=gnu11 -D_GNU_SOURCE \
		-fsanitize=fuzzer,address,undefined $(CPPFLAGS) -o $@ $^ \
		$(shell pkg-config --libs inih libgpiod) -lm

fuzz: $(B)/fuzz/fuzz_config
	@mkdir -p $(B)/fuzz/corpus-config
	$(B)/fuzz/fuzz_config -max_total_time=$(FUZZ_SECONDS) \
		$(B)/fuzz/corpus-config tests/fuzz/corpus/config

check-style:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

install: $(B)/edgebridged $(B)/edgebridge $(B)/edgebridge
	install -D -m 0755 $(B)/edgebridged $(DESTDIR)$(SBINDIR)/edgebridged
	install -D -m 0755 $(B)/edgebridge $(DESTDIR)$(BINDIR)/edgebridge
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/edgebridge/conf.d

clean:
	rm -rf $(B) $(BA)

.PHONY: all deps unit integration check check-gpio demo bench fuzz check-style install \
	clean
.SECONDARY:

-include $(shell find $(B) $(BA) -name '*.d' -type f 2>/dev/null)
