# edgebridge — plain GNU make, pkg-config for every library.
#
#   make            build/edgebridged
#   make check      unit tests (cmocka) + integration tests (real parts),
#                   all under ASan+UBSan; installs missing packages as root
#   make demo       token, PKI, broker and the daemon with simulated sensors
#   make bench      throughput and RSS figures (ratios to a baseline)
#   make install    DESTDIR=... PREFIX=/usr
#   make deb        build/deb/edgebridge_<version>_<arch>.deb (ARCH=arm64,
#                   armhf cross-build); make check-deb, make check-cross

VERSION   ?= 0.1.0
PREFIX    ?= /usr/local
SBINDIR   ?= $(PREFIX)/sbin
BINDIR    ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DESTDIR   ?=
MANDIR    ?= $(PREFIX)/share/man
# The systemd unit's place on Debian bookworm (not below PREFIX).
UNITDIR   ?= /lib/systemd/system
PYTHON    ?= /usr/bin/python3
PKG_CONFIG ?= pkg-config

PKGS      := libmosquitto openssl inih sqlite3 libcurl jansson libgpiod \
	     libcoap-3-openssl
CC        ?= gcc
CFLAGS    ?= -O2 -g
WERROR    ?= -Werror
CFLAGS    += -std=gnu11 -Wall -Wextra $(WERROR) -Wshadow -Wformat=2 \
	     -Wno-format-nonliteral -D_GNU_SOURCE -DEB_VERSION='"$(VERSION)"'
CPPFLAGS  += $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
LDLIBS    += $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lm

SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	     -fno-sanitize-recover=undefined

# The modules, shared by the daemon, the tool and the tests.
LIB_SRC := common/util.c common/sample.c \
	   config/config.c \
	   daemon/loop.c \
	   hsm/hsm.c hsm/certcheck.c hsm/p11.c hsm/renewal.c hsm/hsm_coap.c \
	   drivers/registry.c drivers/sim.c drivers/hwmon.c drivers/w1therm.c \
	   drivers/iio.c drivers/gpio_common.c drivers/gpio_line.c \
	   drivers/gpio_input.c drivers/gpio_output.c drivers/dht22.c \
	   drivers/gpio_counter.c \
	   store/memq.c store/store.c \
	   cloud/backoff.c cloud/pack.c cloud/cumulocity.c cloud/mqtt.c cloud/cloud.c \
	   cloud/coaps.c \
	   cloud/jwt.c cloud/https.c cloud/c8y_token.c cloud/c8y_bulk.c \
	   cloud/c8y_ops.c cloud/thingsboard.c cloud/tb_device.c
DAEMON_SRC := daemon/main.c daemon/log.c daemon/sdnotify.c daemon/sensors.c \
	      daemon/renew.c
