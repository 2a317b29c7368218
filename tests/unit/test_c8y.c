/* SPDX-License-Identifier: MIT */
/* The pure parsers of cloud/: JWT claims, "71,<jwt>" lines, SmartREST
 * downstream lines. */
#include "helpers.h"

#include "../../cloud/c8y.h"
#include "../../cloud/jwt.h"

/* {"alg":"HS256","typ":"JWT"} . {"sub":"device_gw-0001","iat":1700000000,
 * "exp":1700003600} . (signature bytes are not checked by the device) */
#define HDR "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
#define PAYLOAD                                                                \
	"eyJzdWIiOiJkZXZpY2VfZ3ctMDAwMSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAw" \
	"MDAzNjAwfQ"
#define TOKEN HDR "." PAYLOAD ".c2lnbmF0dXJl"

static void test_jwt_claims(void **state)
{
	struct jwt_claims c;
	char why[128];

	(void)state;
	assert_int_equal(jwt_parse(TOKEN, strlen(TOKEN), &c, why, sizeof(why)),
			 0);
	assert_int_equal(c.iat, 1700000000);
	assert_int_equal(c.exp, 1700003600);
	assert_string_equal(c.sub, "device_gw-0001");
}

static void test_jwt_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"abc",
		"a.b",
		HDR "." PAYLOAD, /* two parts */
		HDR ".."
		    "c2ln",			     /* empty payload */
		HDR "." PAYLOAD ".sig.more",	     /* four parts */
		HDR ".e30.c2ln",		     /* {} : no exp */
		HDR ".bm90IGpzb24.c2ln",	     /* "not json" */
		HDR ".eyJleHAiOiJzb29uIn0.c2ln",     /* exp a string */
		HDR "." PAYLOAD "=.c2ln",	     /* padding char */
		HDR ".eyJleHAiOjEsImlhdCI6Mn0.c2ln", /* exp before iat */
	};
	struct jwt_claims c;
	char why[128];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		assert_int_equal(
			jwt_parse(bad[i], strlen(bad[i]), &c, why, sizeof(why)),
			-EINVAL);
		assert_true(why[0]);
		/* the reason never quotes the token */
		assert_null(strstr(why, "eyJ"));
	}
}

static void test_token_line(void **state)
{
	const char *tok;
	size_t len;
	char why[128];
	static const char ok[] = "71," TOKEN "\n";

	(void)state;
	assert_int_equal(c8y_parse_token_line(ok, strlen(ok), &tok, &len, why,
					      sizeof(why)),
			 0);
	assert_int_equal(len, strlen(TOKEN));
	assert_memory_equal(tok, TOKEN, len);
	assert_int_equal(
		c8y_parse_token_line("70,abc", 6, &tok, &len, why, sizeof(why)),
		-EINVAL);
	assert_int_equal(
		c8y_parse_token_line("71,", 3, &tok, &len, why, sizeof(why)),
		-EINVAL);
	assert_int_equal(
		c8y_parse_token_line("71,a,b", 6, &tok, &len, why, sizeof(why)),
		-EINVAL);
}

static void test_split_line(void **state)
{
	char buf[256], *f[8];
	const char *l1 = "513,gw-0001,\"[gateway]\nlog_level = \"\"debug\"\"\"";
	const char *l2 = "510,gw-0001";
	const char *l3 = "518,gw-0001,CLOSED\r";

	(void)state;
	assert_int_equal(c8y_split_line(l1, strlen(l1), buf, f, 8), 3);
	assert_string_equal(f[0], "513");
	assert_string_equal(f[2], "[gateway]\nlog_level = \"debug\"");
	assert_int_equal(c8y_split_line(l2, strlen(l2), buf, f, 8), 2);
	assert_string_equal(f[1], "gw-0001");
	assert_int_equal(c8y_split_line(l3, strlen(l3), buf, f, 8), 3);
	assert_string_equal(f[2], "CLOSED");
	assert_int_equal(c8y_split_line("a,,b", 4, buf, f, 8), 3);
	assert_string_equal(f[1], "");
	/* malformed: unterminated quote, text after a quote, stray quote,
	 * too many fields */
	assert_int_equal(c8y_split_line("1,\"ab", 5, buf, f, 8), -EINVAL);
	assert_int_equal(c8y_split_line("1,\"a\"b", 6, buf, f, 8), -EINVAL);
	assert_int_equal(c8y_split_line("1,a\"b", 5, buf, f, 8), -EINVAL);
	assert_int_equal(c8y_split_line("1,2,3", 5, buf, f, 2), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jwt_claims),
		cmocka_unit_test(test_jwt_rejects),
		cmocka_unit_test(test_token_line),
		cmocka_unit_test(test_split_line),
	};

	return cmocka_run_group_tests_name("c8y", tests, NULL, NULL);
}
