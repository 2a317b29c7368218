/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include <errno.h>

#include "../../cloud/coaps.h"

static void test_publish_paths(void **state)
{
	static const struct {
		const char *topic, *path;
		long rpc;
	} ok[] = {
		{ "v1/devices/me/telemetry", "/api/v1/telemetry", -1 },
		{ "v1/devices/me/attributes", "/api/v1/attributes", -1 },
		{ "v1/devices/me/rpc/response/17", "/api/v1/rpc/17", -1 },
		{ "v1/devices/me/rpc/request/5", "/api/v1/rpc", 5 },
		{ "s/us", "/s/us", -1 },
		/* not an id: the generic rule */
		{ "v1/devices/me/rpc/response/x",
		  "/v1/devices/me/rpc/response/x", -1 },
	};
	char path[64];
	long rpc;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int n = coaps_publish_path(ok[i].topic, path, sizeof(path),
					   &rpc);

		assert_int_equal(n, (int)strlen(ok[i].path));
		assert_string_equal(path, ok[i].path);
		assert_int_equal(rpc, ok[i].rpc);
	}
	assert_int_equal(coaps_publish_path("", path, sizeof(path), &rpc),
			 -EINVAL);
	assert_int_equal(coaps_publish_path("a/+/b", path, sizeof(path), &rpc),
			 -EINVAL);
	assert_int_equal(coaps_publish_path("a//b", path, sizeof(path), &rpc),
			 -EINVAL);
	assert_int_equal(coaps_publish_path("/a", path, sizeof(path), &rpc),
			 -EINVAL);
	assert_int_equal(
		coaps_publish_path("v1/devices/me/telemetry", path, 8, &rpc),
		-ENAMETOOLONG);
}

static void test_observe_paths(void **state)
{
	char path[64];

	(void)state;
	assert_int_equal(coaps_observe_path("v1/devices/me/attributes", path,
					    sizeof(path)),
			 18);
	assert_string_equal(path, "/api/v1/attributes");
	coaps_observe_path("v1/devices/me/rpc/request/+", path, sizeof(path));
	assert_string_equal(path, "/api/v1/rpc");
	/* answers come with their requests: nothing to observe */
	assert_int_equal(
		coaps_observe_path("v1/devices/me/attributes/response/+", path,
				   sizeof(path)),
		0);
	assert_string_equal(path, "");
	coaps_observe_path("s/ds", path, sizeof(path));
	assert_string_equal(path, "/s/ds");
	assert_int_equal(coaps_observe_path("s/#", path, sizeof(path)),
			 -EINVAL);
}

static void test_notify_topics(void **state)
{
	static const char rpc[] = "{\"id\":42,\"method\":\"reboot\"}";
	char topic[64];

	(void)state;
	assert_int_equal(coaps_notify_topic("v1/devices/me/rpc/request/+", rpc,
					    sizeof(rpc) - 1, topic,
					    sizeof(topic)),
			 (int)strlen("v1/devices/me/rpc/request/42"));
	assert_string_equal(topic, "v1/devices/me/rpc/request/42");
	assert_int_equal(coaps_notify_topic("v1/devices/me/rpc/request/+",
					    "{\"method\":\"x\"}", 14, topic,
					    sizeof(topic)),
			 -EBADMSG);
	assert_int_equal(coaps_notify_topic("v1/devices/me/rpc/request/+",
					    "not json", 8, topic,
					    sizeof(topic)),
			 -EBADMSG);
	coaps_notify_topic("v1/devices/me/attributes", "{}", 2, topic,
			   sizeof(topic));
	assert_string_equal(topic, "v1/devices/me/attributes");
}

static void test_content_format(void **state)
{
	(void)state;
	assert_true(coaps_is_json(" {\"ts\":1}", 9));
	assert_true(coaps_is_json("[1]", 3));
	assert_false(coaps_is_json("200,c8y_T,T,1", 13));
	assert_false(coaps_is_json("", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_publish_paths),
		cmocka_unit_test(test_observe_paths),
		cmocka_unit_test(test_notify_topics),
		cmocka_unit_test(test_content_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