TOOL_SRC   := $(sort $(wildcard tools/*.c))

UNIT_TESTS := test_config test_smartrest test_backoff test_memq test_loop \
	      test_drivers test_gpio test_dht22 \
	      test_pack test_store test_certcheck test_c8y test_renewal \
	      test_tb test_coaps

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
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/edgebridge: $(call objs,$(B),$(TOOL_SRC) $(LIB_SRC))
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BA)/edgebridge: $(call objs,$(BA),$(TOOL_SRC) $(LIB_SRC))
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BA)/edgebridged: $(call objs,$(BA),$(DAEMON_SRC) $(LIB_SRC))
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests link the modules plus daemon/log.c (sensors use it).
$(BA)/tests/%: $(BA)/obj/tests/unit/%.o $(call objs,$(BA),$(LIB_SRC) daemon/log.c daemon/sdnotify.c)
	@mkdir -p $(dir $@)
	$(echo_cmd) LD $@
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

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

# coap_client uses the daemon's identity code (hsm/) as it is.
$(B)/bench/coap_client: bench/coap_client.c hsm/hsm.c hsm/hsm_coap.c \
			common/util.c hsm/hsm.h hsm/hsm_coap.h common/util.h
	@mkdir -p $(dir $@)
	$(echo_cmd) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(filter %.c,$^) $(LDLIBS)

deps:
	@scripts/install-deps

# TEST_RUNNER runs each test binary (qemu-user for a cross build).
TEST_RUNNER ?=
unit: $(addprefix $(BA)/tests/,$(UNIT_TESTS))
	@set -e; for t in $^; do echo "== $$t"; $(TEST_RUNNER) $$t; done

# The same tests built as the package is (no sanitizers; the build flags
# from the environment): debian/rules runs them, natively or under qemu.
unit-plain:
	$(MAKE) unit BA=build-plain SAN_FLAGS=

integration: $(BA)/edgebridged $(BA)/edgebridge $(TEST_CLOUD)
	ASAN_OPTIONS=detect_leaks=0 EDGEBRIDGE=$(CURDIR)/$(BA)/edgebridge \
	EDGEBRIDGED=$(CURDIR)/$(BA)/edgebridged $(PYTHON) -m pytest -q \
		tests/integration

# check-deb (the .deb built, lintian, unpacked and checked, about a minute)
# is part of it; check-cross (arm64/armhf) is not: see check-cross.
check: deps
	$(MAKE) unit
	$(MAKE) integration
	GPIO_ALLOW_SKIP=1 $(MAKE) check-gpio
	$(MAKE) check-deb
	CROSS_ALLOW_SKIP=1 $(MAKE) check-cross

# Real-kernel GPIO (gpio-sim) in a qemu VM, one boot: tests/gpio/README.md.
# Exit 77 = SKIPPED (could not be prepared), never a pass; GPIO_ALLOW_SKIP=1
# makes a skip exit 0 (the banner stays).
check-gpio: deps
	MAKE="$(MAKE)" tests/gpio/check.sh

demo: deps $(B)/edgebridged
	$(PYTHON) scripts/demo.py

bench: deps $(B)/edgebridged $(B)/bench/raw_pub $(B)/bench/bare_tls $(B)/bench/store_growth \
       $(B)/tests/c8y_plugin.so $(B)/tests/tb_plugin.so \
       $(B)/bench/coap_client $(B)/tests/tb_coap_server
	rm -f $(B)/bench/throughput.json; rc=0; \
	$(PYTHON) bench/throughput.py --json $(B)/bench/throughput.json || rc=1; \
	$(PYTHON) bench/store_forward.py --throughput-json $(B)/bench/throughput.json || rc=1; \
	$(PYTHON) bench/bulk_drain.py --json $(B)/bench/bulk_drain.json || rc=1; \
	$(PYTHON) bench/tb_throughput.py || rc=1; \
	$(PYTHON) bench/coap_throughput.py || rc=1; \
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

install: $(B)/edgebridged $(B)/edgebridge
	install -D -m 0755 $(B)/edgebridged $(DESTDIR)$(SBINDIR)/edgebridged
	install -D -m 0755 $(B)/edgebridge $(DESTDIR)$(BINDIR)/edgebridge
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/edgebridge/conf.d
	test -e $(DESTDIR)$(SYSCONFDIR)/edgebridge/edgebridge.conf || \
	install -m 0644 packaging/edgebridge.conf $(DESTDIR)$(SYSCONFDIR)/edgebridge/
	install -D -m 0644 packaging/edgebridge.service $(DESTDIR)$(UNITDIR)/edgebridge.service
	install -D -m 0644 packaging/man/edgebridge.1 $(DESTDIR)$(MANDIR)/man1/edgebridge.1
	install -D -m 0644 packaging/man/edgebridge.conf.5 $(DESTDIR)$(MANDIR)/man5/edgebridge.conf.5
	install -D -m 0644 packaging/man/edgebridged.8 $(DESTDIR)$(MANDIR)/man8/edgebridged.8

# ---- the Debian package ------------------------------------------------------
# packaging/debian is the debian/ directory of a build tree assembled from the
# files git knows (committed or not, never the ignored ones) under
# build/deb/edgebridge-VERSION; the .deb and .buildinfo land in build/deb/.
# ARCH=arm64 or armhf cross-builds (scripts/install-deps cross ARCH).
ARCH      ?= $(shell dpkg --print-architecture 2>/dev/null)
DEB_DIR   := $(B)/deb
DEB_TREE  := $(DEB_DIR)/edgebridge-$(VERSION)
DEB_CROSS := $(filter-out $(shell dpkg --print-architecture 2>/dev/null),$(ARCH))
DEB       := $(DEB_DIR)/edgebridge_$(VERSION)_$(ARCH).deb

deb-version:
	@v=$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version); \
	[ "$$v" = "$(VERSION)" ] || { echo "packaging/debian/changelog says" \
		"$$v, the Makefile VERSION $(VERSION): make them agree" >&2; \
		exit 1; }

deb: deb-version
	rm -rf $(DEB_TREE) && mkdir -p $(DEB_TREE)
	git ls-files -z --cached --others --exclude-standard | \
		tar --null -T - --ignore-failed-read -cf - 2>/dev/null | \
		tar -C $(DEB_TREE) -xf -
	cp -a packaging/debian $(DEB_TREE)/debian
	cd $(DEB_TREE) && dpkg-buildpackage -us -uc -b \
		$(if $(DEB_CROSS),-a$(ARCH) -Pcross) $(DEB_BUILD_FLAGS)
	@echo "built $(DEB)"

deb-deps:
	@scripts/install-deps deb

# The amd64 package: lintian, then installed into a throwaway root and
# checked, and the daemon started from the shipped configuration
# (tests/packaging/check-deb). The unit tests ran in `make unit` already.
check-deb: deb-deps
	$(MAKE) deb DEB_BUILD_OPTIONS=nocheck
	tests/packaging/check-deb $(DEB)

# Cross-builds for the Pi; the unit tests of each run under qemu-user.
CROSS_ARCHS ?= arm64 armhf
check-cross:
	@rc=0; for a in $(CROSS_ARCHS); do \
		if ! scripts/install-deps cross $$a; then \
			echo "## CROSS STAGE SKIPPED for $$a: its -dev packages could not be installed (see above); nothing was built or tested for $$a"; \
			[ "$(CROSS_ALLOW_SKIP)" = 1 ] || rc=77; \
			continue; \
		fi; \
		$(MAKE) deb ARCH=$$a && \
		dpkg-deb --info $(DEB_DIR)/edgebridge_$(VERSION)_$$a.deb | \
			grep -q "Architecture: $$a" || rc=1; \
	done; exit $$rc

clean:
	rm -rf $(B) $(BA) build-plain

.PHONY: all deps unit unit-plain integration check check-gpio demo bench fuzz \
	check-style install deb deb-version deb-deps check-deb check-cross clean
.SECONDARY:

-include $(shell find $(B) $(BA) -name '*.d' -type f 2>/dev/null)
