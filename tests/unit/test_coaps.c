/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include <errno.h>

#include "../../cloud/coaps.h"

static void test_publish_routes(void **state)
{
	static const struct {
		const char *topic, *path, *answer;
	} ok[] = {
		{ "v1/devices/me/telemetry", "/api/v1/telemetry", "" },
		{ "v1/devices/me/attributes", "/api/v1/attributes", "" },
		{ "v1/devices/me/rpc/response/17", "/api/v1/rpc/17", "" },
		{ "v1/devices/me/rpc/request/5", "/api/v1/rpc",
		  "v1/devices/me/rpc/response/5" },
		{ "s/us", "/s/us", "" },
		/* not an id: the generic rule */
		{ "v1/devices/me/rpc/response/x",
		  "/v1/devices/me/rpc/response/x", "" },
	};
	struct coaps_route r;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int n = coaps_route(ok[i].topic, "{}", 2, &r);

		assert_int_equal(n, (int)strlen(ok[i].path));
		assert_string_equal(r.path, ok[i].path);
		assert_string_equal(r.answer, ok[i].answer);
		assert_false(r.get);
	}
	assert_int_equal(coaps_route("", "", 0, &r), -EINVAL);
	assert_int_equal(coaps_route("a/+/b", "", 0, &r), -EINVAL);
	assert_int_equal(coaps_route("a//b", "", 0, &r), -EINVAL);
	assert_int_equal(coaps_route("/a", "", 0, &r), -EINVAL);
}

static void test_attribute_request_is_a_get(void **state)
{
	static const char req[] = "{\"sharedKeys\":\"sensor.a.interval,"
				  "sensor.b.interval\",\"clientKeys\":\"fw\"}";
	struct coaps_route r;
	char big[400], json[512];

	(void)state;
	assert_int_equal(coaps_route("v1/devices/me/attributes/request/3", req,
				     strlen(req), &r),
			 (int)strlen("/api/v1/attributes"));
	assert_true(r.get);
	assert_string_equal(r.path, "/api/v1/attributes");
	assert_string_equal(r.query, "sharedKeys=sensor.a.interval,"
				     "sensor.b.interval&clientKeys=fw");
	assert_string_equal(r.answer, "v1/devices/me/attributes/response/3");
	/* no keys: every attribute */
	assert_true(coaps_route("v1/devices/me/attributes/request/4", "{}", 2,
				&r) > 0);
	assert_string_equal(r.query, "");
	/* more than one Uri-Query option holds: every attribute */
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	snprintf(json, sizeof(json), "{\"sharedKeys\":\"%s\"}", big);
	assert_true(coaps_route("v1/devices/me/attributes/request/5", json,
				strlen(json), &r) > 0);
	assert_string_equal(r.query, "");
	/* not the request we make */
	assert_int_equal(coaps_route("v1/devices/me/attributes/request/6",
				     "{not json", 9, &r),
			 -EBADMSG);
	assert_int_equal(coaps_route("v1/devices/me/attributes/request/7",
				     "{\"sharedKeys\":1}", 15, &r),
			 -EBADMSG);
	assert_int_equal(coaps_route("v1/devices/me/attributes/request/8",
				     "{\"sharedKeys\":\"a&b\"}", 19, &r),
			 -EBADMSG);
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
		cmocka_unit_test(test_publish_routes),
		cmocka_unit_test(test_attribute_request_is_a_get),
		cmocka_unit_test(test_observe_paths),
		cmocka_unit_test(test_notify_topics),
		cmocka_unit_test(test_content_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
