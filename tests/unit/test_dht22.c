/* SPDX-License-Identifier: MIT */
/* DHT22/DHT11 frames decoded from edge-timestamp traces. */
#include "helpers.h"

#include "../../drivers/dht22.h"

#define US 1000ULL

struct trace {
	struct dht_edge e[128];
	size_t n;
	uint64_t t;
};

static void edge(struct trace *tr, int level, uint64_t after_us)
{
	tr->t += after_us * US;
	tr->e[tr->n++] = (struct dht_edge){ tr->t, level };
}

/* What the kernel stamps after we release the line: the answer's 80 us
 * low and 80 us high (when preamble), then 50 us low + 27/70 us high per
 * bit, a last 50 us low and the release to idle.  jitter (us) shifts
 * every other width the way a busy Pi's stamps wobble. */
static void synth(struct trace *tr, const uint8_t b[5], bool preamble,
		  int jitter)
{
	memset(tr, 0, sizeof(*tr));
	tr->t = 1000000 * US; /* an arbitrary monotonic time */
	if (preamble) {
		edge(tr, 1, 0);	 /* our release */
		edge(tr, 0, 30); /* the answer: 80 us low, 80 us high */
		edge(tr, 1, 80);
		edge(tr, 0, 80);
	} else {
		edge(tr, 0, 0);
	}
	for (int i = 0; i < 40; i++) {
		int bit = b[i / 8] >> (7 - i % 8) & 1;
		int j = (i % 2 ? jitter : -jitter);

		edge(tr, 1, (uint64_t)(50 - j));
		edge(tr, 0, (uint64_t)((bit ? 70 : 27) + j));
	}
	edge(tr, 1, 50); /* the release to idle */
}

static void frame(uint8_t b[5], uint8_t b0, uint8_t b1, uint8_t b2, uint8_t b3)
{
	b[0] = b0, b[1] = b1, b[2] = b2, b[3] = b3;
	b[4] = (uint8_t)(b0 + b1 + b2 + b3);
}

/* The frame b0..b3 (checksum added), synthesised and decoded. */
static int decode_frame(const uint8_t b4[4], bool preamble, int jitter,
			enum dht_model m, struct dht_reading *r,
			struct eb_err *err)
{
	struct trace tr;
	uint8_t b[5];

	frame(b, b4[0], b4[1], b4[2], b4[3]);
	synth(&tr, b, preamble, jitter);
	return dht_decode(tr.e, tr.n, m, r, err);
}

static const uint8_t datasheet[4] = { 0x02, 0x8c, 0x01, 0x5f };

static void test_dht22_good_frames(void **state)
{
	static const uint8_t minus[4] = { 0x01, 0xf4, 0x80, 0x65 };
	struct dht_reading r;
	struct eb_err err = { "" };

	(void)state;
	/* 65.2 %RH, 35.1 C (the datasheet's example) */
	assert_int_equal(
		decode_frame(datasheet, true, 0, DHT_MODEL_DHT22, &r, &err), 0);
	assert_true(r.humidity == 65.2);
	assert_true(r.temperature == 35.1);
	assert_memory_equal(r.bytes, datasheet, 4);
	/* below zero: the sign bit, -10.1 C; with timing jitter, and with
	 * the preamble missed (the request came late): the last 40 pulses */
	assert_int_equal(
		decode_frame(minus, false, 8, DHT_MODEL_DHT22, &r, &err), 0);
	assert_true(r.humidity == 50.0);
	assert_true(r.temperature == -10.1);
}

/* A trace written down the way gpiomon prints a DHT22's answer on a Pi
 * (uneven widths as a loaded system stamps them: 21-31 us zeros, 66-76 us
 * ones, 44-58 us lows), as offsets in us from our release.  Not from a
 * sensor on this machine: there is no GPIO chip here. */
static void test_dht22_recorded_style_trace(void **state)
{
	static const int us[] = {
		0, 24, 106, /* our release, the answer's low, its high */
	};
	/* 45.0 %RH, 22.5 C */
	static const uint8_t bytes[5] = { 0x01, 0xc2, 0x00, 0xe1, 0xa4 };
	static const int hi0[] = { 21, 26, 31, 24, 28, 22, 29, 25 };
	static const int hi1[] = { 66, 71, 76, 69, 73, 68, 75, 70 };
	static const int lo[] = { 44, 51, 58, 47, 55, 49, 53, 46, 57 };
	struct trace tr = { .t = 5000000 * US };
	struct dht_reading r;
	struct eb_err err = { "" };
	int k = 0;

	(void)state;
	for (size_t i = 0; i < EB_ARRAY_SIZE(us); i++)
		edge(&tr, i % 2 == 0, i ? (uint64_t)(us[i] - us[i - 1]) : 0);
	/* the answer's 80 us high ends the first bit's low start */
	edge(&tr, 0, 82);
	for (int i = 0; i < 40; i++, k++) {
		int bit = bytes[i / 8] >> (7 - i % 8) & 1;

		edge(&tr, 1, (uint64_t)lo[k % 9]);
		edge(&tr, 0, (uint64_t)(bit ? hi1[k % 8] : hi0[k % 8]));
	}
	edge(&tr, 1, 52);
	assert_int_equal(dht_decode(tr.e, tr.n, DHT_MODEL_DHT22, &r, &err), 0);
	assert_true(r.humidity == 45.0);
	assert_true(r.temperature == 22.5);
}

