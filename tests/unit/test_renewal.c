/* SPDX-License-Identifier: MIT */
/*
 * hsm/renewal: the files a certificate renewal leaves between the tool and
 * the daemon, and the commit that switches key and chain with one rename
 * of a drop-in that the ordinary configuration loader then reads.
 */
#include "helpers.h"

#include "../../config/config.h"
#include "../../drivers/driver.h"
#include "../../hsm/renewal.h"

#define NEW_KEY "pkcs11:token=edgebridge;object=device-20261122;type=private"
#define CHAIN "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

struct fx {
	char *dir, *state, *main;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->dir = t_mkdtemp();
	assert_true(asprintf(&f->state, "%s/state", f->dir) > 0);
	free(t_write(f->dir, "module.so", 0644, "x"));
	free(t_write(f->dir, "pin", 0600, "1234"));
	free(t_write(f->dir, "ca.pem", 0644, "x"));
	free(t_write(f->dir, "chain.pem", 0644, "x"));
	f->main = t_write(f->dir, "edgebridge.conf", 0644,
			  "[gateway]\nid = gw-0001\nstate_dir = %s\n"
			  "[hsm]\nmodule = %s/module.so\n"
			  "key = pkcs11:token=edgebridge;object=device\n"
			  "pin_file = %s/pin\n"
			  "[cloud]\nhost = example.com\nca_file = %s/ca.pem\n"
			  "cert_file = %s/chain.pem\n",
			  f->state, f->dir, f->dir, f->dir, f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	t_rm_rf(f->dir);
	free(f->dir);
	free(f->state);
	free(f->main);
	free(f);
	return 0;
}

static void put_chain(struct fx *f)
{
	char path[4200];
	FILE *o;

	assert_int_equal(renewal_chain_path(f->state, path, sizeof(path)), 0);
	o = fopen(path, "w");
	assert_non_null(o);
	fputs(CHAIN, o);
	fclose(o);
}

static void test_nothing_pending(void **state)
{
	struct fx *f = *state;
	struct renewal r;

	assert_int_equal(renewal_read(f->state, &r), -ENOENT);
	assert_int_equal(renewal_cancel(f->state), 0);
}

static void test_start_then_chain_then_failure(void **state)
{
	struct fx *f = *state;
	struct renewal r;

	assert_int_equal(renewal_start(f->state, "/etc/key.pem"), -EINVAL);
	assert_int_equal(renewal_start(f->state, NEW_KEY "\nx"), -EINVAL);
	assert_int_equal(renewal_start(f->state, NEW_KEY), 0);
	assert_int_equal(renewal_read(f->state, &r), 0);
	assert_string_equal(r.key_uri, NEW_KEY);
	assert_false(r.has_chain);
	assert_string_equal(r.failed, "");

	put_chain(f);
	assert_int_equal(renewal_read(f->state, &r), 0);
	assert_true(r.has_chain);

	assert_int_equal(renewal_set_failed(f->state, "alert unknown ca"), 0);
	assert_int_equal(renewal_read(f->state, &r), 0);
	assert_string_equal(r.failed, "alert unknown ca");
	assert_int_equal(renewal_set_failed(f->state, NULL), 0);
	assert_int_equal(renewal_read(f->state, &r), 0);
	assert_string_equal(r.failed, "");

	/* a new renewal replaces the old one, chain and all */
	assert_int_equal(renewal_start(f->state, NEW_KEY "-2"), 0);
	assert_int_equal(renewal_read(f->state, &r), 0);
	assert_string_equal(r.key_uri, NEW_KEY "-2");
	assert_false(r.has_chain);
	assert_int_equal(renewal_cancel(f->state), 0);
	assert_int_equal(renewal_read(f->state, &r), -ENOENT);
}

static void test_commit_is_read_back_by_the_config_loader(void **state)
{
	struct fx *f = *state;
	struct eb_diags d = { 0 };
	struct eb_config *c;
	struct renewal r;
	char cert[4400], buf[256] = "";
	FILE *in;

	assert_int_equal(renewal_start(f->state, NEW_KEY), 0);
	assert_int_equal(renewal_read(f->state, &r), 0);
	/* no chain yet: nothing to commit */
	assert_int_equal(
		renewal_commit(f->main, f->state, &r, cert, sizeof(cert)),
		-EINVAL);
	put_chain(f);
	assert_int_equal(renewal_read(f->state, &r), 0);
	assert_int_equal(
		renewal_commit(f->main, f->state, &r, cert, sizeof(cert)), 0);
	assert_non_null(strstr(cert, "/state/certs/device-"));
	in = fopen(cert, "r");
	assert_non_null(in);
	assert_int_equal(fread(buf, 1, sizeof(buf) - 1, in), strlen(CHAIN));
	fclose(in);
	assert_string_equal(buf, CHAIN);
	/* the renewal is done */
	assert_int_equal(renewal_read(f->state, &r), -ENOENT);

	c = config_load(f->main, driver_check_config, &d);
	for (size_t i = 0; i < d.n; i++)
		fprintf(stderr, "%s\n", d.msg[i]);
	assert_non_null(c);
	assert_int_equal(d.n, 0);
	assert_string_equal(c->hsm.key, NEW_KEY);
	assert_string_equal(c->cloud.cert_file, cert);
	config_free(c);
	diags_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_nothing_pending, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_start_then_chain_then_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_commit_is_read_back_by_the_config_loader, setup,
			teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
