# Build rules for the test clouds under tests/cloud (included by Makefile).
# TEST_CLOUD lists what `make integration` needs built.
TEST_CLOUD :=

# Cumulocity MQTT endpoint emulator: a mosquitto 2.0 plugin (API v5) loaded
# by tests/harness/c8y.py (C8yCloud).  Headers from mosquitto-dev.
$(B)/tests/c8y_plugin.so: tests/cloud/c8y_plugin.c tests/cloud/cloud.mk
	@mkdir -p $(dir $@)
	$(echo_cmd) CC-SO $@
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -shared -fPIC -o $@ $< \
		-lcrypto -ljansson

TEST_CLOUD += $(B)/tests/c8y_plugin.so

# ThingsBoard MQTT device API emulator: loaded by tests/harness/tb.py
# (TbCloud).  Same build as the Cumulocity one.
$(B)/tests/tb_plugin.so: tests/cloud/tb_plugin.c tests/cloud/tb_json.h tests/cloud/cloud.mk
	@mkdir -p $(dir $@)
	$(echo_cmd) CC-SO $@
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -shared -fPIC -o $@ $< \
		-lcrypto -ljansson

TEST_CLOUD += $(B)/tests/tb_plugin.so

# ThingsBoard CoAP device endpoint (DTLS, client certificates): a small
# server on libcoap 4.3 (libcoap3-dev), run by tests/harness/tbcoap.py.
$(B)/tests/tb_coap_server: tests/cloud/tb_coap_server.c tests/cloud/tb_json.h tests/cloud/cloud.mk
	@mkdir -p $(dir $@)
	$(echo_cmd) CC $@
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< \
		$(shell $(PKG_CONFIG) --libs libcoap-3-openssl) -lssl -lcrypto \
		-ljansson

TEST_CLOUD += $(B)/tests/tb_coap_server