static void test_dht22_bad_checksum(void **state)
{
	struct trace tr;
	struct dht_reading r;
	struct eb_err err = { "" };
	uint8_t b[5];

	(void)state;
	frame(b, 0x02, 0x8c, 0x01, 0x5f);
	b[4] ^= 0x10;
	synth(&tr, b, true, 0);
	assert_int_equal(dht_decode(tr.e, tr.n, DHT_MODEL_DHT22, &r, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.msg, "bad checksum"));
}

static void test_dht22_missing_edges(void **state)
{
	struct trace tr, cut;
	struct dht_reading r;
	struct eb_err err = { "" };
	uint8_t b[5];

	(void)state;
	frame(b, 0x02, 0x8c, 0x01, 0x5f);
	synth(&tr, b, true, 0);
	/* no answer at all */
	assert_int_equal(dht_decode(tr.e, 0, DHT_MODEL_DHT22, &r, &err), -EIO);
	assert_non_null(strstr(err.msg, "0 of 40 bits"));
	/* the FIFO overflowed: the last 30 edges never came */
	assert_int_equal(dht_decode(tr.e, tr.n - 30, DHT_MODEL_DHT22, &r, &err),
			 -EIO);
	assert_non_null(strstr(err.msg, "of 40 bits"));
	/* one edge lost in the middle: two falling edges in a row */
	cut = tr;
	memmove(&cut.e[41], &cut.e[42], (cut.n - 42) * sizeof(cut.e[0]));
	cut.n--;
	assert_int_equal(dht_decode(cut.e, cut.n, DHT_MODEL_DHT22, &r, &err),
			 -EIO);
	assert_non_null(strstr(err.msg, "in a row"));
	/* a whole bit (its rising and falling edge) lost: still 40 pulses
	 * with the preamble, but a long low gives it away */
	cut = tr;
	memmove(&cut.e[42], &cut.e[44], (cut.n - 44) * sizeof(cut.e[0]));
	cut.n -= 2;
	assert_int_equal(dht_decode(cut.e, cut.n, DHT_MODEL_DHT22, &r, &err),
			 -EIO);
	assert_non_null(strstr(err.msg, "a low of"));
	/* a falling and the next rising lost: one high too long */
	cut = tr;
	memmove(&cut.e[41], &cut.e[43], (cut.n - 43) * sizeof(cut.e[0]));
	cut.n -= 2;
	assert_int_equal(dht_decode(cut.e, cut.n, DHT_MODEL_DHT22, &r, &err),
			 -EPROTO);
	/* a glitch: a 3 us pulse is no DHT bit */
	cut = tr;
	cut.e[40].ts_ns = cut.e[41].ts_ns - 3 * US;
	assert_int_equal(dht_decode(cut.e, cut.n, DHT_MODEL_DHT22, &r, &err),
			 -EPROTO);
}

static void test_dht11_vs_dht22_formats(void **state)
{
	static const uint8_t dht11[4] = { 45, 0, 23, 4 };
	static const uint8_t dht11_minus[4] = { 30, 0, 2, 0x85 };
	struct dht_reading r;
	struct eb_err err = { "" };

	(void)state;
	/* DHT11: integer and tenths bytes: 45.0 %RH, 23.4 C */
	assert_int_equal(
		decode_frame(dht11, true, 0, DHT_MODEL_DHT11, &r, &err), 0);
	assert_true(r.humidity == 45.0);
	assert_true(r.temperature == 23.4);
	/* the same frame read as a DHT22 is 1152 %RH: refused, with a hint */
	assert_int_equal(
		decode_frame(dht11, true, 0, DHT_MODEL_DHT22, &r, &err),
		-ERANGE);
	assert_non_null(strstr(err.msg, "another model?"));
	/* DHT11 below zero (newer parts): sign in bit 7 of the tenths */
	assert_int_equal(
		decode_frame(dht11_minus, true, 0, DHT_MODEL_DHT11, &r, &err),
		0);
	assert_true(r.temperature == -2.5);
	/* a DHT22 frame read as a DHT11 decodes to other numbers */
	assert_int_equal(
		decode_frame(datasheet, true, 0, DHT_MODEL_DHT11, &r, &err), 0);
	assert_true(r.humidity != 65.2 && r.temperature != 35.1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dht22_good_frames),
		cmocka_unit_test(test_dht22_recorded_style_trace),
		cmocka_unit_test(test_dht22_bad_checksum),
		cmocka_unit_test(test_dht22_missing_edges),
		cmocka_unit_test(test_dht11_vs_dht22_formats),
	};

	return cmocka_run_group_tests_name("dht22", tests, NULL, NULL);
}
